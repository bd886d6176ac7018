import { describe, expect, it } from 'vitest';
import {
  CROP_PADDING,
  type CropFlip,
  augmentInto,
  createNormalizeTable,
  drawCropFlip,
  makeBatch,
  normalizeInto,
} from '../src/common/data/augment.js';
import type { ImageSet } from '../src/common/data/types.js';
import { randomSet } from './helpers/data-fixtures.js';

/**
 * Straightforward reference for torchvision's RandomCrop(padding, "reflect")
 * + flips + ToTensor + Normalize, written independently of augment.ts: build
 * the padded image explicitly, crop it, flip the crop, then normalize.
 */
function referenceAugment(set: ImageSet, index: number, crop: CropFlip, mean: number[], std: number[]): number[] {
  const { height: h, width: w, channels: c } = set;
  const p = crop.padding;
  const at = (y: number, x: number, ch: number) => set.images[((index * h + y) * w + x) * c + ch];
  const reflect = (i: number, n: number) => (i < 0 ? -i : i >= n ? 2 * n - 2 - i : i);
  const ph = h + 2 * p;
  const pw = w + 2 * p;
  const padded: number[][][] = [];
  for (let y = 0; y < ph; y++) {
    const row: number[][] = [];
    for (let x = 0; x < pw; x++) {
      const px: number[] = [];
      for (let ch = 0; ch < c; ch++) px.push(at(reflect(y - p, h), reflect(x - p, w), ch));
      row.push(px);
    }
    padded.push(row);
  }
  let cropped = padded.slice(crop.top, crop.top + h).map((row) => row.slice(crop.left, crop.left + w));
  if (crop.flipHorizontal) cropped = cropped.map((row) => [...row].reverse());
  if (crop.flipVertical) cropped = [...cropped].reverse();
  const out: number[] = [];
  for (const row of cropped) {
    for (const px of row) {
      px.forEach((v, ch) => out.push(Math.fround((v / 255 - mean[ch % mean.length]) / std[ch % std.length])));
    }
  }
  return out;
}

function imageSlice(x: Float32Array, i: number, set: ImageSet): number[] {
  const size = set.height * set.width * set.channels;
  return [...x.subarray(i * size, (i + 1) * size)];
}

const HALF = [0.5];

describe('normalization (augment: false)', () => {
  it('equals (x/255 - 0.5)/0.5 exactly, with labels, for RGB and grayscale', () => {
    for (const set of [randomSet(6, 32, 32, 3), randomSet(5, 28, 28, 1)]) {
      const indices = Uint32Array.from([4, 0, 2]);
      const { x, y } = makeBatch(set, indices, { augment: false, seed: 1, epoch: 0, mean: HALF, std: HALF });
      const size = set.height * set.width * set.channels;
      expect(x.length).toBe(3 * size);
      const expected = new Float32Array(3 * size);
      indices.forEach((index, i) => {
        for (let k = 0; k < size; k++) expected[i * size + k] = (set.images[index * size + k] / 255 - 0.5) / 0.5;
      });
      expect(x).toEqual(expected);
      expect([...y]).toEqual([...indices].map((i) => set.labels[i]));
    }
  });

  it('applies per-channel mean and std to the right channel', () => {
    const set = randomSet(2, 4, 5, 3);
    const mean = [0.1, 0.2, 0.3];
    const std = [0.5, 1, 2];
    const { x } = makeBatch(set, [1], { augment: false, seed: 0, epoch: 0, mean, std });
    const base = 1 * 4 * 5 * 3;
    for (let k = 0; k < 4 * 5 * 3; k++) {
      const ch = k % 3;
      expect(x[k]).toBe(Math.fround((set.images[base + k] / 255 - mean[ch]) / std[ch]));
    }
  });

  it('normalizeInto writes at the given offset and nowhere else', () => {
    const set = randomSet(3, 5, 5, 3);
    const size = 75;
    const out = new Float32Array(size + 10).fill(-7);
    normalizeInto(out, 5, set, 2, createNormalizeTable(3, HALF, HALF));
    expect([...out.subarray(0, 5), ...out.subarray(5 + size)]).toEqual(new Array(10).fill(-7));
    expect(out[5]).toBe(Math.fround((set.images[2 * size] / 255 - 0.5) / 0.5));
  });
});

describe('augmentation matches a reference implementation', () => {
  it('for every crop corner and flip combination (exhaustive)', () => {
    for (const set of [randomSet(2, 32, 32, 3, 2), randomSet(2, 28, 28, 1, 3), randomSet(2, 7, 10, 2, 4)]) {
      const size = set.height * set.width * set.channels;
      const out = new Float32Array(size);
      const table = createNormalizeTable(set.channels, HALF, HALF);
      for (let top = 0; top <= 2 * CROP_PADDING; top++) {
        for (let left = 0; left <= 2 * CROP_PADDING; left++) {
          for (const flipHorizontal of [false, true]) {
            for (const flipVertical of [false, true]) {
              const crop: CropFlip = { padding: CROP_PADDING, top, left, flipHorizontal, flipVertical };
              augmentInto(out, 0, set, 1, crop, table);
              const ref = referenceAugment(set, 1, crop, HALF, HALF);
              expect([...out], JSON.stringify(crop)).toEqual(ref);
            }
          }
        }
      }
    }
  });

  it('for the random crops and flips makeBatch draws, over many seeds and epochs', () => {
    const set = randomSet(16, 32, 32, 3, 5);
    const mean = [0.4914, 0.4822, 0.4465];
    const std = [0.247, 0.243, 0.261];
    const indices = Uint32Array.from({ length: 16 }, (_, i) => 15 - i);
    for (let seed = 0; seed < 10; seed++) {
      for (let epoch = 0; epoch < 3; epoch++) {
        const { x } = makeBatch(set, indices, { augment: true, seed, epoch, mean, std });
        indices.forEach((index, i) => {
          const ref = referenceAugment(set, index, drawCropFlip(seed, epoch, index), mean, std);
          expect(imageSlice(x, i, set)).toEqual(ref);
        });
      }
    }
  });

  it('is the identity (plus normalization) for a centered crop without flips', () => {
    const set = randomSet(2, 8, 8, 3);
    const table = createNormalizeTable(3, HALF, HALF);
    const a = new Float32Array(192);
    const b = new Float32Array(192);
    augmentInto(a, 0, set, 1, { padding: 4, top: 4, left: 4, flipHorizontal: false, flipVertical: false }, table);
    normalizeInto(b, 0, set, 1, table);
    expect(a).toEqual(b);
  });
});

describe('random draws', () => {
  it('crop corners cover 0..8 roughly uniformly and flips are about half', () => {
    const n = 9000;
    const tops = new Array<number>(9).fill(0);
    const lefts = new Array<number>(9).fill(0);
    let hflips = 0;
    let vflips = 0;
    for (let index = 0; index < n; index++) {
      const c = drawCropFlip(11, 2, index);
      expect(c.padding).toBe(CROP_PADDING);
      tops[c.top]++;
      lefts[c.left]++;
      if (c.flipHorizontal) hflips++;
      if (c.flipVertical) vflips++;
    }
    // Each bucket count is Binomial(9000, 1/9): mean 1000, sd ~30; allow 5 sd.
    for (const count of [...tops, ...lefts]) expect(Math.abs(count - 1000)).toBeLessThan(150);
    // Binomial(9000, 0.5): sd ~47; allow 5 sd.
    expect(Math.abs(hflips - n / 2)).toBeLessThan(240);
    expect(Math.abs(vflips - n / 2)).toBeLessThan(240);
  });

  it('outputs vary across images in a batch and across epochs', () => {
    // A constant-per-position pattern that is asymmetric, so any crop or flip is visible.
    const count = 32;
    const set = randomSet(count, 32, 32, 3, 6);
    const size = 32 * 32 * 3;
    for (let i = 1; i < count; i++) set.images.copyWithin(i * size, 0, size);
    const all = Uint32Array.from({ length: count }, (_, i) => i);
    const e0 = makeBatch(set, all, { augment: true, seed: 1, epoch: 0, mean: HALF, std: HALF }).x;
    const distinct = new Set(Array.from({ length: count }, (_, i) => imageSlice(e0, i, set).join(',')));
    expect(distinct.size).toBeGreaterThan(count / 2);
    const e1 = makeBatch(set, all, { augment: true, seed: 1, epoch: 1, mean: HALF, std: HALF }).x;
    let changed = 0;
    for (let i = 0; i < count; i++) if (imageSlice(e0, i, set).join(',') !== imageSlice(e1, i, set).join(',')) changed++;
    expect(changed).toBeGreaterThan(count / 2);
  });

  it('depends only on (seed, epoch, index), not on batch composition or order', () => {
    const set = randomSet(20, 32, 32, 3, 7);
    const opts = { augment: true, seed: 3, epoch: 5, mean: HALF, std: HALF };
    const big = makeBatch(set, Uint32Array.from([0, 5, 9, 13, 19]), opts);
    const small = makeBatch(set, Uint32Array.from([19, 2, 9]), opts);
    expect(imageSlice(small.x, 0, set)).toEqual(imageSlice(big.x, 4, set));
    expect(imageSlice(small.x, 2, set)).toEqual(imageSlice(big.x, 2, set));
    const alone = makeBatch(set, [13], opts);
    expect(imageSlice(alone.x, 0, set)).toEqual(imageSlice(big.x, 3, set));
    expect(drawCropFlip(3, 5, 13)).toEqual(drawCropFlip(3, 5, 13));
  });
});

describe('bad input', () => {
  const set = randomSet(3, 8, 8, 3);

  it('names out-of-range indices', () => {
    expect(() => makeBatch(set, [0, 3], { augment: false, seed: 0, epoch: 0, mean: HALF, std: HALF })).toThrow(
      /index 3 is out of range; the set holds 3 images/,
    );
    expect(() => makeBatch(set, [1.5], { augment: true, seed: 0, epoch: 0, mean: HALF, std: HALF })).toThrow(
      /index 1.5/,
    );
  });

  it('names mean/std that do not fit the channels', () => {
    expect(() => createNormalizeTable(3, [0.5, 0.5], HALF)).toThrow(/mean has 2 entries but the images have 3/);
    expect(() => createNormalizeTable(1, HALF, [0])).toThrow(/std\[0\] is 0/);
    expect(() => createNormalizeTable(1, [Number.NaN], HALF)).toThrow(/mean\[0\] is NaN/);
  });

  it('names a table built for another channel count', () => {
    const out = new Float32Array(192);
    expect(() => normalizeInto(out, 0, set, 0, createNormalizeTable(1, HALF, HALF))).toThrow(/1 channel\(s\) but the images have 3/);
  });

  it('rejects padding the images are too small to reflect', () => {
    const tiny = randomSet(1, 4, 4, 1);
    const table = createNormalizeTable(1, HALF, HALF);
    const crop = drawCropFlip(0, 0, 0, 4);
    expect(() => augmentInto(new Float32Array(16), 0, tiny, 0, crop, table)).toThrow(/padding 4 needs images larger/);
  });

  it('rejects an ImageSet whose arrays disagree with its shape', () => {
    const broken = { ...set, count: 4 };
    expect(() => makeBatch(broken, [0], { augment: false, seed: 0, epoch: 0, mean: HALF, std: HALF })).toThrow(
      /images has 576 bytes but count\*height\*width\*channels/,
    );
  });
});
