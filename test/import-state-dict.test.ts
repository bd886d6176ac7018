// `tfjs-ddp import`: a state_dict written by PyTorch (the golden fixture)
// becomes a checkpoint whose eval-mode logits are PyTorch's, with the
// architecture read from the shapes; wrong input gets one clear error.
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { runImport } from '../src/cli/commands/import.js';
import { initBackend } from '../src/common/backend/backend.js';
import { readCheckpoint } from '../src/common/io/checkpoint.js';
import { UsageError } from '../src/common/cli/run-main.js';
import { stateDictTensors } from '../src/common/io/export/torch-state-dict.js';
import { buildModelSpec, initParams, initRunningStats } from '../src/common/model/spec.js';
import { Replica } from '../src/common/model/replica.js';
import { Rng } from '../src/common/data/rng.js';
import { encodeSafetensors } from '../src/common/io/safetensors.js';
import type { CheckpointMeta } from '../src/common/training/run-state.js';
import { GOLDEN_DIR, loadGolden, relErr } from './helpers/golden.js';
import { makeTempDir } from './helpers/data-fixtures.js';

const FIXTURE = path.join(GOLDEN_DIR, 'resnet18-w4.safetensors');
const quiet = () => {};

describe('import', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  test("a PyTorch state_dict imports with PyTorch's eval-mode logits", async () => {
    const out = makeTempDir('import-golden');
    const file = await runImport(FIXTURE, { out, prefix: 'step2/', dataset: 'cifar10' }, quiet);
    // Two SGD steps were taken, and num_batches_tracked counted them.
    expect(path.basename(file)).toBe('ckpt-e0000-s000002.safetensors');
    const { meta, tensors } = await readCheckpoint<CheckpointMeta>(file);
    expect(meta.config).toMatchObject({ model: 'resnet18', width: 4, norm: 'batch', dataset: 'cifar10' });
    const g = loadGolden('resnet18');
    const replica = new Replica(g.spec, tensors.weights);
    const logits = replica.logits({ x: g.inputNhwc, y: g.labels, count: g.batch }, 'eval', tensors.running_stats);
    replica.dispose();
    expect(relErr(logits, g.f32('eval_logits'))).toBeLessThan(1e-4);
  });

  test('infers a 1-channel model as Fashion-MNIST, and a state_dict without BatchNorm', async () => {
    const spec = buildModelSpec({ name: 'resnet34', width: 2, numClasses: 10, inChannels: 1, norm: 'none' });
    const rng = new Rng(3);
    const weights = initParams(spec, () => rng.nextFloat());
    const src = path.join(makeTempDir('import-gray'), 'sd.safetensors');
    fs.writeFileSync(src, encodeSafetensors(stateDictTensors(spec, { weights, runningStats: initRunningStats(spec), numBatchesTracked: 0 })));
    const file = await runImport(src, { out: makeTempDir('import-gray-out') }, quiet);
    const { meta, tensors } = await readCheckpoint<CheckpointMeta>(file);
    expect(meta.config).toMatchObject({ model: 'resnet34', width: 2, norm: 'none', dataset: 'fashion-mnist' });
    expect(meta.step).toBe(0);
    expect(tensors.weights).toEqual(weights);
  });

  test.each([
    [{ prefix: 'init/' }, UsageError, /pass --dataset cifar10 or --dataset synthetic/],
    [{ prefix: 'init/', dataset: 'cifar10', model: 'resnet50' }, UsageError, /not a resnet50 width 4 state_dict: missing layer1\.0\.conv3\.weight.* and \d+ more; check --model/],
    [{ prefix: 'init/', dataset: 'cifar10', width: 8 }, UsageError, /--width 8 does not match the file: .* the width is 4/],
    [{ prefix: 'init/', dataset: 'fashion-mnist' }, UsageError, /3-channel images .* fashion-mnist has 1 channel/],
    [{ dataset: 'cifar10' }, Error, /no conv1\.weight: .*keys start .*pass --prefix/],
  ] as const)('rejects %o with a message naming the fix', async (opts, kind, message) => {
    const err = await runImport(FIXTURE, { out: makeTempDir('import-bad'), ...opts }, quiet).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(kind);
    expect((err as Error).message).toMatch(message);
  });

  test('refuses a directory that already holds checkpoints, and truncated or missing files', async () => {
    const out = makeTempDir('import-twice');
    await runImport(FIXTURE, { out, prefix: 'init/', dataset: 'synthetic' }, quiet);
    await expect(runImport(FIXTURE, { out, prefix: 'init/', dataset: 'synthetic' }, quiet)).rejects.toThrow(/already holds checkpoints .*choose an empty --out/);

    const cut = path.join(makeTempDir('import-cut'), 'cut.safetensors');
    fs.writeFileSync(cut, fs.readFileSync(FIXTURE).subarray(0, 5000));
    await expect(runImport(cut, { out: makeTempDir('import-cut-out') }, quiet)).rejects.toThrow(/cannot import .*cut\.safetensors: header claims .*; the file is incomplete .*copy it again/);
    await expect(runImport('/nonexistent/x.safetensors', { out: makeTempDir('import-none') }, quiet)).rejects.toThrow(/no such file; pass a \.safetensors/);
  });
});
