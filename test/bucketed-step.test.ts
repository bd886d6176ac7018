// A bucketed step (training/step.ts runBucketed) over communication threads
// and real WebSocket ring links, against the one-shot step over a ring in
// this thread: the same bits (at N=2 a ring's sum a + b is b + a, so the two
// exchanges give the same sums), BatchNorm statistics included; a non-finite
// gradient on one rank skips the step on both and names that rank; the
// one-step undo of elastic membership works after a bucketed step; and no
// tensor is left behind.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/common/backend/backend.js';
import { buildModelSpec, initParams, initRunningStats, type ModelSpec } from '../src/common/model/spec.js';
import { Replica } from '../src/common/model/replica.js';
import { TrainStep, type StepReport } from '../src/common/training/step.js';
import { ReplicaState } from '../src/worker/replica-state.js';
import { createMemoryRing, RingAllReducer } from '../src/common/allreduce/index.js';
import { CommThread } from '../src/common/allreduce/comm-thread.js';
import { planBuckets } from '../src/common/allreduce/buckets.js';
import { lcg, randomBatch } from './helpers/random-batch.js';

const HYPER = { momentum: 0.9, weightDecay: 5e-4 };
const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);



const comms: CommThread[] = [];
beforeAll(async () => {
  await initBackend('cpu');
});
afterAll(async () => {
  await Promise.allSettled(comms.map((c) => c.close()));
});

interface Rank { state: ReplicaState; step: TrainStep; replica: Replica }

function startState(spec: ModelSpec): ReplicaState {
  return new ReplicaState({ weights: initParams(spec, lcg(5)), momentum: new Float32Array(spec.paramCount), runningStats: initRunningStats(spec), step: 0 });
}

/** Two ranks that reduce bucket by bucket through communication threads. */
async function bucketedRanks(spec: ModelSpec, poison: { rank: number; step: number } | null): Promise<Rank[]> {
  const tag = 11;
  const plan = planBuckets(spec.params, 0.005, 0.002);
  expect(plan.buckets.length).toBeGreaterThan(4);
  const states = [startState(spec), startState(spec)];
  const threads = states.map(() => CommThread.start({ spans: true }));
  comms.push(...threads);
  const addresses = await Promise.all(threads.map((c, rank) => c.listenRing({ rank, worldSize: 2, tag })));
  await Promise.all(threads.map((c, rank) => c.connect({ kind: 'ring', peer: addresses[1 - rank], rank, worldSize: 2, tag, wire: 'fp32', chunkElements: 1000 })));
  return Promise.all(states.map(async (state, rank) => {
    const comm = threads[rank];
    await comm.attach(state.params.memory);
    let seq = 0;
    const buckets = comm.bucketedExchange(plan, state.params.grad, (n) => (seq += n) - n);
    const replica = new Replica(spec, state.weights, [32, 32, 3]);
    const step = new TrainStep(replica, state, {
      hyper: HYPER,
      exchange: { allReduce: () => Promise.reject(new Error('a bucketed step must not call allReduce')), buckets },
      hooks: {
        afterBackward: (grad) => {
          if (poison?.rank === rank && poison.step === state.step + 1) grad[0] = Number.NaN;
        },
        beforeUpdate: async () => state.rememberBeforeStep(),
      },
    });
    return { state, step, replica };
  }));
}

function oneShotRanks(spec: ModelSpec): Rank[] {
  return createMemoryRing(2).map((links) => {
    const reducer = new RingAllReducer(links, { chunkElements: 1000 });
    const state = startState(spec);
    const replica = new Replica(spec, state.weights, [32, 32, 3]);
    let seq = 0;
    return { state, replica, step: new TrainStep(replica, state, { hyper: HYPER, exchange: { allReduce: (g) => reducer.allReduceSum(g, seq++) } }) };
  });
}

const shards = (s: number) => [randomBatch(2, 100 + s), randomBatch(2, 200 + s)];
const runBoth = (ranks: Rank[], s: number): Promise<StepReport[]> => Promise.all(ranks.map((r, rank) => r.step.run(shards(s)[rank], 4, 0.05)));

describe('bucketed step', () => {
  test('equals the one-shot step bit for bit over 3 steps with BatchNorm, and leaks no tensor', async () => {
    const spec = buildModelSpec({ name: 'resnet18', width: 2, numClasses: 10, inChannels: 3, norm: 'batch' });
    const bucketed = await bucketedRanks(spec, null);
    const oneShot = oneShotRanks(spec);
    await runBoth(bucketed, 0);
    const tensors = tf.memory().numTensors;
    for (let s = 1; s < 3; s++) {
      const reports = await runBoth(bucketed, s);
      await runBoth(oneShot, s - 1);
      expect(reports.map((r) => r.skipped)).toEqual([false, false]);
    }
    await runBoth(oneShot, 2);
    expect(tf.memory().numTensors).toBe(tensors);
    for (const key of ['weights', 'momentum'] as const) expect(bytesOf(bucketed[0].state[key]).equals(bytesOf(bucketed[1].state[key])), key).toBe(true);
    // Each replica keeps its own shard's BatchNorm statistics (averaged at evaluation): compare rank by rank.
    for (const rank of [0, 1]) {
      for (const key of ['weights', 'momentum', 'runningStats'] as const) {
        expect(bytesOf(bucketed[rank].state[key]).equals(bytesOf(oneShot[rank].state[key])), `${key} of rank ${rank}`).toBe(true);
      }
    }
    expect(bucketed[0].state.step).toBe(3);
    for (const r of [...bucketed, ...oneShot]) r.replica.dispose();
  }, 120_000);

  test('a NaN on rank 1 skips the step on both ranks, naming rank 1; the undo then takes a bucketed step back', async () => {
    const spec = buildModelSpec({ name: 'resnet18', width: 2, numClasses: 10, inChannels: 3, norm: 'none' });
    const ranks = await bucketedRanks(spec, { rank: 1, step: 2 });
    await runBoth(ranks, 0);
    const afterOne = bytesOf(ranks[0].state.weights.slice());
    const skipped = await runBoth(ranks, 1);
    expect(skipped.map((r) => [r.skipped, r.localNonFinite])).toEqual([[true, false], [true, true]]);
    expect(bytesOf(ranks[0].state.weights).equals(afterOne)).toBe(true);
    const applied = await runBoth(ranks, 2);
    expect(applied.map((r) => r.skipped)).toEqual([false, false]);
    expect(bytesOf(ranks[0].state.weights).equals(afterOne)).toBe(false);
    // Elastic membership: step 3 was not committed, so it is undone to the exact bytes of step 2.
    for (const r of ranks) r.state.rollBackTo(2);
    expect(bytesOf(ranks[0].state.weights).equals(afterOne)).toBe(true);
    expect(bytesOf(ranks[1].state.weights).equals(afterOne)).toBe(true);
    for (const r of ranks) r.replica.dispose();
  }, 120_000);
});
