// Builds batches in a piscina thread pool so augmentation overlaps training.
//
// The image bytes are copied once into SharedArrayBuffers handed to every
// worker through workerData; a task then carries only the batch's indices and
// (seed, epoch, augment), and the worker transfers the finished Float32Array
// back without a copy. Results equal makeBatch() in the main thread exactly,
// because an image's augmentation depends only on (seed, epoch, index).

import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { Piscina } from 'piscina';
import { checkImageSet, createNormalizeTable, type Batch } from './augment.js';
import type { ImageSet } from './types.js';
import { resolveWorkerScript } from '../fs/worker-script.js';

/** What every augmentation worker receives once, at start-up. */
export interface AugmentWorkerData {
  images: SharedArrayBuffer;
  labels: SharedArrayBuffer;
  count: number;
  height: number;
  width: number;
  channels: number;
  mean: number[];
  std: number[];
}

/** One batch request sent to a worker. */
export interface AugmentTask {
  indices: Uint32Array;
  seed: number;
  epoch: number;
  augment: boolean;
}

export interface LoadedBatch extends Batch {
  /** Number of images in the batch. */
  count: number;
}

export interface BatchLoaderOptions {
  set: ImageSet;
  /** Worker threads; default: one core is left to training, at most 2 threads. */
  threads?: number;
  /** One value per channel, or one for all channels. */
  mean: number[];
  std: number[];
  /** Augmentation seed; together with epoch and image index it fixes each image's crop and flips. */
  seed: number;
}

export interface LoaderStats {
  /** Total time the consumer waited for batches, in milliseconds. */
  waitMs: number;
  /** Number of batches handed to the consumer. */
  batches: number;
}

export function defaultLoaderThreads(): number {
  return Math.max(1, Math.min(2, os.availableParallelism() - 1));
}

function toSharedBytes(bytes: Uint8Array): SharedArrayBuffer {
  if (bytes.buffer instanceof SharedArrayBuffer && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength) {
    return bytes.buffer;
  }
  const shared = new SharedArrayBuffer(bytes.byteLength);
  new Uint8Array(shared).set(bytes);
  return shared;
}

export class BatchLoader {
  private readonly pool: Piscina<AugmentTask, Batch>;
  private readonly seed: number;
  private readonly count: number;
  private closed = false;
  /** A failure the pool reported outside any task (a thread that died idle); the next batch rejects with it. */
  private poolError: Error | null = null;
  private waitMs = 0;
  private batches = 0;

  constructor(options: BatchLoaderOptions) {
    const { set, mean, std, seed } = options;
    checkImageSet(set);
    // Validates mean/std against the channel count here, in the caller's
    // thread, rather than as a rejected task later.
    createNormalizeTable(set.channels, mean, std);
    if (!Number.isSafeInteger(seed)) {
      throw new Error(`BatchLoader: seed is ${seed}; it must be a safe integer`);
    }
    const threads = options.threads ?? defaultLoaderThreads();
    if (!Number.isInteger(threads) || threads < 1) {
      throw new Error(`BatchLoader: threads is ${threads}; it must be a positive integer`);
    }
    const workerData: AugmentWorkerData = {
      images: toSharedBytes(set.images),
      labels: toSharedBytes(set.labels),
      count: set.count,
      height: set.height,
      width: set.width,
      channels: set.channels,
      mean: [...mean],
      std: [...std],
    };
    this.seed = seed;
    this.count = set.count;
    this.pool = new Piscina<AugmentTask, Batch>({
      filename: resolveWorkerScript(import.meta.url, './augment-thread.js'),
      minThreads: threads,
      maxThreads: threads,
      // Threads are started once and kept: restarting one would re-run the
      // worker's module setup in the middle of an epoch.
      idleTimeout: Infinity,
      workerData,
    });
    // Piscina emits 'error' for what it cannot pin on a task, and an
    // 'error' event without a listener throws, out of an event handler,
    // killing the process. The usual case is harmless: the consumer failed
    // (a step threw) and close() dropped the batches in flight while a
    // thread's finished batch was still on its way ("Unexpected message from
    // Worker"); left unheard it would replace the consumer's real error.
    this.pool.on('error', (err: Error) => {
      if (!this.closed) this.poolError ??= err;
    });
  }

  /** Builds one batch in the pool. The whole call counts as data wait. */
  async load(indices: Uint32Array, epoch: number, augment: boolean): Promise<LoadedBatch> {
    const start = performance.now();
    const batch = await this.submit(indices, epoch, augment);
    this.record(performance.now() - start);
    return batch;
  }

  /**
   * Yields the batches in order while keeping up to `depth` of the following
   * ones in flight, so they are built while the consumer trains on the
   * current one. Only the time the consumer actually waits is recorded.
   */
  async *prefetch(
    batches: readonly Uint32Array[],
    epoch: number,
    augment: boolean,
    depth = 2,
  ): AsyncGenerator<LoadedBatch, void, undefined> {
    if (!Number.isInteger(depth) || depth < 1) {
      throw new Error(`BatchLoader.prefetch: depth is ${depth}; it must be a positive integer`);
    }
    const inFlight: Promise<LoadedBatch>[] = [];
    let next = 0;
    const topUp = (): void => {
      while (inFlight.length < depth && next < batches.length) {
        const pending = this.submit(batches[next++], epoch, augment);
        // Marks the promise handled so a failure in a batch not yet awaited is
        // not reported as an unhandled rejection; it still surfaces when that
        // batch is awaited below.
        pending.catch(() => undefined);
        inFlight.push(pending);
      }
    };
    // A consumer that stops early simply drops the batches still in flight.
    topUp();
    while (inFlight.length > 0) {
      const start = performance.now();
      const batch = await inFlight.shift()!;
      this.record(performance.now() - start);
      topUp();
      yield batch;
    }
  }

  /** Worker threads currently running (0 once closed). */
  get threads(): number {
    return this.pool.threads.length;
  }

  /** Data-wait totals since construction or the last resetStats(). */
  stats(): LoaderStats {
    return { waitMs: this.waitMs, batches: this.batches };
  }

  resetStats(): void {
    this.waitMs = 0;
    this.batches = 0;
  }

  /** Stops the worker threads; pending batches are rejected. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.destroy();
  }

  private submit(indices: Uint32Array, epoch: number, augment: boolean): Promise<LoadedBatch> {
    if (this.closed) {
      return Promise.reject(new Error('BatchLoader is closed; create a new one to load more batches'));
    }
    if (this.poolError) {
      return Promise.reject(new Error(`BatchLoader: the augmentation threads failed: ${this.poolError.message}`));
    }
    if (!(indices instanceof Uint32Array)) {
      return Promise.reject(new Error('BatchLoader: indices must be a Uint32Array'));
    }
    if (!Number.isSafeInteger(epoch) || epoch < 0) {
      return Promise.reject(new Error(`BatchLoader: epoch is ${epoch}; it must be a non-negative integer`));
    }
    for (let i = 0; i < indices.length; i++) {
      if (indices[i] >= this.count) {
        return Promise.reject(
          new Error(`BatchLoader: index ${indices[i]} is out of range; the set holds ${this.count} images`),
        );
      }
    }
    const task: AugmentTask = { indices, seed: this.seed, epoch, augment };
    return this.pool.run(task).then(({ x, y }) => ({ x, y, count: indices.length }));
  }

  private record(waitMs: number): void {
    this.waitMs += waitMs;
    this.batches += 1;
  }
}
