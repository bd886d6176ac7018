// Decodes PNG and JPEG files into RGBA pixels for `tfjs-ddp predict`. The
// format is chosen by the file's signature, not its name, so a mislabelled
// file still decodes and anything else gets an error that says what it is.
import fs from 'node:fs';
import { PNG } from 'pngjs';
import jpeg from 'jpeg-js';

export interface RgbaImage {
  width: number;
  height: number;
  /** width * height * 4 bytes, row-major RGBA. */
  rgba: Uint8Array;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const JPEG_SIGNATURE = [0xff, 0xd8, 0xff];
/** Far above any sensible classifier input, low enough to refuse decompression bombs. */
const MAX_MEGAPIXELS = 100;

const startsWith = (bytes: Uint8Array, sig: number[]) => sig.every((b, i) => bytes[i] === b);

export function decodeImage(bytes: Uint8Array, source: string): RgbaImage {
  const fail = (why: string): never => {
    throw new Error(`cannot read image ${source}: ${why}`);
  };
  if (startsWith(bytes, PNG_SIGNATURE)) {
    let png: PNG;
    try {
      png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    } catch (err) {
      return fail(`corrupt PNG (${(err as Error).message}); re-save it with an image editor`);
    }
    return { width: png.width, height: png.height, rgba: new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.byteLength) };
  }
  if (startsWith(bytes, JPEG_SIGNATURE)) {
    try {
      const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true, maxResolutionInMP: MAX_MEGAPIXELS });
      return { width: img.width, height: img.height, rgba: img.data };
    } catch (err) {
      return fail(`corrupt or unsupported JPEG (${(err as Error).message}); re-save it as a baseline JPEG or PNG`);
    }
  }
  const head = [...bytes.subarray(0, 4)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  return fail(`not a PNG or JPEG file (it starts with bytes ${head || '(empty file)'}); convert it to PNG or JPEG`);
}

export function readImageFile(file: string): RgbaImage {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`cannot read image ${file}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}; check the path`);
  }
  return decodeImage(bytes, file);
}
