// Eval-mode scoring of a contiguous range of an image set (the whole test set
// in the single-process trainer, one rank's shard in a distributed run), in
// batches of the training size, without augmentation.
import { makeBatch, NORMALIZE } from '../data/augment.js';
import type { BatchResult, Replica } from '../model/replica.js';
import type { ImageSet } from '../data/types.js';

export function evaluateRange(
  replica: Replica, set: ImageSet, runningStats: Float32Array, batchSize: number, start = 0, end = set.count,
): BatchResult {
  let lossSum = 0;
  let correct = 0;
  for (let from = start; from < end; from += batchSize) {
    const indices = Array.from({ length: Math.min(end, from + batchSize) - from }, (_, i) => from + i);
    const { x, y } = makeBatch(set, indices, { augment: false, seed: 0, epoch: 0, ...NORMALIZE });
    const r = replica.evaluate({ x, y, count: indices.length }, runningStats);
    lossSum += r.lossSum;
    correct += r.correct;
  }
  return { lossSum, correct, count: end - start };
}
