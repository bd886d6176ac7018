// --wire bf16 in a real run: 3 workers over the loopback ring (threads, with
// the shared-memory path turned off so the ring carries the gradients) stay
// bit-identical (the coordinator compares checksums every step and fails the
// run on a mismatch), the log says the sums are compressed, and the weights
// stay close to the fp32 run's; --wire with the star is refused.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { DEFAULTS, type TrainConfig } from '../src/common/training/config.js';
import { runCoordinator } from '../src/coordinator/coordinator.js';
import { SHARED_MEMORY_ENV } from '../src/coordinator/local-workers.js';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-wire-'));

function tinyConfig(overrides: Partial<TrainConfig>): TrainConfig {
  return {
    ...DEFAULTS, model: 'resnet18', width: 2, dataset: 'synthetic', backend: 'cpu', norm: 'none',
    trainLimit: 36, testLimit: 12, batchSize: 12, epochs: 1, seed: 5, plots: false, loaderThreads: 1, maxSteps: 3,
    out: tmp(), ...overrides,
  };
}

afterEach(() => {
  delete process.env[SHARED_MEMORY_ENV];
});

describe('--wire', () => {
  test('bf16: 3 ring workers stay bit-identical, the log says compressed, and the weights stay near fp32\'s', async () => {
    process.env[SHARED_MEMORY_ENV] = '0';
    const fp32 = await runCoordinator(tinyConfig({}), { workers: 3, port: 0, checksumEvery: 1 });
    const lines: string[] = [];
    const bf16 = await runCoordinator(tinyConfig({}), { workers: 3, port: 0, checksumEvery: 1, wire: 'bf16', log: (l) => lines.push(l) });
    expect(bf16.steps).toBe(3);
    expect(lines.some((l) => /ring all-reduce, bf16 wire \(compressed: lossy sums\)/.test(l))).toBe(true);
    let diff = 0;
    let moved = 0;
    let differs = false;
    for (let i = 0; i < fp32.state.weights.length; i++) {
      diff = Math.max(diff, Math.abs(bf16.state.weights[i] - fp32.state.weights[i]));
      moved = Math.max(moved, Math.abs(fp32.state.weights[i]));
      if (bf16.state.weights[i] !== fp32.state.weights[i]) differs = true;
    }
    // bf16 keeps 8 bits of mantissa: the sums really were rounded, and only a little.
    expect(differs).toBe(true);
    expect(diff / moved).toBeLessThan(2e-2);
  }, 180_000);

  test('with the star all-reduce it is refused', async () => {
    await expect(runCoordinator(tinyConfig({}), { workers: 2, port: 0, allreduce: 'star', wire: 'fp16' }))
      .rejects.toThrow(/--wire fp16 needs the ring all-reduce: the star sums in fp32/);
  });
});
