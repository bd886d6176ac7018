// `tfjs-ddp export --format tfjs`: the LayersModel written to disk loads with
// tf.loadLayersModel and predicts what the trainer's own forward pass does
// (eval mode, running statistics), to 1e-4 relative on the cpu backend.
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { beforeAll, describe, expect, test } from 'vitest';
import { makeBatch, NORMALIZE } from '../src/common/data/augment.js';
import { initBackend } from '../src/common/backend/backend.js';
import { generateSynthetic } from '../src/common/data/synthetic.js';
import { runExport } from '../src/cli/commands/export.js';
import { buildLayersModel } from '../src/common/io/export/tfjs-layers-model.js';
import { directoryLoadHandler, directorySaveHandler } from '../src/common/io/export/tfjs-model-files.js';
import { buildModelSpec, initParams, initRunningStats, type ModelConfig } from '../src/common/model/spec.js';
import { Replica } from '../src/common/model/replica.js';
import { Rng } from '../src/common/data/rng.js';
import { readCheckpoint } from '../src/common/io/checkpoint.js';
import type { CheckpointMeta } from '../src/common/training/run-state.js';
import { relErr } from './helpers/golden.js';
import { trainSmallCheckpoint, type SmallCheckpoint } from './helpers/small-checkpoint.js';
import { makeTempDir } from './helpers/data-fixtures.js';

const TOL = 1e-4;

function predictLayers(model: tfl.LayersModel, x: Float32Array, shape: [number, number, number, number]): Float32Array {
  return tf.tidy(() => (model.predict(tf.tensor4d(x, shape)) as tf.Tensor).dataSync() as Float32Array);
}

describe('export --format tfjs', () => {
  let ckpt: SmallCheckpoint;
  beforeAll(async () => {
    ckpt = await trainSmallCheckpoint();
    await initBackend('cpu');
  });

  test('writes model.json and shards that tf.loadLayersModel reads, predicting as the trainer does', async () => {
    const out = makeTempDir('export-tfjs');
    const files = await runExport(ckpt.file, { format: 'tfjs', out }, () => {});
    expect(files.map((f) => path.basename(f))).toEqual(['group1-shard1of1.bin', 'model.json']);
    const json = JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8'));
    expect(json.format).toBe('layers-model');
    expect(json.weightsManifest[0].paths).toEqual(['group1-shard1of1.bin']);
    expect(fs.readdirSync(out).filter((f) => f.startsWith('.'))).toEqual([]); // no temp files left

    const loaded = await tfl.loadLayersModel(directoryLoadHandler(out));
    const { meta, tensors } = await readCheckpoint<CheckpointMeta>(ckpt.file);
    expect(meta.step).toBe(4);
    const test = generateSynthetic({ seed: 0, trainCount: 1, testCount: 16 }).test;
    const { x, y } = makeBatch(test, Array.from({ length: 16 }, (_, i) => i), { augment: false, seed: 0, epoch: 0, ...NORMALIZE });
    const replica = new Replica(ckpt.result.spec, tensors.weights);
    const ours = replica.logits({ x, y, count: 16 }, 'eval', tensors.running_stats);
    replica.dispose();
    const theirs = predictLayers(loaded, x, [16, 32, 32, 3]);
    expect(relErr(theirs, ours)).toBeLessThan(TOL);
    loaded.dispose();
  });

  test('a model over 4 MiB is split into shards that load back in order', async () => {
    const spec = buildModelSpec({ name: 'resnet18', width: 24, numClasses: 10, inChannels: 3, norm: 'batch' });
    const rng = new Rng(5);
    const weights = initParams(spec, () => rng.nextFloat());
    const stats = initRunningStats(spec);
    const out = makeTempDir('export-shards');
    const written: string[] = [];
    const model = buildLayersModel(spec, weights, stats);
    await model.save(directorySaveHandler(out, written));
    model.dispose();
    expect(written).toEqual(['group1-shard1of2.bin', 'group1-shard2of2.bin', 'model.json']);
    const loaded = await tfl.loadLayersModel(directoryLoadHandler(out));
    const x = Float32Array.from({ length: 32 * 32 * 3 }, () => rng.nextFloat() * 2 - 1);
    const replica = new Replica(spec, weights);
    const ours = replica.logits({ x, y: new Int32Array(1), count: 1 }, 'eval', stats);
    replica.dispose();
    expect(relErr(predictLayers(loaded, x, [1, 32, 32, 3]), ours)).toBeLessThan(TOL);
    loaded.dispose();
  });

  // Bottleneck blocks put the stride on the 3x3 conv; Fashion-MNIST models take one channel;
  // norm 'none' has no BatchNorm layers. Random running statistics make eval BatchNorm non-trivial.
  test.each<Partial<ModelConfig>>([
    { name: 'resnet50', inChannels: 3 },
    { name: 'resnet18', inChannels: 1 },
    { name: 'resnet34', norm: 'none' },
  ])('graph matches the trainer for %o', async (overrides) => {
    const spec = buildModelSpec({ name: 'resnet18', width: 4, numClasses: 10, inChannels: 3, norm: 'batch', ...overrides });
    const rng = new Rng(7);
    const weights = initParams(spec, () => rng.nextFloat());
    const stats = initRunningStats(spec);
    for (const bn of spec.batchNorms) {
      for (let c = 0; c < bn.channels; c++) {
        stats[bn.offset + c] = rng.nextFloat() - 0.5;
        stats[bn.offset + bn.channels + c] = 0.5 + rng.nextFloat();
      }
    }
    const n = 4;
    const c = spec.config.inChannels;
    const x = Float32Array.from({ length: n * 32 * 32 * c }, () => rng.nextFloat() * 2 - 1);
    const replica = new Replica(spec, weights);
    const ours = replica.logits({ x, y: new Int32Array(n), count: n }, 'eval', stats);
    replica.dispose();

    const out = makeTempDir('export-graph');
    const model = buildLayersModel(spec, weights, stats);
    await model.save(directorySaveHandler(out));
    model.dispose();
    const loaded = await tfl.loadLayersModel(directoryLoadHandler(out));
    expect(relErr(predictLayers(loaded, x, [n, 32, 32, c]), ours)).toBeLessThan(TOL);
    loaded.dispose();
  });
});
