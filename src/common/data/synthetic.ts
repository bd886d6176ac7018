// A generated 10-class 32x32 RGB dataset so the training pipeline can run on
// any machine, with no files and no network. Each class is a striped patch
// with its own stripe orientation (5 angles) and stripe width (2 widths).
// Everything a shortcut could latch onto varies per image instead: colours,
// contrast, phase, patch position and size, plus angle/width jitter, pixel
// noise and a distracting colour blob. A small CNN therefore has to learn
// oriented-frequency filters, which it does within an epoch or two, but the
// jitter and noise keep it from being perfect at once.

import type { Dataset, ImageSet } from '../types.js';
import { deriveSeed, mulberry32, shuffleInPlace } from './prng.js';

export const SYNTHETIC_TRAIN_COUNT = 5000;
export const SYNTHETIC_TEST_COUNT = 1000;

const SIDE = 32;
const CHANNELS = 3;
const ORIENTATIONS_DEG = [0, 36, 72, 108, 144];
/** Stripe periods in pixels for the "wide" and "narrow" variants. */
const PERIODS_PX = [14, 7];
const PERIOD_NAMES = ['wide', 'narrow'];

/** Class k has orientation ORIENTATIONS_DEG[k >> 1] and period PERIODS_PX[k & 1]. */
export const SYNTHETIC_CLASSES = ORIENTATIONS_DEG.flatMap((deg) =>
  PERIOD_NAMES.map((width) => `${width}-stripes-${deg}deg`),
);

// Per-image variation. Angle jitter stays well below half the 36-degree gap
// between classes so that labels remain unambiguous.
const ANGLE_JITTER_DEG = 12;
const PERIOD_JITTER = 0.2; // +-20 % of the period
const CENTRE_SHIFT_PX = 6;
const NOISE_STD = 24;

export interface SyntheticOptions {
  seed: number;
  trainCount?: number;
  testCount?: number;
}

export function generateSynthetic(options: SyntheticOptions): Dataset {
  const trainCount = options.trainCount ?? SYNTHETIC_TRAIN_COUNT;
  const testCount = options.testCount ?? SYNTHETIC_TEST_COUNT;
  return {
    name: 'synthetic',
    classes: [...SYNTHETIC_CLASSES],
    train: generateImageSet(trainCount, deriveSeed(options.seed, 'synthetic-train')),
    test: generateImageSet(testCount, deriveSeed(options.seed, 'synthetic-test')),
  };
}

/** Generates `count` images whose class counts differ by at most one. */
export function generateImageSet(count: number, seed: number): ImageSet {
  if (!Number.isInteger(count) || count < 0) {
    throw new RangeError(`Synthetic image count must be a non-negative integer, got ${count}.`);
  }
  const random = mulberry32(seed);
  const classCount = SYNTHETIC_CLASSES.length;
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) labels[i] = i % classCount;
  shuffleInPlace(labels, random);

  const images = new Uint8Array(count * SIDE * SIDE * CHANNELS);
  const scratch = new ImageScratch();
  const gaussian = gaussianSource(random);
  for (let i = 0; i < count; i++) {
    drawImage(images.subarray(i * SIDE * SIDE * CHANNELS, (i + 1) * SIDE * SIDE * CHANNELS), labels[i], random, gaussian, scratch);
  }
  return { images, labels, count, height: SIDE, width: SIDE, channels: CHANNELS };
}

/** Reused per-image buffers for the separable Gaussian windows. */
class ImageScratch {
  readonly patchX = new Float64Array(SIDE);
  readonly patchY = new Float64Array(SIDE);
  readonly blobX = new Float64Array(SIDE);
  readonly blobY = new Float64Array(SIDE);
}

function drawImage(
  out: Uint8Array,
  label: number,
  random: () => number,
  gaussian: () => number,
  scratch: ImageScratch,
): void {
  const uniform = (lo: number, hi: number) => lo + (hi - lo) * random();
  const angle = ((ORIENTATIONS_DEG[label >> 1] + uniform(-ANGLE_JITTER_DEG, ANGLE_JITTER_DEG)) * Math.PI) / 180;
  const period = PERIODS_PX[label & 1] * uniform(1 - PERIOD_JITTER, 1 + PERIOD_JITTER);
  const k = (2 * Math.PI) / period;
  const kx = k * Math.cos(angle);
  const ky = k * Math.sin(angle);
  const phase = uniform(0, 2 * Math.PI);

  // Background colour, and the colour direction the stripes swing along.
  const background = [uniform(50, 205), uniform(50, 205), uniform(50, 205)];
  const contrast = uniform(15, 60);
  const stripe = randomUnitVector(gaussian);

  // The striped patch: a Gaussian window of random size at a random offset.
  fillGaussianWindow(scratch.patchX, SIDE / 2 + uniform(-CENTRE_SHIFT_PX, CENTRE_SHIFT_PX), uniform(7, 12));
  fillGaussianWindow(scratch.patchY, SIDE / 2 + uniform(-CENTRE_SHIFT_PX, CENTRE_SHIFT_PX), uniform(7, 12));

  // A plain colour blob anywhere in the image, unrelated to the class.
  fillGaussianWindow(scratch.blobX, uniform(0, SIDE), uniform(2.5, 5));
  fillGaussianWindow(scratch.blobY, uniform(0, SIDE), uniform(2.5, 5));
  const blob = [uniform(-70, 70), uniform(-70, 70), uniform(-70, 70)];

  let p = 0;
  for (let y = 0; y < SIDE; y++) {
    for (let x = 0; x < SIDE; x++) {
      const wave = contrast * scratch.patchX[x] * scratch.patchY[y] * Math.sin(kx * x + ky * y + phase);
      const blobWeight = scratch.blobX[x] * scratch.blobY[y];
      for (let c = 0; c < CHANNELS; c++) {
        const value = background[c] + wave * stripe[c] + blobWeight * blob[c] + NOISE_STD * gaussian();
        out[p++] = value <= 0 ? 0 : value >= 255 ? 255 : Math.round(value);
      }
    }
  }
}

function fillGaussianWindow(window: Float64Array, centre: number, sigma: number): void {
  const scale = -1 / (2 * sigma * sigma);
  for (let i = 0; i < window.length; i++) {
    const d = i - centre;
    window[i] = Math.exp(d * d * scale);
  }
}

/** A random RGB direction of length sqrt(3), so contrast means roughly the same in any colour. */
function randomUnitVector(gaussian: () => number): number[] {
  const v = [gaussian(), gaussian(), gaussian()];
  const norm = Math.hypot(v[0], v[1], v[2]) || 1;
  return v.map((x) => (x / norm) * Math.sqrt(3));
}

/** Standard normal samples (Box-Muller, using both outputs). */
function gaussianSource(random: () => number): () => number {
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const value = spare;
      spare = undefined;
      return value;
    }
    const u = 1 - random(); // (0, 1], so the log is finite
    const r = Math.sqrt(-2 * Math.log(u));
    const theta = 2 * Math.PI * random();
    spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  };
}
