// A NaN in one replica's gradient skips that step on every replica (they all
// see the same summed bytes), names the rank, and too many in a row abort the
// run with a checkpoint. Faults are injected with TFJS_DDP_INJECT_NAN.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { DEFAULTS, type TrainConfig } from '../src/common/training/config.js';
import { listCheckpoints } from '../src/common/io/checkpoint.js';
import { runCoordinator } from '../src/coordinator/coordinator.js';
import { FAULT_ENV } from '../src/worker/worker.js';

const cfg = (extra: Partial<TrainConfig>): TrainConfig => ({
  ...DEFAULTS, model: 'resnet18', width: 2, norm: 'none', dataset: 'synthetic', backend: 'cpu', trainLimit: 48, testLimit: 12,
  batchSize: 12, epochs: 1, seed: 5, plots: false, out: fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-nan-')), ...extra,
});
const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

afterEach(() => {
  delete process.env[FAULT_ENV];
});

describe('non-finite gradients', () => {
  test('a NaN on one rank skips the step everywhere: nothing changes, the rank is named, the run goes on', async () => {
    const oneStep = await runCoordinator(cfg({ maxSteps: 1 }), { workers: 2, port: 0, checksumEvery: 1 });
    process.env[FAULT_ENV] = '1:2';
    const lines: string[] = [];
    const skipped = await runCoordinator(cfg({ maxSteps: 2 }), { workers: 2, port: 0, checksumEvery: 1, log: (l) => lines.push(l) });
    expect(lines).toContain('step 2 skipped on every replica: non-finite gradient from rank(s) 1 (1 in a row)');
    // Step 2 was skipped, so the state after it is the state after step 1, bit for bit.
    expect(bytesOf(skipped.state.weights).equals(bytesOf(oneStep.state.weights))).toBe(true);
    expect(bytesOf(skipped.state.momentum).equals(bytesOf(oneStep.state.momentum))).toBe(true);
    // And training continues normally after it.
    process.env[FAULT_ENV] = '0:2';
    const full = await runCoordinator(cfg({}), { workers: 2, port: 0, checksumEvery: 1, log: (l) => lines.push(l) });
    expect(full.steps).toBe(4);
    expect(full.history[0].train_loss).toBeGreaterThan(0);
    expect(Number.isFinite(full.history[0].train_loss)).toBe(true);
    expect(full.state.weights.every(Number.isFinite)).toBe(true);
  }, 120_000);

  test('--max-bad-steps consecutive skips abort the run with a checkpoint', async () => {
    process.env[FAULT_ENV] = '0:1,0:2,1:2,0:3';
    const c = cfg({ maxBadSteps: 3 });
    const lines: string[] = [];
    await expect(runCoordinator(c, { workers: 2, port: 0, log: (l) => lines.push(l) }))
      .rejects.toThrow(/run aborted: 3 consecutive steps had non-finite gradients \(--max-bad-steps 3\); checkpoint written at step 3/);
    expect(lines).toContain('step 2 skipped on every replica: non-finite gradient from rank(s) 0, 1 (2 in a row)');
    expect((await listCheckpoints(c.out)).map((k) => k.step)).toEqual([3]);
  }, 60_000);
});
