// Buckets reduced during backward, through the coordinator: 2 worker threads
// with --timeline write a trace that parses, names every rank's compute and
// communication tracks, has every span kind of the step, and whose bucket
// all-reduces overlap backward; --overlap off (one all-reduce after
// backward, in the worker's thread) ends with the same bits, since at N=2 the
// ring's sum a + b is b + a whatever the buckets; and with buckets, a worker
// lost mid-run shrinks the group, which finishes with checksums agreeing.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { DEFAULTS, type TrainConfig } from '../src/common/training/config.js';
import { runCoordinator } from '../src/coordinator/coordinator.js';
import { THROW_FAULT_ENV } from '../src/common/training/faults.js';
import type { TraceEvent } from '../src/common/io/timeline.js';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-overlap-'));

function config(overrides: Partial<TrainConfig>): TrainConfig {
  return {
    ...DEFAULTS, model: 'resnet18', width: 4, dataset: 'synthetic', backend: 'cpu', norm: 'batch',
    trainLimit: 24, testLimit: 8, batchSize: 8, epochs: 1, maxSteps: 3, seed: 5, plots: false, loaderThreads: 1,
    bucketMb: 0.02, overlap: true, out: tmp(), ...overrides,
  };
}

const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const overlaps = (a: TraceEvent, b: TraceEvent) => a.ts < b.ts + b.dur! && b.ts < a.ts + a.dur!;

describe('overlap through the coordinator', () => {
  test('--timeline: a trace whose bucket all-reduces overlap backward; --overlap off gives the same weights', async () => {
    const file = path.join(tmp(), 'trace.json');
    const lines: string[] = [];
    const overlapped = await runCoordinator(config({ timeline: file }), { workers: 2, port: 0, checksumEvery: 1, log: (l) => lines.push(l) });
    const { traceEvents } = JSON.parse(fs.readFileSync(file, 'utf8')) as { traceEvents: TraceEvent[] };
    const tracks = traceEvents.filter((e) => e.name === 'thread_name').map((e) => e.args!.name);
    expect(tracks).toEqual(expect.arrayContaining(['rank 0 compute', 'rank 0 communication', 'rank 1 compute', 'rank 1 communication']));
    for (const rank of [0, 1]) {
      const spans = traceEvents.filter((e) => e.ph === 'X' && e.pid === rank);
      for (const name of ['data wait', 'forward', 'backward', 'commit wait', 'optimizer', 'upload', 'allreduce bucket 0']) {
        expect(spans.some((e) => e.name === name), `rank ${rank}: ${name}`).toBe(true);
      }
      const backward = spans.filter((e) => e.name === 'backward');
      const buckets = spans.filter((e) => e.name.startsWith('allreduce bucket') && e.tid === 1);
      expect(backward).toHaveLength(3);
      expect(buckets.length).toBeGreaterThan(3 * 3);
      expect(buckets[0].args).toMatchObject({ bucket: 0, seq: 0 });
      expect(buckets.some((b) => backward.some((w) => overlaps(b, w))), `rank ${rank}: a bucket reduced during backward`).toBe(true);
    }

    const oneShot = await runCoordinator(config({ overlap: false }), { workers: 2, port: 0, checksumEvery: 1 });
    expect(oneShot.steps).toBe(3);
    for (const key of ['weights', 'momentum', 'runningStats'] as const) expect(bytes(oneShot.state[key]).equals(bytes(overlapped.state[key])), key).toBe(true);
    expect(lines.some((l) => l.includes('buckets of 0.02 MB reduced during backward'))).toBe(true);
  }, 300_000);

  test('with buckets, a worker that fails at step 2 shrinks 3 workers to 2, and the run finishes', async () => {
    process.env[THROW_FAULT_ENV] = '2:2';
    try {
      const result = await runCoordinator(config({ maxSteps: 4, trainLimit: 36, batchSize: 12, epochs: 2 }), { workers: 3, port: 0, checksumEvery: 1 });
      expect(result.steps).toBe(4);
      expect(result.groupChanges).toHaveLength(1);
      expect(result.groupChanges[0]).toMatchObject({ from: 3, to: 2 });
    } finally {
      delete process.env[THROW_FAULT_ENV];
    }
  }, 300_000);
});
