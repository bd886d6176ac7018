// `tfjs-ddp export --format safetensors` writes the seed model's state_dict
// (names, PyTorch layouts, dtypes of the golden PyTorch fixture), and
// `tfjs-ddp import` turns it back into an identical checkpoint.
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { runExport, SAFETENSORS_NAME } from '../src/cli/commands/export.js';
import { runImport } from '../src/cli/commands/import.js';
import { readCheckpoint } from '../src/common/io/checkpoint.js';
import { toTorch } from '../src/common/model/torch-layout.js';
import { readSafetensors } from '../src/common/io/safetensors.js';
import type { CheckpointMeta } from '../src/common/training/run-state.js';
import { loadGolden } from './helpers/golden.js';
import { trainSmallCheckpoint, type SmallCheckpoint } from './helpers/small-checkpoint.js';
import { makeTempDir } from './helpers/data-fixtures.js';

describe('export --format safetensors', () => {
  let ckpt: SmallCheckpoint;
  let exported: string;
  beforeAll(async () => {
    ckpt = await trainSmallCheckpoint();
    [exported] = await runExport(ckpt.file, { format: 'safetensors', out: makeTempDir('export-st') }, () => {});
  });

  test('has exactly the names, shapes and dtypes of the PyTorch state_dict in the golden fixture', () => {
    expect(path.basename(exported)).toBe(SAFETENSORS_NAME);
    const ours = readSafetensors(fs.readFileSync(exported)).tensors;
    const torch = new Map([...loadGolden('resnet18').file.tensors].filter(([k]) => k.startsWith('init/')).map(([k, t]) => [k.slice(5), t]));
    expect(torch.size).toBe(122);
    expect([...ours.keys()].sort()).toEqual([...torch.keys()].sort());
    for (const [name, t] of torch) {
      const mine = ours.get(name)!;
      expect(mine.dtype, name).toBe(t.dtype);
      // The fixture stores num_batches_tracked as [1]; PyTorch's state_dict holds a 0-d
      // tensor, and load_state_dict accepts either, so we write the true 0-d shape.
      expect(mine.shape, name).toEqual(name.endsWith('num_batches_tracked') ? [] : t.shape);
    }
  });

  test('holds the checkpoint values in PyTorch layout, num_batches_tracked = steps', async () => {
    const file = readSafetensors(fs.readFileSync(exported));
    const { meta, tensors } = await readCheckpoint<CheckpointMeta>(ckpt.file);
    const spec = ckpt.result.spec;
    for (const p of spec.params) {
      expect(file.tensors.get(p.name)!.data, p.name).toEqual(toTorch(p, tensors.weights.subarray(p.offset, p.offset + p.size)));
    }
    const bn = spec.batchNorms[3];
    expect(file.tensors.get(`${bn.name}.running_var`)!.data).toEqual(tensors.running_stats.slice(bn.offset + bn.channels, bn.offset + 2 * bn.channels));
    for (const b of spec.batchNorms) expect((file.tensors.get(`${b.name}.num_batches_tracked`)!.data as BigInt64Array)[0]).toBe(BigInt(meta.step));
    expect(meta.step).toBe(4);
    expect(file.metadata).toMatchObject({ format: 'pt', model: 'resnet18', width: '4', dataset: 'synthetic', step: '4' });
  });

  test('import gives back identical weights and running statistics, zero momentum, the step count', async () => {
    const out = makeTempDir('import-rt');
    const written = await runImport(exported, { out }, () => {});
    expect(path.basename(written)).toBe('ckpt-e0000-s000004.safetensors');
    const before = await readCheckpoint<CheckpointMeta>(ckpt.file);
    const after = await readCheckpoint<CheckpointMeta>(written);
    expect(Buffer.from(after.tensors.weights.buffer, after.tensors.weights.byteOffset, after.tensors.weights.byteLength))
      .toEqual(Buffer.from(before.tensors.weights.buffer, before.tensors.weights.byteOffset, before.tensors.weights.byteLength));
    expect(after.tensors.running_stats).toEqual(before.tensors.running_stats);
    expect(after.tensors.momentum.every((v) => v === 0)).toBe(true);
    expect(after.meta).toMatchObject({ step: 4, epoch: 0, stepInEpoch: 0, history: [], paramCount: ckpt.result.spec.paramCount });
    // Model, width and norm come from the shapes, the dataset from the export's metadata.
    expect(after.meta.config).toMatchObject({ model: 'resnet18', width: 4, norm: 'batch', dataset: 'synthetic', out });
  });
});
