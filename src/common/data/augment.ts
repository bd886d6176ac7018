// Image augmentation and normalization into float batches, as pure functions
// on typed arrays (no TensorFlow.js), so they run unchanged in worker threads.
//
// Training follows the PyTorch recipe
//   RandomCrop(32, padding=4, padding_mode="reflect"), RandomHorizontalFlip(),
//   RandomVerticalFlip(), ToTensor(), Normalize(mean, std)
// and evaluation uses only ToTensor() + Normalize(mean, std). Output is NHWC.
//
// Reproducibility across data-parallel ranks: an image's random crop and flips
// come from its own stream, Rng(mixSeed(AUGMENT_STREAM, seed, epoch, index)),
// so they depend only on (seed, epoch, image index), never on which thread
// handles the image, the batch it is in, or the order of processing.

import type { ImageSet } from './types.js';
import { Rng, mixSeed } from './rng.js';

/** Image normalisation of the seed: mean 0.5, std 0.5 in every channel. */
export const NORMALIZE = { mean: [0.5], std: [0.5] };

/** The pixel part of an ImageSet (labels not needed). */
export type ImagePixels = Pick<ImageSet, 'images' | 'height' | 'width' | 'channels'>;

/** torchvision RandomCrop(padding=4) as used by the CIFAR recipe. */
export const CROP_PADDING = 4;

/** Domain tag so augmentation streams never coincide with the shuffle stream. */
const AUGMENT_STREAM = 0x4155_4755; // "AUGU"

/**
 * One image's random augmentation. `top`/`left` are the crop window's corner
 * in the reflect-padded image (torchvision convention), each in
 * [0, 2 * padding]; `top === left === padding` with no flips is the identity.
 */
export interface CropFlip {
  padding: number;
  top: number;
  left: number;
  flipHorizontal: boolean;
  flipVertical: boolean;
}

/**
 * Draws an image's augmentation. Fixed draw order (part of the reproducible
 * contract; changing it changes every training run): crop top, crop left
 * (each uniform in 0..2*padding), horizontal flip, vertical flip (each p=0.5).
 * This mirrors torchvision, where RandomCrop draws top (i) before left (j) and
 * the flips run after the crop.
 */
export function drawCropFlip(seed: number, epoch: number, index: number, padding = CROP_PADDING): CropFlip {
  if (!Number.isInteger(padding) || padding < 0) {
    throw new Error(`drawCropFlip: padding is ${padding}; it must be a non-negative integer`);
  }
  const rng = new Rng(mixSeed(AUGMENT_STREAM, seed, epoch, index));
  const top = rng.nextInt(2 * padding + 1);
  const left = rng.nextInt(2 * padding + 1);
  const flipHorizontal = rng.nextFloat() < 0.5;
  const flipVertical = rng.nextFloat() < 0.5;
  return { padding, top, left, flipHorizontal, flipVertical };
}

/**
 * Lookup table with the normalized value of every byte in every channel:
 * table[c * 256 + byte] = (byte / 255 - mean[c]) / std[c], rounded once to
 * float32. A table lookup per sample replaces a divide, subtract and divide.
 */
export type NormalizeTable = Float32Array;

/**
 * Builds the NormalizeTable. `mean` and `std` have one entry per channel, or
 * a single entry that applies to all channels.
 */
export function createNormalizeTable(channels: number, mean: readonly number[], std: readonly number[]): NormalizeTable {
  if (!Number.isInteger(channels) || channels < 1) {
    throw new Error(`createNormalizeTable: channels is ${channels}; it must be a positive integer`);
  }
  for (const [name, values] of [['mean', mean], ['std', std]] as const) {
    if (values.length !== channels && values.length !== 1) {
      throw new Error(
        `createNormalizeTable: ${name} has ${values.length} entries but the images have ${channels} channel(s); ` +
          `give one value per channel or a single value for all`,
      );
    }
  }
  const table = new Float32Array(channels * 256);
  for (let c = 0; c < channels; c++) {
    const m = mean.length === 1 ? mean[0] : mean[c];
    const s = std.length === 1 ? std[0] : std[c];
    if (!Number.isFinite(m)) throw new Error(`createNormalizeTable: mean[${c}] is ${m}; it must be a finite number`);
    if (!Number.isFinite(s) || s <= 0) throw new Error(`createNormalizeTable: std[${c}] is ${s}; it must be a positive number`);
    for (let v = 0; v < 256; v++) table[c * 256 + v] = (v / 255 - m) / s;
  }
  return table;
}

function imageSize(set: ImagePixels): number {
  return set.height * set.width * set.channels;
}

function checkImageIndex(set: ImagePixels, index: number): void {
  const size = imageSize(set);
  const count = size > 0 ? set.images.length / size : 0;
  if (!Number.isInteger(index) || index < 0 || index >= count) {
    throw new Error(`image index ${index} is out of range; the set holds ${count} images`);
  }
}

function checkTable(set: ImagePixels, table: NormalizeTable): void {
  if (table.length !== set.channels * 256) {
    throw new Error(
      `normalize table is for ${table.length / 256} channel(s) but the images have ${set.channels}; ` +
        `build it with createNormalizeTable(${set.channels}, mean, std)`,
    );
  }
}

/** Writes image `index`, normalized but not augmented, to out[outOffset...]. */
export function normalizeInto(
  out: Float32Array,
  outOffset: number,
  set: ImagePixels,
  index: number,
  table: NormalizeTable,
): void {
  checkImageIndex(set, index);
  checkTable(set, table);
  const size = imageSize(set);
  const channels = set.channels;
  const images = set.images;
  let src = index * size;
  let o = outOffset;
  const end = outOffset + size;
  if (channels === 1) {
    while (o < end) out[o++] = table[images[src++]];
    return;
  }
  while (o < end) {
    for (let c = 0; c < channels; c++) out[o++] = table[(c << 8) | images[src++]];
  }
}

/** torchvision/numpy "reflect": mirror about the edge pixel without repeating it. */
function reflect(i: number, n: number): number {
  if (i < 0) return -i;
  if (i >= n) return 2 * (n - 1) - i;
  return i;
}

// Per-image source-offset maps, reused between calls (each thread has its
// own module instance, and the functions are synchronous).
let rowStarts = new Int32Array(0);
let colStarts = new Int32Array(0);

/**
 * Writes image `index`, reflect-padded, cropped back to its size, flipped and
 * normalized, to out[outOffset...], in one pass: the crop and flips only
 * decide which source row and column each output pixel reads, so those are
 * precomputed as two small index maps.
 */
export function augmentInto(
  out: Float32Array,
  outOffset: number,
  set: ImagePixels,
  index: number,
  crop: CropFlip,
  table: NormalizeTable,
): void {
  checkImageIndex(set, index);
  checkTable(set, table);
  const { height, width, channels, images } = set;
  const { padding, top, left } = crop;
  if (padding >= height || padding >= width) {
    throw new Error(
      `augmentInto: reflect padding ${padding} needs images larger than it, got ${height}x${width}`,
    );
  }
  if (!Number.isInteger(top) || !Number.isInteger(left) || top < 0 || left < 0 || top > 2 * padding || left > 2 * padding) {
    throw new Error(`augmentInto: crop corner (${top}, ${left}) must be integers in [0, ${2 * padding}]`);
  }
  if (rowStarts.length < height) rowStarts = new Int32Array(height);
  if (colStarts.length < width) colStarts = new Int32Array(width);
  const rowStride = width * channels;
  const base = index * height * rowStride;
  for (let y = 0; y < height; y++) {
    const cropRow = crop.flipVertical ? height - 1 - y : y;
    rowStarts[y] = base + reflect(top - padding + cropRow, height) * rowStride;
  }
  for (let x = 0; x < width; x++) {
    const cropCol = crop.flipHorizontal ? width - 1 - x : x;
    colStarts[x] = reflect(left - padding + cropCol, width) * channels;
  }
  let o = outOffset;
  if (channels === 3) {
    for (let y = 0; y < height; y++) {
      const rowStart = rowStarts[y];
      for (let x = 0; x < width; x++) {
        const s = rowStart + colStarts[x];
        out[o++] = table[images[s]];
        out[o++] = table[256 | images[s + 1]];
        out[o++] = table[512 | images[s + 2]];
      }
    }
    return;
  }
  for (let y = 0; y < height; y++) {
    const rowStart = rowStarts[y];
    for (let x = 0; x < width; x++) {
      const s = rowStart + colStarts[x];
      for (let c = 0; c < channels; c++) out[o++] = table[(c << 8) | images[s + c]];
    }
  }
}

export interface BatchOptions {
  /** Apply random crop + flips (training) or only normalize (evaluation). */
  augment: boolean;
  seed: number;
  epoch: number;
  /** One value per channel, or one for all channels. */
  mean: readonly number[];
  std: readonly number[];
  /** Reflect padding of the random crop; defaults to CROP_PADDING. */
  padding?: number;
}

export interface Batch {
  /** NHWC normalized images, indices.length * height * width * channels floats. */
  x: Float32Array;
  /** Class labels, one per image. */
  y: Int32Array;
}

/** Checks that an ImageSet's arrays agree with its declared shape. */
export function checkImageSet(set: ImageSet): void {
  const { count, height, width, channels } = set;
  for (const [name, v] of [['count', count], ['height', height], ['width', width], ['channels', channels]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`ImageSet.${name} is ${v}; it must be a non-negative integer`);
  }
  if (set.images.length !== count * height * width * channels) {
    throw new Error(
      `ImageSet.images has ${set.images.length} bytes but count*height*width*channels = ` +
        `${count}*${height}*${width}*${channels} = ${count * height * width * channels}`,
    );
  }
  if (set.labels.length !== count) {
    throw new Error(`ImageSet.labels has ${set.labels.length} entries but count is ${count}`);
  }
}

/** Builds one batch of the given images (in the given order). */
export function makeBatch(set: ImageSet, indices: ArrayLike<number>, options: BatchOptions): Batch {
  checkImageSet(set);
  const table = createNormalizeTable(set.channels, options.mean, options.std);
  const padding = options.padding ?? CROP_PADDING;
  const size = imageSize(set);
  const x = new Float32Array(indices.length * size);
  const y = new Int32Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const index = indices[i];
    checkImageIndex(set, index); // before drawing: mixSeed would reject it less clearly
    if (options.augment) {
      augmentInto(x, i * size, set, index, drawCropFlip(options.seed, options.epoch, index, padding), table);
    } else {
      normalizeInto(x, i * size, set, index, table);
    }
    y[i] = set.labels[index];
  }
  return { x, y };
}
