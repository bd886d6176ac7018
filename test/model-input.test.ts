// How predict turns any picture into the model's input: channel conversion,
// resizing, and Fashion-MNIST's 28-in-32 zero frame.
import { describe, expect, test } from 'vitest';
import { datasetInfo } from '../src/common/data/dataset-info.js';
import { resizeBilinear, toModelInput } from '../src/common/image/model-input.js';
import { decodeImage, type RgbaImage } from '../src/common/image/read-image.js';

function rgba(width: number, height: number, pixel: (x: number, y: number) => [number, number, number]): RgbaImage {
  const data = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data.set([...pixel(x, y), 255], (y * width + x) * 4);
  return { width, height, rgba: data };
}

describe('model input', () => {
  test('a 32x32 colour image passes through unchanged for a CIFAR model', () => {
    const img = rgba(32, 32, (x, y) => [x * 7, y * 7, (x + y) * 3]);
    const set = toModelInput(img, datasetInfo('cifar10'));
    expect(set).toMatchObject({ count: 1, height: 32, width: 32, channels: 3 });
    expect([...set.images.subarray(((5 * 32) + 9) * 3, ((5 * 32) + 9) * 3 + 3)]).toEqual([63, 35, 42]);
  });

  test('grey becomes RGB by repeating it, and colour becomes grey by ITU-R 601 luma', () => {
    const grey = toModelInput(rgba(32, 32, () => [90, 90, 90]), datasetInfo('synthetic'));
    expect(grey.images.every((v) => v === 90)).toBe(true);
    const luma = toModelInput(rgba(28, 28, () => [200, 100, 50]), datasetInfo('fashion-mnist'));
    expect(luma.channels).toBe(1);
    expect(luma.images[16 * 32 + 16]).toBe(Math.round(0.299 * 200 + 0.587 * 100 + 0.114 * 50));
  });

  test('Fashion-MNIST images are scaled to 28x28 and centred in a zero 32x32 frame, as its loader does', () => {
    const set = toModelInput(rgba(56, 84, () => [255, 255, 255]), datasetInfo('fashion-mnist'));
    for (let y = 0; y < 32; y++) {
      for (let x = 0; x < 32; x++) {
        const inside = y >= 2 && y < 30 && x >= 2 && x < 30;
        expect(set.images[y * 32 + x], `${x},${y}`).toBe(inside ? 255 : 0);
      }
    }
    // A 32x32 grey image is taken to be framed already.
    const framed = toModelInput(rgba(32, 32, (x) => [x, x, x]), datasetInfo('fashion-mnist'));
    expect(framed.images[31]).toBe(31);
  });

  test('resizing keeps flat images flat, averages when shrinking and interpolates when enlarging', () => {
    const flat = resizeBilinear(new Float32Array(100 * 60).fill(42), 100, 60, 1, 32, 32);
    expect(flat.every((v) => Math.abs(v - 42) < 1e-4)).toBe(true);
    // A one-pixel checkerboard shrunk 4x averages to mid-grey instead of aliasing to black or white.
    const checks = Float32Array.from({ length: 128 * 128 }, (_, i) => (((i % 128) + Math.floor(i / 128)) % 2) * 255);
    const small = resizeBilinear(checks, 128, 128, 1, 32, 32);
    expect(Math.max(...small.map((v) => Math.abs(v - 127.5)))).toBeLessThan(10);
    // Enlarging [0, 100] to 4 pixels with half-pixel centres: 0, 25, 75, 100.
    expect([...resizeBilinear(new Float32Array([0, 100]), 2, 1, 1, 4, 1)]).toEqual([0, 25, 75, 100]);
  });

  test('decodeImage tells formats apart by their bytes', () => {
    expect(() => decodeImage(new Uint8Array(0), 'empty.png')).toThrow(/empty\.png: not a PNG or JPEG file \(it starts with bytes \(empty file\)\)/);
    expect(() => decodeImage(new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 1, 2]), 'bad.jpg')).toThrow(/bad\.jpg: corrupt or unsupported JPEG/);
  });
});
