// End-to-end single-process training on real (generated) data, real files,
// a real piscina pool: outputs, resume equivalence, and tensor leaks.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { PNG } from 'pngjs';
import { DEFAULTS, type TrainConfig } from '../src/common/training/config.js';
import { train } from '../src/common/training/single-process.js';
import { initBackend } from '../src/common/backend/backend.js';
import { buildModelSpec, initParams, initRunningStats } from '../src/common/model/spec.js';
import { Replica } from '../src/common/model/replica.js';
import { sgdStep, updateRunningStats } from '../src/common/optim/sgd.js';
import { readMetrics } from '../src/common/io/metrics.js';
import { listCheckpoints } from '../src/common/io/checkpoint.js';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-train-'));
const quiet = { log: () => {} };

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
      expect(m.train_loss).toBeGreaterThan(0);
      expect(m.test_acc).toBeGreaterThanOrEqual(0);
    }
    expect(metrics[1].lr).toBeCloseTo(0.1 * (1 + Math.cos(Math.PI / 60)) / 2, 10);
    for (const file of ['curves.png', 'samples.png']) {
      const png = PNG.sync.read(fs.readFileSync(path.join(out, file)));
      expect(png.width).toBeGreaterThan(100);
    }
    const ckpts = await listCheckpoints(out);
    expect(ckpts.map((c) => c.step)).toEqual([8, 4]);
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
    expect(Buffer.from(resumed.state.weights.buffer).equals(Buffer.from(full.state.weights.buffer))).toBe(true);
    expect(Buffer.from(resumed.state.momentum.buffer).equals(Buffer.from(full.state.momentum.buffer))).toBe(true);
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

describe.each(['cpu', 'wasm'] as const)('tensor memory on %s', (backend) => {
  test('numTensors after step 3 equals numTensors after step 30', async () => {
    await initBackend(backend);
    const spec = buildModelSpec({ name: 'resnet18', width: 2, numClasses: 10, inChannels: 3, norm: 'batch' });
    let seed = 1;
    const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const weights = initParams(spec, rand);
    const momentum = new Float32Array(spec.paramCount);
    const running = initRunningStats(spec);
    const replica = new Replica(spec, weights);
    const grad = new Float32Array(spec.paramCount);
    const batch = { x: Float32Array.from({ length: 4 * 32 * 32 * 3 }, () => rand() * 2 - 1), y: Int32Array.from([1, 2, 3, 4]), count: 4 };
    const counts: number[] = [];
    for (let step = 1; step <= 30; step++) {
      const res = replica.computeGradients(batch, 1 / 4, grad);
      sgdStep(weights, grad, momentum, { lr: 0.01, momentum: 0.9, weightDecay: 5e-4 }, step === 1);
      updateRunningStats(running, res.batchStats!);
      replica.setWeights(weights);
      replica.evaluate(batch, running);
      counts.push(tf.memory().numTensors);
    }
    expect(counts[29]).toBe(counts[2]);
    replica.dispose();
  });
});
