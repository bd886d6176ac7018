// End-to-end single-process training on real (generated) data, real files,
// a real piscina pool: outputs, agreement with the recipe recomputed by hand,
// and resume equivalence. (Tensor leaks per step: step.test.ts.)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { PNG } from 'pngjs';
import { DEFAULTS, type TrainConfig } from '../src/common/training/config.js';
import { train } from '../src/common/training/single-process.js';
import { freshState, modelSpecFor } from '../src/common/training/run-state.js';
import { evaluateRange } from '../src/common/training/evaluation.js';
import { initBackend } from '../src/common/backend/backend.js';
import { Replica } from '../src/common/model/replica.js';
import { sgdStep, updateRunningStats } from '../src/common/optim/sgd.js';
import { learningRate } from '../src/common/optim/schedule.js';
import { loadDataset } from '../src/common/data/load-dataset.js';
import { globalBatches } from '../src/common/data/sampler.js';
import { makeBatch, NORMALIZE } from '../src/common/data/augment.js';
import { readMetrics } from '../src/common/io/metrics.js';
import { listCheckpoints } from '../src/common/io/checkpoint.js';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-train-'));
const quiet = { log: () => {} };
const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

function tinyConfig(out: string, extra: Partial<TrainConfig> = {}): TrainConfig {
  return {
    ...DEFAULTS, model: 'resnet18', width: 4, dataset: 'synthetic', trainLimit: 64, testLimit: 40,
    epochs: 2, batchSize: 16, backend: 'wasm', out, loaderThreads: 1, ...extra,
  };
}

describe('single-process training', () => {
  test('writes metrics.jsonl, plots and checkpoints', async () => {
    const out = tmp();
    const result = await train(tinyConfig(out), quiet);
    expect(result.history).toHaveLength(2);
    const metrics = await readMetrics(path.join(out, 'metrics.jsonl'));
    expect(metrics.map((m) => m.epoch)).toEqual([1, 2]);
    for (const m of metrics) {
      expect(Object.keys(m).sort()).toEqual(['epoch', 'images_per_s', 'lr', 'seconds', 'test_acc', 'test_loss', 'train_acc', 'train_images', 'train_loss', 'workers'].sort());
      expect(m.workers).toBe(1);
      // Every training image once per epoch; accuracies are whole counts of images.
      expect(m.train_images).toBe(64);
      expect(m.train_acc * 64).toBeCloseTo(Math.round(m.train_acc * 64), 9);
      expect(m.test_acc * 40).toBeCloseTo(Math.round(m.test_acc * 40), 9);
      // A barely trained 10-class model is near chance: cross-entropy near ln 10.
      expect(Math.abs(m.train_loss - Math.log(10))).toBeLessThan(0.5);
      expect(Math.abs(m.test_loss - Math.log(10))).toBeLessThan(0.5);
    }
    expect(metrics[0].lr).toBe(0.1);
    expect(metrics[1].lr).toBeCloseTo(0.1 * (1 + Math.cos(Math.PI / 60)) / 2, 10);
    for (const file of ['curves.png', 'samples.png']) {
      const png = PNG.sync.read(fs.readFileSync(path.join(out, file)));
      expect(png.width).toBeGreaterThan(100);
    }
    const ckpts = await listCheckpoints(out);
    expect(ckpts.map((c) => c.step)).toEqual([8, 4]);
  });

  test('every metric and the final weights equal the recipe recomputed by hand from the plain pieces', async () => {
    const cfg = tinyConfig(tmp(), { plots: false });
    const result = await train(cfg, quiet);
    // By hand: the same global batches and augmentation, then the gradient, SGD, statistics and upload of each step.
    await initBackend(cfg.backend);
    const data = await loadDataset({ name: 'synthetic', trainLimit: 64, testLimit: 40, seed: cfg.seed });
    const spec = modelSpecFor(cfg, data);
    const state = freshState(cfg, spec);
    const replica = new Replica(spec, state.weights);
    const grad = new Float32Array(spec.paramCount);
    for (let epoch = 0; epoch < 2; epoch++) {
      let lossSum = 0;
      let correct = 0;
      for (const [i, indices] of globalBatches(64, 16, cfg.seed, epoch, { shuffle: true }).entries()) {
        const batch = makeBatch(data.train, indices, { augment: true, seed: cfg.seed, epoch, ...NORMALIZE });
        const r = replica.computeGradients({ ...batch, count: indices.length }, 1 / indices.length, grad);
        const lr = learningRate(epoch, i, 4, { lr: cfg.lr, tMax: cfg.tMax });
        sgdStep(state.weights, grad, state.momentum, { lr, momentum: cfg.momentum, weightDecay: cfg.weightDecay }, state.step === 0);
        updateRunningStats(state.runningStats, r.batchStats!);
        replica.setWeights(state.weights);
        state.step++;
        lossSum += r.lossSum;
        correct += r.correct;
      }
      const test = evaluateRange(replica, data.test, state.runningStats, cfg.batchSize);
      expect(result.history[epoch]).toMatchObject({
        train_loss: lossSum / 64, train_acc: correct / 64, test_loss: test.lossSum / 40, test_acc: test.correct / 40,
      });
    }
    replica.dispose();
    expect(result.state.step).toBe(8);
    for (const key of ['weights', 'momentum', 'runningStats'] as const) {
      expect(bytesOf(result.state[key]).equals(bytesOf(state[key]))).toBe(true);
    }
  });

  test('a run stopped mid-epoch and resumed ends exactly like an uninterrupted run', async () => {
    const full = await train(tinyConfig(tmp()), quiet);
    const out = tmp();
    // 4 steps per epoch: stop inside epoch 2 (step 6), with a mid-epoch checkpoint at step 3.
    const first = await train(tinyConfig(out, { maxSteps: 6, checkpointEvery: 3 }), quiet);
    expect(first.history).toHaveLength(1);
    expect(first.state.step).toBe(6);
    const resumed = await train(tinyConfig(out, { resume: true }), quiet);
    expect(resumed.state.step).toBe(8);
    expect(bytesOf(resumed.state.weights).equals(bytesOf(full.state.weights))).toBe(true);
    expect(bytesOf(resumed.state.momentum).equals(bytesOf(full.state.momentum))).toBe(true);
    const strip = (ms: typeof full.history) => ms.map(({ seconds, images_per_s, ...rest }) => rest);
    expect(strip(resumed.history)).toEqual(strip(full.history));
    expect(strip(await readMetrics(path.join(out, 'metrics.jsonl')))).toEqual(strip(full.history));
  });

  test('resume refuses a checkpoint of another model with a clear message', async () => {
    const out = tmp();
    await train(tinyConfig(out, { epochs: 1 }), quiet);
    await expect(train(tinyConfig(out, { resume: true, width: 8 }), quiet)).rejects.toThrow(/--width 4, this run has 8/);
  });

  test('resume without checkpoints says so', async () => {
    await expect(train(tinyConfig(tmp(), { resume: true }), quiet)).rejects.toThrow(/no checkpoints found/);
  });
});
