// The gradient taps of a bucketed step (model/replica.ts GradientTaps): on
// the cpu and wasm backends, every parameter's gradient is handed over once,
// from inside backward, with the same bytes as the one read after it; the
// last layers' gradients come first and the stem's last, so a bucket of the
// last layers can be on the wire while backward computes the first; and no
// tensor is left behind.
import { describe, expect, test } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/common/backend/backend.js';
import { buildModelSpec, initParams } from '../src/common/model/spec.js';
import { Replica, type Batch } from '../src/common/model/replica.js';
import { planBuckets, BucketFill } from '../src/common/allreduce/buckets.js';

function lcg(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 16807) % 2147483647) / 2147483647;
}

function batchOf(n: number, rand: () => number): Batch {
  return { x: Float32Array.from({ length: n * 32 * 32 * 3 }, () => rand() - 0.5), y: Int32Array.from({ length: n }, (_, i) => i % 10), count: n };
}

const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe.each(['cpu', 'wasm'] as const)('gradient taps on %s', (backend) => {
  test('each parameter once, mid-backward, in about reverse order, with the one-read bytes', async () => {
    await initBackend(backend);
    const spec = buildModelSpec({ name: 'resnet18', width: 4, numClasses: 10, inChannels: 3, norm: 'batch' });
    const rand = lcg(7);
    const replica = new Replica(spec, initParams(spec, rand), [32, 32, 3]);
    const batch = batchOf(3, rand);
    try {
      const reference = new Float32Array(spec.paramCount);
      replica.computeGradients(batch, 1 / 8, reference);

      const tensorsBefore = tf.memory().numTensors;
      const tapped = new Float32Array(spec.paramCount);
      const order: number[] = [];
      const res = replica.computeGradients(batch, 1 / 8, tapped, (p) => {
        // The value is in place when the tap fires.
        const { offset, size } = spec.params[p];
        expect(bytesOf(tapped.subarray(offset, offset + size)).equals(bytesOf(reference.subarray(offset, offset + size)))).toBe(true);
        order.push(p);
      });
      expect(tf.memory().numTensors).toBe(tensorsBefore);
      expect(res.count).toBe(3);
      expect(bytesOf(tapped).equals(bytesOf(reference))).toBe(true);
      expect([...order].sort((a, b) => a - b)).toEqual(spec.params.map((_, i) => i));
      // The linear layer (the last parameters) first, the stem's convolution (parameter 0) last.
      expect(order[0]).toBeGreaterThanOrEqual(spec.params.length - 2);
      expect(order[order.length - 1]).toBe(0);
      // Buckets complete in their own order (bucket 0 first) as the taps fire.
      const plan = planBuckets(spec.params, 0.004, 0.001);
      expect(plan.buckets.length).toBeGreaterThan(3);
      const fill = new BucketFill(plan);
      const completed = order.map((p) => fill.arrived(p)).filter((b) => b >= 0);
      expect(completed).toHaveLength(plan.buckets.length);
      expect(completed[0]).toBe(0);
      expect(completed[completed.length - 1]).toBe(plan.buckets.length - 1);
    } finally {
      replica.dispose();
    }
  }, 60_000);
});
