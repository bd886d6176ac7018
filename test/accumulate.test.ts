// Gradient accumulation (--accumulate K, training/micro-batches.ts and
// step.ts): the cut into micro-batches; a gradient read that adds (every
// transfer mode, the taps too); one rank with K micro-batches takes the step
// of one rank with the whole batch; and through the coordinator, N workers x
// K micro-batches end where one worker with the whole global batch ends,
// with the buckets reduced during backward and with one all-reduce after it.
// Without BatchNorm these agree to rounding (the sums are taken in another
// order); with it, a run completes and its replicas agree (checksums).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/common/backend/backend.js';
import { buildModelSpec, initParams, initRunningStats, type ModelSpec } from '../src/common/model/spec.js';
import { Replica } from '../src/common/model/replica.js';
import { microBatches } from '../src/common/training/micro-batches.js';
import { TrainStep } from '../src/common/training/step.js';
import { ReplicaState } from '../src/worker/replica-state.js';
import { DEFAULTS, type TrainConfig } from '../src/common/training/config.js';
import { train } from '../src/common/training/single-process.js';
import { runCoordinator } from '../src/coordinator/coordinator.js';
import { relativeError } from './helpers/compare.js';
import { lcg, randomBatch } from './helpers/random-batch.js';

const HYPER = { momentum: 0.9, weightDecay: 5e-4 };
const PX = 32 * 32 * 3;
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-accumulate-'));
const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);



const tiny = (norm: 'none' | 'batch'): ModelSpec => buildModelSpec({ name: 'resnet18', width: 2, numClasses: 10, inChannels: 3, norm });
const stateOf = (spec: ModelSpec) =>
  new ReplicaState({ weights: initParams(spec, lcg(7)), momentum: new Float32Array(spec.paramCount), runningStats: initRunningStats(spec), step: 0 });

function config(overrides: Partial<TrainConfig>): TrainConfig {
  return {
    ...DEFAULTS, model: 'resnet18', width: 2, dataset: 'synthetic', backend: 'cpu', norm: 'none',
    trainLimit: 24, testLimit: 8, batchSize: 8, epochs: 1, maxSteps: 3, seed: 5, plots: false, loaderThreads: 1,
    bucketMb: 0.02, out: tmp(), ...overrides,
  };
}

beforeAll(async () => {
  await initBackend('cpu');
});

describe('micro-batches', () => {
  test('consecutive views, as even as possible, the first ones larger; more pieces than images leaves empty ones', () => {
    const b = randomBatch(7, 1);
    const pieces = microBatches(b, 3);
    expect(pieces.map((p) => p.count)).toEqual([3, 2, 2]);
    expect(pieces.map((p) => p.x.length)).toEqual([3 * PX, 2 * PX, 2 * PX]);
    expect(pieces[1].x.buffer).toBe(b.x.buffer);
    expect(Array.from(pieces[2].y)).toEqual(Array.from(b.y.subarray(5)));
    expect(pieces[2].x[0]).toBe(b.x[5 * PX]);
    expect(microBatches(b, 1)[0]).toBe(b);
    expect(microBatches(randomBatch(2, 1), 4).map((p) => p.count)).toEqual([1, 1, 0, 0]);
    expect(microBatches({ x: new Float32Array(0), y: new Int32Array(0), count: 0 }, 2).map((p) => p.count)).toEqual([0, 0]);
    expect(() => microBatches(b, 0)).toThrow(/positive integer/);
    expect(() => new TrainStep(new Replica(tiny('none'), stateOf(tiny('none')).weights), stateOf(tiny('none')), { hyper: HYPER, accumulate: 1.5 }))
      .toThrow(/accumulate must be a positive integer/);
  });
});

describe('a gradient read that adds', () => {
  test('per-tensor, one-tensor and the taps: the second read adds (g + g = 2g exactly), an empty batch adds nothing', () => {
    const spec = tiny('none');
    const weights = initParams(spec, lcg(3));
    const b = randomBatch(2, 4);
    for (const transfer of ['per-tensor', 'one-tensor'] as const) {
      const replica = new Replica(spec, weights, [32, 32, 3], { transfer, reluGradient: 'step' });
      for (const taps of [false, true]) {
        const tapped = taps ? () => {} : undefined;
        const once = new Float32Array(spec.paramCount).fill(5);
        replica.computeGradients(b, 0.25, once, tapped);
        const twice = once.slice();
        const before = tf.memory().numTensors;
        replica.computeGradients(b, 0.25, twice, tapped, true);
        replica.computeGradients({ x: new Float32Array(0), y: new Int32Array(0), count: 0 }, 0.25, twice, tapped, true);
        expect(tf.memory().numTensors).toBe(before);
        expect(once.some((g) => g !== 0)).toBe(true);
        expect(bytesOf(twice).equals(bytesOf(once.map((g) => 2 * g))), `${transfer}, taps ${taps}`).toBe(true);
      }
      replica.dispose();
    }
  });
});

describe('one rank', () => {
  test('K = 3 micro-batches take the step of the whole batch (without BatchNorm, to 1e-5), and the report sums them', () => {
    return (async () => {
      const spec = tiny('none');
      const run = async (accumulate: number | undefined) => {
        const state = stateOf(spec);
        const replica = new Replica(spec, state.weights, [32, 32, 3]);
        const step = new TrainStep(replica, state, { hyper: HYPER, accumulate });
        const reports = [await step.run(randomBatch(8, 11), 8, 0.05), await step.run(randomBatch(8, 12), 8, 0.05)];
        replica.dispose();
        return { state, reports };
      };
      const whole = await run(undefined);
      const three = await run(3);
      expect(relativeError(three.state.weights, whole.state.weights)).toBeLessThan(1e-5);
      expect(relativeError(three.state.momentum, whole.state.momentum)).toBeLessThan(1e-5);
      expect(relativeError(whole.state.weights, stateOf(spec).weights)).toBeGreaterThan(1e-4);
      three.reports.forEach((r, i) => {
        expect(r.count).toBe(8);
        expect(r.correct).toBe(whole.reports[i].correct);
        expect(r.lossSum).toBeCloseTo(whole.reports[i].lossSum, 4);
        expect(r.skipped).toBe(false);
      });
    })();
  });

  test('the single-process trainer: accumulate 10 (two of the micro-batches empty) equals accumulate 1', async () => {
    const cfg = config({ maxSteps: 2 });
    const reference = await train({ ...cfg, out: tmp() }, { log: () => {} });
    for (const accumulate of [10]) {
      const accumulated = await train({ ...cfg, accumulate, out: tmp() }, { log: () => {} });
      expect(accumulated.state.step).toBe(2);
      expect(relativeError(accumulated.state.weights, reference.state.weights), `accumulate ${accumulate}`).toBeLessThan(1e-5);
    }
  }, 60_000);
});

describe('through the coordinator', () => {
  test('without BatchNorm, 2 workers x 2 micro-batches end within 1e-5 of 1 worker, with and without overlap', async () => {
    const reference = await runCoordinator(config({}), { workers: 1, port: 0 });
    expect(reference.steps).toBe(3);
    for (const overlap of [true, false]) {
      const two = await runCoordinator(config({ accumulate: 2, overlap }), { workers: 2, port: 0, checksumEvery: 1 });
      expect(two.steps).toBe(3);
      expect(relativeError(two.state.weights, reference.state.weights), `overlap ${overlap}`).toBeLessThan(1e-5);
      expect(relativeError(two.state.momentum, reference.state.momentum), `overlap ${overlap}`).toBeLessThan(1e-5);
    }
  }, 120_000);

  test('with BatchNorm, accumulate 2 completes with agreeing checksums and finite statistics that moved', async () => {
    const cfg = config({ norm: 'batch', accumulate: 2 });
    const lines: string[] = [];
    const two = await runCoordinator(cfg, { workers: 2, port: 0, checksumEvery: 1, log: (l) => lines.push(l) });
    expect(two.steps).toBe(3);
    expect(two.state.runningStats.every(Number.isFinite)).toBe(true);
    // The running statistics start at mean 0, variance 1; the steps' updates moved them.
    const initial = initRunningStats(buildModelSpec({ name: 'resnet18', width: 2, numClasses: 10, inChannels: 3, norm: 'batch' }));
    expect(two.state.runningStats.length).toBe(initial.length);
    expect(bytesOf(two.state.runningStats).equals(bytesOf(initial))).toBe(false);
    expect(lines.some((l) => /mismatch/i.test(l))).toBe(false);
  }, 120_000);
});
