// Which examples go into which batch, and which rank handles which part.
//
// Unlike PyTorch's DistributedSampler (which gives each rank its own stream of
// batches), we cut the epoch into *global* batches first and then split every
// global batch across ranks. Averaging the ranks' gradients then equals the
// gradient of the whole global batch, so N-worker training reproduces
// 1-worker training on the same global batches.

import { Rng, mixSeed } from './rng.js';

/** Domain tag so the shuffle stream never coincides with another use of (seed, epoch). */
const SHUFFLE_STREAM = 0x5348_5546; // "SHUF"

const MAX_EXAMPLES = 0xffff_ffff; // indices are stored in a Uint32Array

function requireCount(name: string, value: number, max = MAX_EXAMPLES): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new Error(`${name} is ${value}; it must be an integer in [0, ${max}]`);
  }
}

/**
 * A uniformly random permutation of 0..n-1 (Fisher-Yates), fixed by
 * (seed, epoch) and identical on every machine.
 */
export function epochPermutation(n: number, seed: number, epoch: number): Uint32Array {
  requireCount('epochPermutation: n', n);
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  return new Rng(mixSeed(SHUFFLE_STREAM, seed, epoch)).shuffle(order);
}

export interface GlobalBatchOptions {
  /** Shuffle with epochPermutation (training) or keep 0..n-1 order (evaluation). */
  shuffle: boolean;
}

/**
 * The epoch's global batches: consecutive slices of the (shuffled) order.
 * The last batch is smaller when batchSize does not divide n
 * (PyTorch DataLoader with drop_last=False). Each batch owns its buffer.
 */
export function globalBatches(
  n: number,
  batchSize: number,
  seed: number,
  epoch: number,
  options: GlobalBatchOptions,
): Uint32Array[] {
  requireCount('globalBatches: n', n);
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`globalBatches: batchSize is ${batchSize}; it must be a positive integer`);
  }
  let order: Uint32Array;
  if (options.shuffle) {
    order = epochPermutation(n, seed, epoch);
  } else {
    order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
  }
  const batches: Uint32Array[] = [];
  for (let start = 0; start < n; start += batchSize) {
    batches.push(order.slice(start, Math.min(n, start + batchSize)));
  }
  return batches;
}

/** Half-open range [start, end). */
export interface ShardRange {
  start: number;
  end: number;
}

/**
 * This rank's contiguous share of `total` items, as even as possible: the
 * first `total % worldSize` ranks get one extra item. Ranks beyond `total`
 * get an empty range (start === end). Used to split a global batch across
 * ranks and to shard the test set.
 */
export function shardRange(total: number, rank: number, worldSize: number): ShardRange {
  requireCount('shardRange: total', total, Number.MAX_SAFE_INTEGER);
  if (!Number.isInteger(worldSize) || worldSize < 1) {
    throw new Error(`shardRange: worldSize is ${worldSize}; it must be a positive integer`);
  }
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
    throw new Error(`shardRange: rank is ${rank}; it must be an integer in [0, ${worldSize - 1}] for worldSize ${worldSize}`);
  }
  const base = Math.floor(total / worldSize);
  const extra = total % worldSize;
  const start = rank * base + Math.min(rank, extra);
  const end = start + base + (rank < extra ? 1 : 0);
  return { start, end };
}
