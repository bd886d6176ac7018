// Turns an arbitrary decoded picture into the bytes a model was trained on:
// the right channel count, the right size (with Fashion-MNIST's zero frame),
// as an ImageSet, so augment.ts's makeBatch normalises it exactly as training did.
import type { DatasetInfo } from '../data/dataset-info.js';
import type { ImageSet } from '../data/types.js';
import type { RgbaImage } from './read-image.js';

/** ITU-R 601-2 luma, what PIL's convert('L') uses (and so torchvision's Grayscale). */
function toChannels(img: RgbaImage, channels: number): Float32Array {
  const n = img.width * img.height;
  const out = new Float32Array(n * channels);
  for (let i = 0; i < n; i++) {
    const [r, g, b] = [img.rgba[4 * i], img.rgba[4 * i + 1], img.rgba[4 * i + 2]];
    if (channels === 1) out[i] = 0.299 * r + 0.587 * g + 0.114 * b;
    else for (let c = 0; c < channels; c++) out[i * channels + c] = img.rgba[4 * i + Math.min(c, 2)];
  }
  return out;
}

/**
 * Separable resampling with a triangle filter widened by the scale factor when
 * shrinking (PIL's bilinear), so a photo shrunk to 32x32 is averaged, not
 * aliased; when enlarging it is plain bilinear with half-pixel centres.
 */
export function resizeBilinear(src: Float32Array, width: number, height: number, channels: number, outW: number, outH: number): Float32Array {
  const pass = (data: Float32Array, len: number, outLen: number, stride: number, lines: number, lineStride: number, outLineStride: number, outStride: number) => {
    const scale = len / outLen;
    const support = Math.max(scale, 1);
    const out = new Float32Array(lines * outLen * channels);
    for (let o = 0; o < outLen; o++) {
      const centre = (o + 0.5) * scale;
      const lo = Math.max(0, Math.floor(centre - support));
      const hi = Math.min(len - 1, Math.ceil(centre + support));
      const weights: number[] = [];
      let sum = 0;
      for (let i = lo; i <= hi; i++) {
        const w = Math.max(0, 1 - Math.abs((i + 0.5 - centre) / support));
        weights.push(w);
        sum += w;
      }
      for (let line = 0; line < lines; line++) {
        for (let c = 0; c < channels; c++) {
          let acc = 0;
          for (let i = lo; i <= hi; i++) acc += weights[i - lo] * data[line * lineStride + i * stride + c];
          out[line * outLineStride + o * outStride + c] = acc / sum;
        }
      }
    }
    return out;
  };
  // Horizontal, then vertical: rows of the intermediate are outW wide.
  const h = width === outW ? src : pass(src, width, outW, channels, height, width * channels, outW * channels, channels);
  return height === outH ? h : pass(h, height, outH, outW * channels, outW, channels, channels, outW * channels);
}

/**
 * One image as a one-image ImageSet in the model's input format. An image
 * already the size of the model input is taken as is (e.g. a 32x32
 * Fashion-MNIST sample with its frame); anything else is scaled to the
 * dataset's content size and centred in a zero frame.
 */
export function toModelInput(img: RgbaImage, info: DatasetInfo): ImageSet {
  const { height, width, channels, content } = info;
  let pixels = toChannels(img, channels);
  let [w, h] = [img.width, img.height];
  if (w !== width || h !== height) {
    pixels = resizeBilinear(pixels, w, h, channels, content.width, content.height);
    [w, h] = [content.width, content.height];
  }
  const images = new Uint8Array(height * width * channels);
  const top = (height - h) >> 1;
  const left = (width - w) >> 1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w * channels; x++) {
      const v = Math.round(pixels[y * w * channels + x]);
      images[(y + top) * width * channels + left * channels + x] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return { images, labels: new Uint8Array(1), count: 1, height, width, channels };
}
