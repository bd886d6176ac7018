// SyncBatchNorm's arithmetic (model/batchnorm.ts): the global moments that
// every rank combines from every rank's (count, mean, variance) are those of
// the whole batch, bit-identical whichever rank combines them, with empty
// ranks counted as nothing; and with one rank, SyncBatchNorm is BatchNorm to
// the bit, forward and backward.
import { beforeAll, describe, expect, test } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/common/backend/backend.js';
import { batchNormTrain, batchNormTrainSync, globalMoments, type BatchNormSync } from '../src/common/model/batchnorm.js';

beforeAll(async () => {
  await initBackend('cpu');
});

function lcg(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 16807) % 2147483647) / 2147483647;
}

/** Each rank's slots, summed as the ranks' all-reduce would: every rank sees every slot. */
function simulatedRanks(parts: Float32Array[][], c: number): BatchNormSync[] {
  const stride = 1 + 2 * c;
  const total = new Float32Array(stride * parts.length);
  parts.forEach((values, r) => {
    const n = values.length;
    total[r * stride] = n;
    for (let j = 0; j < c; j++) {
      const xs = values.map((v) => v[j]);
      const mean = Math.fround(xs.reduce((a, b) => a + b, 0) / Math.max(1, n));
      total[r * stride + 1 + j] = n ? mean : 0;
      total[r * stride + 1 + c + j] = n ? Math.fround(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / n) : 0;
    }
  });
  return parts.map((_, rank) => ({ rank, worldSize: parts.length, sum: (v) => v.set(total) }));
}

describe('SyncBatchNorm', () => {
  test('global moments are the whole batch\'s, the same bits on every rank, an empty rank adding nothing', () => {
    const c = 3;
    const rand = lcg(9);
    const sizes = [5, 0, 7, 2];
    const parts = sizes.map((n) => Array.from({ length: n }, () => Float32Array.from({ length: c }, () => 3 + 2 * rand())));
    const ranks = simulatedRanks(parts, c);
    const results = ranks.map((sync, r) => {
      const own = parts[r];
      const mean = Float32Array.from({ length: c }, (_, j) => (own.length ? Math.fround(own.reduce((a, v) => a + v[j], 0) / own.length) : 0));
      const variance = Float32Array.from({ length: c }, (_, j) => (own.length ? Math.fround(own.reduce((a, v) => a + (v[j] - mean[j]) ** 2, 0) / own.length) : 0));
      return globalMoments(sync, own.length, mean, variance);
    });
    const all = parts.flat();
    for (let j = 0; j < c; j++) {
      const mean = all.reduce((a, v) => a + v[j], 0) / all.length;
      const variance = all.reduce((a, v) => a + (v[j] - mean) ** 2, 0) / all.length;
      expect(results[0].mean[j]).toBeCloseTo(mean, 5);
      expect(results[0].variance[j]).toBeCloseTo(variance, 5);
    }
    expect(results[0].count).toBe(14);
    for (const r of results.slice(1)) {
      expect(Buffer.from(r.mean.buffer).equals(Buffer.from(results[0].mean.buffer))).toBe(true);
      expect(Buffer.from(r.variance.buffer).equals(Buffer.from(results[0].variance.buffer))).toBe(true);
    }
  });

  test('one rank: the output and every gradient are BatchNorm\'s to the bit', () => {
    const rand = lcg(4);
    const x = tf.tensor4d(Float32Array.from({ length: 3 * 4 * 4 * 5 }, () => rand() * 4 - 1), [3, 4, 4, 5]);
    const gamma = tf.tensor1d(Float32Array.from({ length: 5 }, () => 0.5 + rand()));
    const beta = tf.tensor1d(Float32Array.from({ length: 5 }, () => rand() - 0.5));
    const dy = tf.tensor4d(Float32Array.from({ length: 3 * 4 * 4 * 5 }, () => rand() - 0.5), [3, 4, 4, 5]);
    const alone: BatchNormSync = { rank: 0, worldSize: 1, sum: () => {} };
    const kept: tf.Tensor[] = [];
    const sink = (m: tf.Tensor, v: tf.Tensor) => kept.push(m, v);
    const run = (f: (x: tf.Tensor4D, g: tf.Tensor1D, b: tf.Tensor1D) => tf.Tensor4D) =>
      tf.tidy(() => {
        const { value, grads } = tf.valueAndGrads((a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(f(a as tf.Tensor4D, g as tf.Tensor1D, b as tf.Tensor1D), dy)))([x, gamma, beta]);
        return [value, ...grads].map((t) => t.dataSync() as Float32Array);
      });
    const plain = run((a, g, b) => batchNormTrain(a, g, b, sink));
    const synced = run((a, g, b) => batchNormTrainSync(a, g, b, sink, alone));
    plain.forEach((p, i) => expect(Buffer.from(synced[i].buffer).equals(Buffer.from(p.buffer)), `output ${i}`).toBe(true));
    // The statistics sent on for the running average: the same too.
    expect(Buffer.from(kept[2].dataSync().buffer).equals(Buffer.from(kept[0].dataSync().buffer))).toBe(true);
    expect(Buffer.from(kept[3].dataSync().buffer).equals(Buffer.from(kept[1].dataSync().buffer))).toBe(true);
    tf.dispose([x, gamma, beta, dy, ...kept]);
  });
});
