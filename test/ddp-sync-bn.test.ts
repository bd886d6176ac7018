// --sync-bn through the coordinator (SyncBatchNorm, model/batchnorm.ts): with
// BatchNorm, 1, 2 and 3 workers on the same global batches end within 1e-5
// of each other, weights and running statistics, because every replica
// normalises with the global batch's statistics; per-replica BatchNorm, the
// default, does not. A rank whose shard is empty (3 workers, batches of 2)
// still takes part in every layer's sums; and with --overlap off the
// communication thread still carries them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { DEFAULTS, type TrainConfig } from '../src/common/training/config.js';
import { runCoordinator } from '../src/coordinator/coordinator.js';
import { relativeError } from './helpers/compare.js';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-syncbn-'));

function config(overrides: Partial<TrainConfig>): TrainConfig {
  return {
    // Width 4 and lr 0.01: at width 2 some channels' variance is so small against their mean that float32
    // rounding of the statistics (one rank's moments against several ranks' combined) grows past 1e-5 in 5 steps.
    ...DEFAULTS, model: 'resnet18', width: 4, dataset: 'synthetic', backend: 'cpu', norm: 'batch', syncBn: true, lr: 0.01,
    trainLimit: 30, testLimit: 6, batchSize: 6, epochs: 1, maxSteps: 5, seed: 8, plots: false, loaderThreads: 1,
    bucketMb: 0.005, out: tmp(), ...overrides,
  };
}

describe('--sync-bn', () => {
  test('1, 2 and 3 workers end within 1e-5 of each other after 5 steps, BatchNorm included; per-replica BatchNorm does not', async () => {
    const one = await runCoordinator(config({}), { workers: 1, port: 0 });
    for (const [workers, overlap] of [[2, true], [3, false]] as const) {
      const run = await runCoordinator(config({ overlap }), { workers, port: 0, checksumEvery: 1 });
      expect(run.steps).toBe(5);
      expect(relativeError(run.state.weights, one.state.weights), `${workers} workers`).toBeLessThan(1e-5);
      expect(relativeError(run.state.runningStats, one.state.runningStats), `${workers} workers`).toBeLessThan(1e-5);
    }
    const own = await runCoordinator(config({ syncBn: false }), { workers: 2, port: 0 });
    expect(relativeError(own.state.weights, one.state.weights)).toBeGreaterThan(1e-4);
  }, 300_000);

  test('3 workers on batches of 2: the empty shard still joins every sum, and the run equals 1 worker', async () => {
    const small = { batchSize: 2, trainLimit: 6, maxSteps: 3 };
    const one = await runCoordinator(config(small), { workers: 1, port: 0 });
    const three = await runCoordinator(config(small), { workers: 3, port: 0, checksumEvery: 1 });
    expect(three.steps).toBe(3);
    expect(relativeError(three.state.weights, one.state.weights)).toBeLessThan(1e-5);
    expect(relativeError(three.state.runningStats, one.state.runningStats)).toBeLessThan(1e-5);
  }, 300_000);
});
