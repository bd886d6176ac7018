// Thread-mode runs through the coordinator with the shared-memory all-reduce:
// the coordinator says it wired one, N workers end where 1 worker does, the
// loopback ring (TFJS_DDP_SHARED_MEMORY=0) gives the same weights, and a
// thread that fails mid-run shrinks the group onto a fresh region, with
// commits and checksums as before.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { runCoordinator } from '../src/coordinator/coordinator.js';
import { SHARED_MEMORY_ENV } from '../src/coordinator/local-workers.js';
import { THROW_FAULT_ENV } from '../src/worker/worker.js';
import { relativeError } from './helpers/compare.js';
import { tinyRunConfig } from './helpers/tiny-run.js';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-shm-'));



afterEach(() => {
  delete process.env[SHARED_MEMORY_ENV];
  delete process.env[THROW_FAULT_ENV];
});

describe('thread mode with the shared-memory all-reduce', () => {
  test('2 and 3 threads end with the 1-worker weights, and the ring gives the same', async () => {
    const cfg = tinyRunConfig({ norm: 'none', maxSteps: 4 });
    const one = await runCoordinator({ ...cfg, out: tmp() }, { workers: 1, port: 0 });
    const shared: Record<number, Float32Array> = {};
    for (const workers of [2, 3]) {
      const lines: string[] = [];
      const result = await runCoordinator({ ...cfg, out: tmp() }, { workers, port: 0, checksumEvery: 1, log: (l) => lines.push(l) });
      expect(lines).toContain(lines.find((l) => l.startsWith(`all-reduce: shared memory between ${workers} local threads`)));
      expect(result.steps).toBe(4);
      expect(relativeError(result.state.weights, one.state.weights)).toBeLessThan(1e-5);
      shared[workers] = result.state.weights;
    }
    process.env[SHARED_MEMORY_ENV] = '0';
    const lines: string[] = [];
    const ring = await runCoordinator({ ...cfg, out: tmp() }, { workers: 2, port: 0, log: (l) => lines.push(l) });
    expect(lines.some((l) => l.startsWith('all-reduce: shared memory'))).toBe(false);
    expect(relativeError(ring.state.weights, shared[2])).toBeLessThan(1e-6);
  }, 180_000);

  test('with BatchNorm, a thread that fails at step 2 shrinks 3 threads to 2 on the shared region, and the run finishes', async () => {
    const cfg = tinyRunConfig({ norm: 'batch', maxSteps: 5 });
    process.env[THROW_FAULT_ENV] = '2:2';
    const lines: string[] = [];
    const result = await runCoordinator(cfg, { workers: 3, port: 0, checksumEvery: 1, log: (l) => lines.push(l) });
    expect(result.steps).toBe(5);
    expect(result.groupChanges).toHaveLength(1);
    expect(result.groupChanges[0]).toMatchObject({ from: 3, to: 2 });
    const wired = lines.filter((l) => l.startsWith('all-reduce: shared memory'));
    expect(wired[0]).toMatch(/between 3 local threads/);
    expect(wired.at(-1)).toMatch(/between 2 local threads/);
    expect(lines.some((l) => /rank 2 .*failed at step 2/.test(l))).toBe(true);
  }, 180_000);
});
