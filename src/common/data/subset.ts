// Class-balanced subsets for --train-limit / --test-limit. A limit of N takes
// N/classes images per class (as evenly as the available images allow),
// picks which ones from the seed, and keeps them in their original order so
// that a subset of an ordered file still reads in that order.

import type { ImageSet } from './types.js';
import { Rng } from './rng.js';

/**
 * Returns `limit` images from `set` with class counts as equal as possible.
 * Deterministic for a given seed; returns `set` itself when it takes everything.
 */
export function balancedSubset(
  set: ImageSet,
  limit: number,
  classCount: number,
  seed: number,
  /** How the limit is called in error messages, e.g. "--train-limit". */
  limitName = 'the subset size',
): ImageSet {
  if (!Number.isInteger(limit) || limit < 1) {
    throw new RangeError(`${limitName} must be a whole number of at least 1, got ${limit}.`);
  }
  if (limit > set.count) {
    throw new RangeError(`${limitName} is ${limit} but only ${set.count} images are available; use at most ${set.count}.`);
  }
  if (limit === set.count) return set;

  const rng = new Rng(seed);
  const indicesByClass = groupByClass(set.labels, classCount);
  const quotas = balancedQuotas(
    indicesByClass.map((indices) => indices.length),
    limit,
    rng,
  );

  const chosen = new Int32Array(limit);
  let filled = 0;
  for (let c = 0; c < classCount; c++) {
    const picked = rng.shuffle(indicesByClass[c]).subarray(0, quotas[c]);
    chosen.set(picked, filled);
    filled += picked.length;
  }
  chosen.sort(); // typed-array sort is numeric: restores the original order
  return gather(set, chosen);
}

/**
 * Splits `total` over classes with the given availability: every class gets
 * the same share unless it has fewer images, in which case it gives all it has
 * and the others share the rest. The leftover +1s go to seed-chosen classes.
 */
export function balancedQuotas(available: number[], total: number, rng: Rng): number[] {
  const quotas = new Array<number>(available.length).fill(0);
  let open = available.map((_, c) => c).filter((c) => available[c] > 0);
  let remaining = total;
  for (;;) {
    const share = Math.floor(remaining / open.length);
    const capped = open.filter((c) => available[c] <= share);
    if (capped.length === 0) {
      for (const c of open) quotas[c] = share;
      remaining -= share * open.length;
      break;
    }
    for (const c of capped) {
      quotas[c] = available[c];
      remaining -= available[c];
    }
    open = open.filter((c) => available[c] > share);
    if (open.length === 0) break;
  }
  // Here every open class has more than `share` images, so each can take one more.
  const lucky = rng.shuffle(Int32Array.from(open)).subarray(0, remaining);
  for (const c of lucky) quotas[c] += 1;
  return quotas;
}

function groupByClass(labels: Uint8Array, classCount: number): Int32Array[] {
  const sizes = new Int32Array(classCount);
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] >= classCount) {
      throw new RangeError(`Label ${labels[i]} at index ${i} is outside the ${classCount} classes.`);
    }
    sizes[labels[i]]++;
  }
  const groups = Array.from(sizes, (size) => new Int32Array(size));
  const fill = new Int32Array(classCount);
  for (let i = 0; i < labels.length; i++) groups[labels[i]][fill[labels[i]]++] = i;
  return groups;
}

function gather(set: ImageSet, indices: Int32Array): ImageSet {
  const imageBytes = set.height * set.width * set.channels;
  const images = new Uint8Array(indices.length * imageBytes);
  const labels = new Uint8Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const src = indices[i] * imageBytes;
    images.set(set.images.subarray(src, src + imageBytes), i * imageBytes);
    labels[i] = set.labels[indices[i]];
  }
  return { ...set, images, labels, count: indices.length };
}
