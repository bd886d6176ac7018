// A generated 10-class 32x32 RGB dataset so the training pipeline can run on
// any machine, with no files and no network. Each class is a textured patch:
// one of five patterns (horizontal stripes, vertical stripes, a grid, a
// diagonal checkerboard, concentric rings) at one of two scales.
//
// Why these patterns: the recipe's augmentation flips images horizontally and
// vertically, so a class must stay itself under both flips. An oriented
// stripe at 36 degrees becomes one at 144 degrees when flipped, so oriented
// classes would be made indistinguishable by the augmentation itself. All
// five patterns here map onto themselves (up to phase) under either flip.
//
// Everything a shortcut could latch onto varies per image instead: colours,
// contrast, phase, patch position and size, plus angle and scale jitter,
// pixel noise and a distracting colour blob. A small CNN has to learn
// frequency filters, which it does within an epoch or two, but the jitter and
// noise keep it from being perfect at once.

import type { Dataset, ImageSet } from './types.js';
import { Rng, seedFor } from './rng.js';

export const SYNTHETIC_TRAIN_COUNT = 5000;
export const SYNTHETIC_TEST_COUNT = 1000;

const SIDE = 32;
const CHANNELS = 3;

const PATTERNS = ['horizontal-stripes', 'vertical-stripes', 'grid', 'checks', 'rings'] as const;
type Pattern = (typeof PATTERNS)[number];
/** Pattern periods in pixels for the "wide" and "narrow" variants. */
const PERIODS_PX = [12, 6];
const SCALE_NAMES = ['wide', 'narrow'];

/** Class k has pattern PATTERNS[k >> 1] and period PERIODS_PX[k & 1]. */
export const SYNTHETIC_CLASSES = PATTERNS.flatMap((pattern) => SCALE_NAMES.map((scale) => `${scale}-${pattern}`));

/** The pattern and period of class `label`, for tests and documentation. */
export function syntheticClassShape(label: number): { pattern: Pattern; periodPx: number } {
  return { pattern: PATTERNS[label >> 1], periodPx: PERIODS_PX[label & 1] };
}

// Per-image variation. Symmetric around 0, so that a flipped image is as
// likely as the original under its own class. The angle jitter stays far
// below the 45 degrees that separate stripes from the checkerboard diagonals.
const ANGLE_JITTER_DEG = 10;
const PERIOD_JITTER = 0.15; // +-15 % of the period: the two scales never overlap
const CENTRE_SHIFT_PX = 5;
const NOISE_STD = 10;

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
    train: generateImageSet(trainCount, seedFor(options.seed, 'synthetic-train')),
    test: generateImageSet(testCount, seedFor(options.seed, 'synthetic-test')),
  };
}

/** Generates `count` images whose class counts differ by at most one. */
export function generateImageSet(count: number, seed: number): ImageSet {
  if (!Number.isInteger(count) || count < 0) {
    throw new RangeError(`Synthetic image count must be a non-negative integer, got ${count}.`);
  }
  const rng = new Rng(seed);
  const classCount = SYNTHETIC_CLASSES.length;
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) labels[i] = i % classCount;
  rng.shuffle(labels);

  const images = new Uint8Array(count * SIDE * SIDE * CHANNELS);
  const scratch = new ImageScratch();
  const gaussian = gaussianSource(rng);
  for (let i = 0; i < count; i++) {
    drawImage(images.subarray(i * SIDE * SIDE * CHANNELS, (i + 1) * SIDE * SIDE * CHANNELS), labels[i], rng, gaussian, scratch);
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

/** The pattern's value in [-1, 1] at (u, v), coordinates already rotated and scaled to radians. */
function patternValue(pattern: Pattern, u: number, v: number, phase: number): number {
  switch (pattern) {
    case 'horizontal-stripes':
      return Math.sin(v + phase);
    case 'vertical-stripes':
      return Math.sin(u + phase);
    case 'grid':
      return 0.5 * (Math.sin(u + phase) + Math.sin(v + phase));
    case 'checks':
      // sin(u)sin(v) has its energy on the diagonals: a checkerboard.
      return 2 * Math.sin(u + phase) * Math.sin(v + phase);
    case 'rings':
      return Math.sin(Math.hypot(u, v) + phase);
  }
}

function drawImage(out: Uint8Array, label: number, rng: Rng, gaussian: () => number, scratch: ImageScratch): void {
  const uniform = (lo: number, hi: number) => lo + (hi - lo) * rng.nextFloat();
  const { pattern, periodPx } = syntheticClassShape(label);
  const angle = (uniform(-ANGLE_JITTER_DEG, ANGLE_JITTER_DEG) * Math.PI) / 180;
  const k = (2 * Math.PI) / (periodPx * uniform(1 - PERIOD_JITTER, 1 + PERIOD_JITTER));
  const cos = Math.cos(angle) * k;
  const sin = Math.sin(angle) * k;
  const phase = uniform(0, 2 * Math.PI);
  const centreX = SIDE / 2 + uniform(-CENTRE_SHIFT_PX, CENTRE_SHIFT_PX);
  const centreY = SIDE / 2 + uniform(-CENTRE_SHIFT_PX, CENTRE_SHIFT_PX);

  // Background colour, and the colour direction the pattern swings along.
  const background = [uniform(50, 205), uniform(50, 205), uniform(50, 205)];
  const contrast = uniform(60, 90);
  const tint = patternColour(gaussian);

  // The textured patch: a Gaussian window of random size around the centre.
  fillGaussianWindow(scratch.patchX, centreX, uniform(7, 12));
  fillGaussianWindow(scratch.patchY, centreY, uniform(7, 12));

  // A plain colour blob anywhere in the image, unrelated to the class.
  fillGaussianWindow(scratch.blobX, uniform(0, SIDE), uniform(2.5, 5));
  fillGaussianWindow(scratch.blobY, uniform(0, SIDE), uniform(2.5, 5));
  const blob = [uniform(-40, 40), uniform(-40, 40), uniform(-40, 40)];

  let p = 0;
  for (let y = 0; y < SIDE; y++) {
    for (let x = 0; x < SIDE; x++) {
      const dx = x - centreX;
      const dy = y - centreY;
      const u = cos * dx + sin * dy;
      const v = -sin * dx + cos * dy;
      const wave = contrast * scratch.patchX[x] * scratch.patchY[y] * patternValue(pattern, u, v, phase);
      const blobWeight = scratch.blobX[x] * scratch.blobY[y];
      for (let c = 0; c < CHANNELS; c++) {
        const value = background[c] + wave * tint[c] + blobWeight * blob[c] + NOISE_STD * gaussian();
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

/**
 * The RGB direction the pattern swings along, scaled to length sqrt(3): mostly
 * brightness with a random tint. Pure random colour directions make the
 * pattern too hard for the first conv layer to pick up in an epoch or two.
 */
function patternColour(gaussian: () => number): number[] {
  const v = [1 + 0.5 * gaussian(), 1 + 0.5 * gaussian(), 1 + 0.5 * gaussian()];
  const norm = Math.hypot(v[0], v[1], v[2]) || 1;
  return v.map((x) => (x / norm) * Math.sqrt(3));
}

/** Standard normal samples (Box-Muller, using both outputs). */
function gaussianSource(rng: Rng): () => number {
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const value = spare;
      spare = undefined;
      return value;
    }
    const u = 1 - rng.nextFloat(); // (0, 1], so the log is finite
    const r = Math.sqrt(-2 * Math.log(u));
    const theta = 2 * Math.PI * rng.nextFloat();
    spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  };
}
