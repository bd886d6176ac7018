// Starts N worker threads that all-reduce through one shared region
// (shared-memory-thread.ts) and collects what each posts: the test of the
// shared-memory reducer and scripts/bench-local-allreduce use it.
import { randomInt } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { resolveWorkerScript } from '../fs/worker-script.js';
import { createSharedRegion, prepareSharedRegion, type SharedRegion } from './shared-memory.js';
import type { SharedThreadResult, SharedThreadTask } from './shared-memory-thread.js';

export type SharedThreadsPlan = Omit<SharedThreadTask, 'region' | 'rank' | 'worldSize' | 'tag' | 'fail'> & {
  /** The failure drill of one rank, if any. */
  fail?: { rank: number; at: number; how: 'exit' | 'close' | 'absent' };
};

/**
 * Runs `worldSize` threads over one new region (or `region`, re-prepared for
 * a fresh tag) and resolves with each rank's result, in rank order; a thread
 * that exits without posting gets an `error` result saying so.
 */
export async function runSharedMemoryThreads(
  worldSize: number, plan: SharedThreadsPlan, region: SharedRegion | null = null,
): Promise<SharedThreadResult[]> {
  const maxLength = Math.max(1, ...plan.lengths);
  const shared = region ?? createSharedRegion(Math.max(2, worldSize), maxLength);
  if (!shared) throw new Error(`no shared region fits ${worldSize} ranks of ${maxLength} floats`);
  const tag = randomInt(1, 0xffff_ffff);
  prepareSharedRegion(shared, tag, worldSize);
  const script = resolveWorkerScript(import.meta.url, './shared-memory-thread.js');
  const { fail, ...rest } = plan;
  return Promise.all(Array.from({ length: worldSize }, (_, rank) => new Promise<SharedThreadResult>((resolve, reject) => {
    const task: SharedThreadTask = { ...rest, region: shared, rank, worldSize, tag, ...(fail?.rank === rank ? { fail } : fail ? { lateAt: fail.at } : {}) };
    const worker = new Worker(script, { workerData: task });
    let posted = false;
    worker.once('message', (m: SharedThreadResult) => {
      posted = true;
      resolve(m);
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (!posted) resolve({ kind: 'error', rank, message: `thread exited (code ${code}) without a result`, call: -1, afterMs: 0 });
    });
  })));
}
