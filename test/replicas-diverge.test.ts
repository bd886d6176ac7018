// Replicas that stop being identical end the run, naming the ranks, at each
// of the three places the coordinator compares them: the weight checksums of
// every --checksum-every steps, the full checksums of a snapshot, and the
// survivors' checksums at a group change. The divergence is real:
// TFJS_DDP_DIVERGE_AT=rank:step makes that rank nudge one of its weights
// after applying that step (src/worker/group-session.ts), as a
// nondeterministic kernel or a flipped bit would.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { DEFAULTS, type TrainConfig } from '../src/common/training/config.js';
import { runCoordinator } from '../src/coordinator/coordinator.js';

const DIVERGE_ENV = 'TFJS_DDP_DIVERGE_AT';
const CUT_LINKS_ENV = 'TFJS_DDP_CUT_LINKS_AT';

// 48 images in batches of 12: 4 steps per epoch.
const cfg = (extra: Partial<TrainConfig> = {}): TrainConfig => ({
  ...DEFAULTS, model: 'resnet18', width: 2, norm: 'none', dataset: 'synthetic', backend: 'cpu', trainLimit: 48, testLimit: 12,
  batchSize: 12, epochs: 1, seed: 5, plots: false, out: fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-diverge-')), ...extra,
});
const quiet = () => {};

afterEach(() => {
  delete process.env[DIVERGE_ENV];
  delete process.env[CUT_LINKS_ENV];
});

describe('diverged replicas', () => {
  test('the step checksums catch it at the next --checksum-every step', async () => {
    // Step 1 is checked and passes; rank 1 nudges its weights after step 2.
    process.env[DIVERGE_ENV] = '1:2';
    await expect(runCoordinator(cfg(), { workers: 2, port: 0, checksumEvery: 1, log: quiet }))
      .rejects.toThrow(/^run aborted: replica weights diverged at step 2: rank\(s\) 1 differ from rank 0 \(rank 0: [0-9a-f]{16}, rank 1: [0-9a-f]{16}\)$/);
  }, 120_000);

  test('a snapshot catches it when no step checksum falls in between', async () => {
    process.env[DIVERGE_ENV] = '1:1';
    await expect(runCoordinator(cfg({ maxSteps: 2 }), { workers: 2, port: 0, checksumEvery: 1000, log: quiet }))
      .rejects.toThrow(/^run aborted: replica weights diverged at step 2: rank\(s\) 1 differ from rank 0 /);
  }, 120_000);

  test('a group change catches it: the survivors must agree before they go on', async () => {
    // Every worker cuts its all-reduce links before step 2, so the group is
    // halted at step 1 and both survivors report their checksums.
    process.env[DIVERGE_ENV] = '1:1';
    process.env[CUT_LINKS_ENV] = '2';
    await expect(runCoordinator(cfg(), { workers: 2, port: 0, checksumEvery: 1000, log: quiet }))
      .rejects.toThrow(/^run aborted: replica weights diverged at step 1: rank 1 \(worker [^)]+\) differ from rank 0 \(worker [^)]+\)$/);
  }, 120_000);
});
