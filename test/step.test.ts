// One optimizer step (src/common/training/step.ts), for real on the cpu
// backend with a tiny ResNet18 (width 2, batches of a few images): the exchange is the only
// difference between one worker and N, a non-finite gradient changes
// nothing, the hooks run where the distributed worker needs them, and no
// tensor is left behind.
import { beforeAll, describe, expect, test } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/common/backend/backend.js';
import { buildModelSpec, initParams, initRunningStats, type ModelSpec, type NormKind } from '../src/common/model/spec.js';
import { Replica, type Batch } from '../src/common/model/replica.js';
import { sgdStep, updateRunningStats } from '../src/common/optim/sgd.js';
import { BadSteps, TrainStep, type GradientExchange } from '../src/common/training/step.js';
import { ReplicaState } from '../src/worker/replica-state.js';
import { createMemoryRing, RingAllReducer } from '../src/common/allreduce/index.js';

const SIDE = 32;
const HYPER = { momentum: 0.9, weightDecay: 5e-4 };
const LR = 0.05;

const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const sameBytes = (a: Float32Array, b: Float32Array) => bytesOf(a).equals(bytesOf(b));

function lcg(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 16807) % 2147483647) / 2147483647;
}

function tinyModel(norm: NormKind): ModelSpec {
  return buildModelSpec({ name: 'resnet18', width: 2, numClasses: 10, inChannels: 3, norm });
}

// The worker's state: weights and momentum in the optimizer's buffers, readable as arrays.
function stateOf(spec: ModelSpec, seed = 1): ReplicaState {
  const rand = lcg(seed);
  return new ReplicaState({ weights: initParams(spec, rand), momentum: new Float32Array(spec.paramCount), runningStats: initRunningStats(spec), step: 0 });
}

function copyOf(s: ReplicaState): ReplicaState {
  return new ReplicaState(s);
}

function batchOf(count: number, seed: number): Batch {
  const rand = lcg(seed);
  return {
    x: Float32Array.from({ length: count * SIDE * SIDE * 3 }, () => rand() * 2 - 1),
    y: Int32Array.from({ length: count }, (_, i) => (i * 7 + seed) % 10),
    count,
  };
}

/** The images [from, to) of a batch: one rank's shard. */
function shardOf(b: Batch, from: number, to: number): Batch {
  const px = SIDE * SIDE * 3;
  return { x: b.x.slice(from * px, to * px), y: b.y.slice(from, to), count: to - from };
}

const replicaFor = (spec: ModelSpec, s: ReplicaState) => new Replica(spec, s.weights, [SIDE, SIDE, 3]);

beforeAll(async () => {
  await initBackend('cpu');
});

describe('one optimizer step', () => {
  test('with an exchange it is the no-exchange step on the summed gradient, and exactly SGD + statistics + upload', async () => {
    const spec = tinyModel('batch');
    const start = stateOf(spec);
    const mine = batchOf(2, 11);
    // The other rank's gradient, as an exchange would add it.
    const other = new Float32Array(spec.paramCount);
    const probe = replicaFor(spec, start);
    probe.computeGradients(batchOf(2, 12), 1 / 4, other);
    const exchange: GradientExchange = {
      allReduce: async (grad) => {
        for (let i = 0; i < grad.length; i++) grad[i] = Math.fround(grad[i] + other[i]);
      },
    };

    const withExchange = copyOf(start);
    const a = replicaFor(spec, withExchange);
    const ra = await new TrainStep(a, withExchange, { hyper: HYPER, exchange }).run(mine, 4, LR);

    // No exchange, but a replica whose gradient already is the sum.
    const alone = copyOf(start);
    const real = replicaFor(spec, alone);
    const summing = {
      computeGradients: (b: Batch, scale: number, out: Float32Array) => {
        const res = real.computeGradients(b, scale, out);
        for (let i = 0; i < out.length; i++) out[i] = Math.fround(out[i] + other[i]);
        return res;
      },
      setWeights: (w: Float32Array) => real.setWeights(w),
    };
    const rb = await new TrainStep(summing, alone, { hyper: HYPER }).run(mine, 4, LR);

    for (const key of ['weights', 'momentum', 'runningStats'] as const) expect(sameBytes(withExchange[key], alone[key])).toBe(true);
    expect([ra.lossSum, ra.correct, ra.count, ra.skipped]).toEqual([rb.lossSum, rb.correct, rb.count, false]);

    // And by hand: the first step's SGD on the sum, this replica's own batch statistics, then the upload.
    const byHand = copyOf(start);
    const grad = new Float32Array(spec.paramCount);
    const res = probe.computeGradients(mine, 1 / 4, grad);
    for (let i = 0; i < grad.length; i++) grad[i] = Math.fround(grad[i] + other[i]);
    sgdStep(byHand.weights, grad, byHand.momentum, { lr: LR, ...HYPER }, true);
    updateRunningStats(byHand.runningStats, res.batchStats!);
    for (const key of ['weights', 'momentum', 'runningStats'] as const) expect(sameBytes(withExchange[key], byHand[key])).toBe(true);
    expect(withExchange.step).toBe(1);
    expect(sameBytes(a.getWeights(), withExchange.weights)).toBe(true);
    expect(ra.count).toBe(2);
    expect(ra.gradMs).toBeGreaterThan(0);
    expect(ra.stepMs).toBeGreaterThanOrEqual(ra.gradMs + ra.reduceMs);
    for (const r of [probe, a, real]) r.dispose();
  });

  test('two ranks over a real ring all-reduce stay bit-identical and take the one-process step on the whole batch', async () => {
    const spec = tinyModel('none');
    const start = stateOf(spec, 2);
    const whole = batchOf(4, 21);
    const reducers = createMemoryRing(2).map((links) => new RingAllReducer(links, { chunkElements: 257 }));
    const ranks = reducers.map((reducer) => {
      const state = copyOf(start);
      let seq = 0;
      const step = new TrainStep(replicaFor(spec, state), state, { hyper: HYPER, exchange: { allReduce: (g) => reducer.allReduceSum(g, seq++) } });
      return { state, step };
    });
    const single = copyOf(start);
    const singleStep = new TrainStep(replicaFor(spec, single), single, { hyper: HYPER });
    for (let s = 0; s < 2; s++) {
      await Promise.all([ranks[0].step.run(shardOf(whole, 0, 2), 4, LR), ranks[1].step.run(shardOf(whole, 2, 4), 4, LR)]);
      await singleStep.run(whole, 4, LR);
    }
    expect(sameBytes(ranks[0].state.weights, ranks[1].state.weights)).toBe(true);
    expect(sameBytes(ranks[0].state.momentum, ranks[1].state.momentum)).toBe(true);
    // The sum of the two halves is the whole batch's gradient up to float rounding.
    let diff = 0;
    let moved = 0;
    for (let i = 0; i < spec.paramCount; i++) {
      diff = Math.max(diff, Math.abs(ranks[0].state.weights[i] - single.weights[i]));
      moved = Math.max(moved, Math.abs(single.weights[i] - start.weights[i]));
    }
    expect(moved).toBeGreaterThan(1e-3);
    expect(diff / moved).toBeLessThan(1e-4);
    await Promise.all(reducers.map((r) => r.close()));
  });

  test('a non-finite gradient skips the step: weights, momentum, statistics and device weights stay as they were', async () => {
    const spec = tinyModel('batch');
    const state = stateOf(spec, 3);
    const replica = replicaFor(spec, state);
    let poison = false;
    const step = new TrainStep(replica, state, {
      hyper: HYPER,
      hooks: { afterBackward: (g) => { if (poison) g[5] = Number.NaN; } },
    });
    await step.run(batchOf(2, 31), 2, LR);
    const before = copyOf(state);
    poison = true;
    const r = await step.run(batchOf(2, 32), 2, LR);
    expect(r).toMatchObject({ skipped: true, localNonFinite: true, count: 2 });
    expect(state.step).toBe(2);
    for (const key of ['weights', 'momentum', 'runningStats'] as const) expect(sameBytes(state[key], before[key])).toBe(true);
    expect(sameBytes(replica.getWeights(), before.weights)).toBe(true);

    // A sum that overflows is skipped too, though this rank's own gradient was finite.
    const overflowing = new TrainStep(replica, state, { hyper: HYPER, exchange: { allReduce: async (g) => { g[0] = Number.POSITIVE_INFINITY; } } });
    const o = await overflowing.run(batchOf(2, 33), 2, LR);
    expect(o).toMatchObject({ skipped: true, localNonFinite: false });
    expect(sameBytes(state.weights, before.weights)).toBe(true);
    replica.dispose();
  });

  test('hooks run in order: backward, exchange, beforeUpdate, then the update', async () => {
    const spec = tinyModel('none');
    const state = stateOf(spec, 4);
    const replica = replicaFor(spec, state);
    const events: string[] = [];
    const initial = state.weights.slice();
    const step = new TrainStep(replica, state, {
      hyper: HYPER,
      exchange: { allReduce: async () => void events.push('exchange') },
      hooks: {
        afterBackward: () => void events.push('backward'),
        // The worker keeps its undo copy here: the state must still be the one before the step.
        beforeUpdate: async () => void events.push(sameBytes(state.weights, initial) && state.step === 0 ? 'before, unchanged' : 'before, changed'),
      },
    });
    await step.run(batchOf(2, 41), 2, LR);
    expect(events).toEqual(['backward', 'exchange', 'before, unchanged']);
    expect(sameBytes(state.weights, initial)).toBe(false);
    replica.dispose();
  });

  test('BadSteps counts skips in a row and names the limit', () => {
    const bad = new BadSteps(2);
    expect([bad.note(true), bad.note(false), bad.note(true), bad.note(true)]).toEqual([false, false, false, true]);
    expect(bad.abortError(9).message).toMatch(/^2 consecutive steps had non-finite gradients \(--max-bad-steps 2\); checkpoint written at step 9/);
  });
});

describe.each(['cpu', 'wasm'] as const)('tensor memory on %s', (backend) => {
  test('numTensors after step 3 equals numTensors after step 10', async () => {
    await initBackend(backend);
    const spec = tinyModel('batch');
    const state = stateOf(spec, 5);
    const replica = replicaFor(spec, state);
    const step = new TrainStep(replica, state, { hyper: HYPER });
    const batch = batchOf(2, 51);
    const counts: number[] = [];
    for (let s = 1; s <= 10; s++) {
      await step.run(batch, 4, LR);
      replica.evaluate(batch, state.runningStats);
      counts.push(tf.memory().numTensors);
    }
    expect(counts[9]).toBe(counts[2]);
    replica.dispose();
    await initBackend('cpu');
  });
});
