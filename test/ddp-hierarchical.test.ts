// A group that mixes the coordinator's threads with a worker outside its
// process (here runWorker in the test's own thread, which holds no region)
// all-reduces hierarchically: the threads through shared memory, the leader
// and the other worker over a ring, the leader's result copied back. It ends
// where 1 worker does, with checksums every step, and a worker that fails
// shrinks the group onto the threads' shared memory, and the run finishes.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import type { TrainConfig } from '../src/common/training/config.js';
import { runCoordinator, type CoordinatorOptions } from '../src/coordinator/coordinator.js';
import { runWorker, THROW_FAULT_ENV } from '../src/worker/worker.js';
import type { HostPort } from '../src/common/protocol/index.js';
import { relativeError } from './helpers/compare.js';
import { tinyRunConfig } from './helpers/tiny-run.js';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-hier-'));
const TOKEN = 'hierarchical-test-token';



afterEach(() => {
  delete process.env[THROW_FAULT_ENV];
});

/**
 * `local` threads and `remote` workers in this thread; the remote ones join
 * after every thread has, so they are the highest ranks.
 */
async function mixedRun(
  cfg: TrainConfig, local: number, remote: number, lines: string[], more: Partial<CoordinatorOptions> = {}, beforeRemote = () => {},
) {
  let onListening: (a: HostPort) => void = () => {};
  const listening = new Promise<HostPort>((resolve) => (onListening = resolve));
  const run = runCoordinator(cfg, {
    workers: local + remote, localWorkers: local, port: 0, token: TOKEN, checksumEvery: 1, log: (l) => lines.push(l), onListening, ...more,
  });
  run.catch(() => {}); // awaited below
  const address = await listening;
  while (!lines.some((l) => l.includes(`joined (${local}/`))) await new Promise((r) => setTimeout(r, 10));
  beforeRemote();
  // A worker that fails (a drill) rejects; the coordinator's result is what counts.
  const workers = Array.from({ length: remote }, () => runWorker({ connect: `${address.host}:${address.port}`, token: TOKEN, cacheDir: null }).catch(() => {}));
  const [result] = await Promise.all([run, ...workers]);
  return result;
}

describe('hierarchical all-reduce: local threads and other workers', () => {
  test('2 threads + 1 other worker end with the 1-worker weights, wired hierarchically', async () => {
    const cfg = tinyRunConfig({ norm: 'none', maxSteps: 4 });
    const one = await runCoordinator({ ...cfg, out: tmp() }, { workers: 1, port: 0 });
    const lines: string[] = [];
    const result = await mixedRun({ ...cfg, out: tmp() }, 2, 1, lines);
    const wired = lines.filter((l) => l.startsWith('all-reduce: '));
    expect(wired).toHaveLength(1);
    expect(wired[0]).toMatch(/^all-reduce: hierarchical: shared memory between 2 local threads \(ranks 0, 1; region [0-9a-f]+\), ring of 2 \(leader rank 0 \+ rank 2\)$/);
    expect(result.steps).toBe(4);
    expect(result.groupChanges).toHaveLength(0);
    expect(relativeError(result.state.weights, one.state.weights)).toBeLessThan(1e-5);
  }, 120_000);

  test('the other worker failing at step 2 shrinks the group to the 2 threads on shared memory, and the run finishes', async () => {
    const cfg = tinyRunConfig({ norm: 'none', maxSteps: 4 });
    process.env[THROW_FAULT_ENV] = '2:2';
    const lines: string[] = [];
    const result = await mixedRun(cfg, 2, 1, lines);
    expect(result.steps).toBe(4);
    expect(result.groupChanges).toMatchObject([{ from: 3, to: 2 }]);
    const wired = lines.filter((l) => l.startsWith('all-reduce: '));
    expect(wired[0]).toMatch(/^all-reduce: hierarchical: /);
    expect(wired.at(-1)).toMatch(/^all-reduce: shared memory between 2 local threads/);
    expect(lines.some((l) => /rank 2 .*failed at step 2/.test(l))).toBe(true);
  }, 120_000);

  test('a thread failing at step 2 shrinks 3 threads + 1 to 2 threads + 1, hierarchical again on the re-prepared region', async () => {
    const cfg = tinyRunConfig({ norm: 'none', maxSteps: 4 });
    // The threads took a copy of the environment when they started; the other
    // worker, which becomes rank 2 of the next group, must not see it.
    process.env[THROW_FAULT_ENV] = '2:2';
    const lines: string[] = [];
    const result = await mixedRun(cfg, 3, 1, lines, {}, () => delete process.env[THROW_FAULT_ENV]);
    expect(result.steps).toBe(4);
    expect(result.groupChanges).toMatchObject([{ from: 4, to: 3 }]);
    const wired = lines.filter((l) => l.startsWith('all-reduce: '));
    expect(wired[0]).toMatch(/^all-reduce: hierarchical: shared memory between 3 local threads \(ranks 0, 1, 2; .*ring of 2 \(leader rank 0 \+ rank 3\)$/);
    expect(wired.at(-1)).toMatch(/^all-reduce: hierarchical: shared memory between 2 local threads \(ranks 0, 1; .*ring of 2 \(leader rank 0 \+ rank 2\)$/);
    expect(lines.some((l) => /rank 2 .*failed at step 2/.test(l))).toBe(true);
  }, 120_000);
});
