// Piscina worker entry: builds augmented, normalized batches off the main
// thread. The image bytes arrive once, as SharedArrayBuffers in workerData
// (shared, not copied), so each task carries only indices and a few numbers.

import { workerData } from 'node:worker_threads';
import { move, transferableSymbol, valueSymbol } from 'piscina';
import { makeBatch } from './augment.js';
import type { ImageSet } from './types.js';
import type { AugmentTask, AugmentWorkerData } from './batch-loader.js';

const shared = workerData as AugmentWorkerData;
const set: ImageSet = {
  images: new Uint8Array(shared.images),
  labels: new Uint8Array(shared.labels),
  count: shared.count,
  height: shared.height,
  width: shared.width,
  channels: shared.channels,
};

export default function buildBatch(task: AugmentTask): unknown {
  const { x, y } = makeBatch(set, task.indices, {
    augment: task.augment,
    seed: task.seed,
    epoch: task.epoch,
    mean: shared.mean,
    std: shared.std,
  });
  // Piscina only transfers (instead of copying) a top-level movable value, so
  // the {x, y} pair is wrapped as one Transferable listing both buffers.
  return move({
    [transferableSymbol]: [x.buffer, y.buffer],
    [valueSymbol]: { x, y },
  });
}
