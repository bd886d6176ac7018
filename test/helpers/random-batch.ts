// Seeded batches of random 32x32x3 images for step-level tests.
import type { Batch } from '../../src/common/model/replica.js';

/** The Park-Miller generator: a repeatable stream in (0, 1). */
export function lcg(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 16807) % 2147483647) / 2147483647;
}

/** `count` images with pixels in (-1, 1) and labels (3i + seed) mod 10, the same for the same seed. */
export function randomBatch(count: number, seed: number): Batch {
  const rand = lcg(seed);
  return { x: Float32Array.from({ length: count * 32 * 32 * 3 }, () => rand() * 2 - 1), y: Int32Array.from({ length: count }, (_, i) => (i * 3 + seed) % 10), count };
}
