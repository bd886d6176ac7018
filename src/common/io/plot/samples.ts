// samples.png: what the network actually sees after augmentation, as in the
// seed's sample grid. Shared by the single-process trainer and the coordinator.
// An image grid, not a chart: drawn directly with @napi-rs/canvas, each image
// scaled up by the canvas with smoothing off (nearest neighbour).
import path from 'node:path';
import { globalBatches } from '../../data/sampler.js';
import { makeBatch, NORMALIZE } from '../../data/augment.js';
import type { Dataset } from '../../data/types.js';
import { createCanvas, type Canvas } from '@napi-rs/canvas';
import { blankCanvas, plotFont, writePng } from './render.js';

export interface SampleImage {
  /** Height x width x channels bytes. */
  pixels: Uint8Array;
  height: number;
  width: number;
  /** 1 (grey) or 3 (RGB). */
  channels: number;
  label: string;
}

/** Pixel layout of the sample grid: images are scaled up with nearest-neighbour sampling. */
export const SAMPLE_GRID_LAYOUT = Object.freeze({ columns: 4, scale: 4, padding: 6, titleHeight: 18 });

export function renderSamples(images: SampleImage[]): Canvas {
  if (images.length === 0) throw new Error('cannot plot samples: no images given');
  images.forEach((img, i) => {
    if (img.channels !== 1 && img.channels !== 3) throw new Error(`sample ${i}: channels must be 1 or 3, got ${img.channels}`);
    if (img.pixels.length !== img.height * img.width * img.channels) {
      throw new Error(`sample ${i}: ${img.pixels.length} bytes do not match ${img.height}x${img.width}x${img.channels}`);
    }
  });
  const { columns, scale, padding, titleHeight } = SAMPLE_GRID_LAYOUT;
  const cellWidth = Math.max(...images.map((im) => im.width)) * scale + 2 * padding;
  const cellHeight = Math.max(...images.map((im) => im.height)) * scale + titleHeight + 2 * padding;
  const rows = Math.ceil(images.length / columns);
  const { canvas, ctx } = blankCanvas(Math.min(columns, images.length) * cellWidth, rows * cellHeight);
  ctx.font = plotFont(12);
  ctx.fillStyle = '#000000';
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  // Smoothing would blur 32x32 images into mush.
  ctx.imageSmoothingEnabled = false;
  images.forEach((img, i) => {
    const x = (i % columns) * cellWidth;
    const y = Math.floor(i / columns) * cellHeight;
    ctx.fillText(img.label, x + cellWidth / 2, y + padding + titleHeight / 2);
    ctx.drawImage(imageCanvas(img), x + padding, y + padding + titleHeight, img.width * scale, img.height * scale);
  });
  return canvas;
}

/** The image at its own size, grey expanded to RGB. */
function imageCanvas(img: SampleImage): Canvas {
  const canvas = createCanvas(img.width, img.height);
  const ctx = canvas.getContext('2d');
  const data = ctx.createImageData(img.width, img.height);
  for (let p = 0; p < img.width * img.height; p++) {
    for (let c = 0; c < 3; c++) data.data[p * 4 + c] = img.pixels[p * img.channels + (img.channels === 3 ? c : 0)];
    data.data[p * 4 + 3] = 255;
  }
  ctx.putImageData(data, 0, 0);
  return canvas;
}

/** A grid (4 per row, so 2x4 for 8) of scaled-up images titled with their class names. */
export async function writeSamplesPng(file: string, images: SampleImage[]): Promise<void> {
  await writePng(file, renderSamples(images));
}

/** samples.png: 8 augmented training images of the first epoch, with their class names. */
export async function writeSamples(cfg: { seed: number; out: string }, data: Dataset): Promise<void> {
  const set = data.train;
  const indices = globalBatches(set.count, 8, cfg.seed, 0, { shuffle: true })[0];
  const { x, y } = makeBatch(set, indices, { augment: true, seed: cfg.seed, epoch: 0, ...NORMALIZE });
  const pixelsPer = set.height * set.width * set.channels;
  const images = Array.from(indices, (_, i) => {
    // Undo the normalisation (x * 0.5 + 0.5), as the seed's plot does.
    const pixels = new Uint8Array(pixelsPer);
    for (let k = 0; k < pixelsPer; k++) pixels[k] = Math.round(Math.min(1, Math.max(0, x[i * pixelsPer + k] * 0.5 + 0.5)) * 255);
    return { pixels, height: set.height, width: set.width, channels: set.channels, label: data.classes[y[i]] };
  });
  await writeSamplesPng(path.join(cfg.out, 'samples.png'), images);
}
