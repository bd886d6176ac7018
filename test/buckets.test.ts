// Gradient buckets (allreduce/buckets.ts), cut as PyTorch DDP cuts them:
// reverse parameter order, a small first bucket, and buckets closed by the
// parameter that reaches the cap; the buckets tile the gradient.
import { describe, expect, test } from 'vitest';
import { BucketFill, planBuckets } from '../src/common/allreduce/buckets.js';
import { buildModelSpec } from '../src/common/model/spec.js';

const MB = 1024 * 1024;

describe('bucket plan', () => {
  test('ResNet50: reverse order, each bucket closed by the parameter that reaches its cap, tiling the gradient', () => {
    const spec = buildModelSpec({ name: 'resnet50', width: 64, numClasses: 10, inChannels: 3, norm: 'batch' });
    const plan = planBuckets(spec.params);
    const { buckets } = plan;
    expect(buckets.length).toBeGreaterThan(3);
    // Bucket 0 ends the vector, the last starts it, and they tile it in reverse.
    expect(buckets[0].offset + buckets[0].count).toBe(spec.paramCount);
    expect(buckets[buckets.length - 1].offset).toBe(0);
    for (let i = 1; i < buckets.length; i++) expect(buckets[i].offset + buckets[i].count).toBe(buckets[i - 1].offset);
    for (const b of buckets) {
      const cap = (b.index === 0 ? 1 : 25) * MB;
      const last = spec.params[b.params[b.params.length - 1]];
      // Below the cap without its last parameter; at or above it with it (all but the final bucket).
      expect((b.count - last.size) * 4, `bucket ${b.index}`).toBeLessThan(cap);
      if (b.index < buckets.length - 1) expect(b.count * 4, `bucket ${b.index}`).toBeGreaterThanOrEqual(cap);
      expect(b.params).toEqual([...b.params].sort((x, y) => y - x));
      for (const p of b.params) expect(plan.bucketOf[p]).toBe(b.index);
    }
    // The linear layer's bias, the last parameter, is in bucket 0.
    expect(plan.bucketOf[spec.params.length - 1]).toBe(0);
  });

  test('an infinite cap gives one bucket; a bad cap is refused', () => {
    const params = [{ offset: 0, size: 10 }, { offset: 10, size: 5 }];
    expect(planBuckets(params, Infinity, Infinity).buckets).toEqual([{ index: 0, offset: 0, count: 15, params: [1, 0] }]);
    expect(() => planBuckets(params, 0)).toThrow(/above 0 MB/);
    expect(() => planBuckets([{ offset: 0, size: 3 }, { offset: 4, size: 1 }])).toThrow(/does not follow/);
  });

  test('a bucket completes when its last parameter arrives, in any order; twice is a bug', () => {
    const plan = planBuckets([{ offset: 0, size: 4 }, { offset: 4, size: 4 }, { offset: 8, size: 4 }], 32 / MB, 32 / MB);
    expect(plan.buckets.map((b) => b.params)).toEqual([[2, 1], [0]]);
    const fill = new BucketFill(plan);
    expect(fill.arrived(1)).toBe(-1);
    expect(fill.arrived(0)).toBe(1);
    expect(fill.arrived(2)).toBe(0);
    expect(() => fill.arrived(2)).toThrow(/twice/);
    fill.reset();
    expect(fill.arrived(2)).toBe(-1);
  });
});
