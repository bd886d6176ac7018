// Gradient accumulation's cut (--accumulate K): this rank's part of a global
// batch as K consecutive micro-batches, as even as possible (the first
// `count % K` one image larger, as shardRange cuts a global batch across
// ranks). Views, not copies. A micro-batch may be empty (K larger than the
// rank's images); the step then computes nothing for it.
import type { Batch } from '../model/replica.js';
import { shardRange } from '../data/sampler.js';

/** `batch` cut into `k` consecutive micro-batches (views of its arrays); k = 1 is the batch itself. */
export function microBatches(batch: Batch, k: number): Batch[] {
  if (!Number.isInteger(k) || k < 1) throw new Error(`accumulate must be a positive integer, got ${k}`);
  if (k === 1) return [batch];
  const perImage = batch.count > 0 ? batch.x.length / batch.count : 0;
  if (!Number.isInteger(perImage) || batch.y.length !== batch.count) {
    throw new Error(`batch of ${batch.count} does not match its arrays (x ${batch.x.length}, y ${batch.y.length})`);
  }
  return Array.from({ length: k }, (_, i) => {
    const { start, end } = shardRange(batch.count, i, k);
    return { x: batch.x.subarray(start * perImage, end * perImage), y: batch.y.subarray(start, end), count: end - start };
  });
}
