// The communication thread (allreduce/comm-thread.ts) over real WebSocket
// ring links between real worker threads: a bucketed step's sums land in
// the shared gradient bucket by bucket, in order, while the compute thread
// is blocked (as inside backward); a rank with another bucket plan fails
// with a clear error instead of hanging; close ends a bucket wait; and a
// buffer outside the attached memory goes through staging.
import { afterEach, describe, expect, test } from 'vitest';
import { CommThread } from '../src/common/allreduce/comm-thread.js';
import { planBuckets, type BucketPlan } from '../src/common/allreduce/buckets.js';

const threads: CommThread[] = [];
afterEach(async () => {
  await Promise.allSettled(threads.splice(0).map((t) => t.close()));
});

/** N comm threads wired into one ring, each with `elements` floats of shared gradient. */
async function ring(n: number, elements: number, tag = 7): Promise<{ comm: CommThread; grad: Float32Array }[]> {
  const ranks = Array.from({ length: n }, () => {
    const comm = CommThread.start({ spans: true });
    threads.push(comm);
    return { comm, grad: new Float32Array(new SharedArrayBuffer(elements * 4 + 64), 64, elements) };
  });
  const addresses = await Promise.all(ranks.map((r, rank) => r.comm.listenRing({ rank, worldSize: n, tag })));
  await Promise.all(ranks.map((r, rank) => r.comm.connect({ kind: 'ring', peer: addresses[(rank - 1 + n) % n], rank, worldSize: n, tag, wire: 'fp32', chunkElements: 4096 })));
  await Promise.all(ranks.map((r) => r.comm.attach(r.grad.buffer as SharedArrayBuffer)));
  return ranks;
}

const params = (sizes: number[]) => {
  let offset = 0;
  return sizes.map((size) => ({ offset: (offset += size) - size, size }));
};

/** Blocks this thread, as a synchronous backward pass does. */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

const value = (rank: number, i: number) => Math.fround(Math.sin(rank * 7919 + i) * 2 ** ((i % 13) - 6));
const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe('communication thread', () => {
  test('N=3: buckets reduce in order while the compute thread is busy; every rank ends bit-identical', async () => {
    const sizes = [3000, 17, 40_000, 5, 70_000, 1, 20_000];
    const plan = planBuckets(params(sizes), 0.12, 0.04);
    const elements = plan.elements;
    const ranks = await ring(3, elements);
    for (const r of ranks) r.comm.useBuckets(plan);
    for (let step = 0; step < 2; step++) {
      for (const [rank, r] of ranks.entries()) for (let i = 0; i < elements; i++) r.grad[i] = value(rank + step, i);
      const seq0 = step * plan.buckets.length;
      for (const r of ranks) r.comm.beginBuckets(seq0, r.grad.byteOffset / 4);
      // Every rank releases bucket 0 and then blocks its thread: bucket 0 must still be reduced.
      const order: number[] = [];
      for (const r of ranks) r.comm.release(0);
      busy(300);
      const busyEnd = performance.timeOrigin + performance.now();
      for (let b = 1; b < plan.buckets.length; b++) for (const r of ranks) r.comm.release(b);
      await Promise.all(ranks.map(async (r, rank) => {
        for (let b = 0; b < plan.buckets.length; b++) {
          await r.comm.reduced(b);
          if (rank === 0) order.push(b);
        }
      }));
      // Bucket 0's all-reduce was over while every compute thread was still blocked.
      const first = ranks[0].comm.takeSpans().find((sp) => sp.name === 'allreduce bucket 0')!;
      expect(first.endMs).toBeLessThan(busyEnd);
      expect(first.args).toMatchObject({ bucket: 0, seq: seq0 });
      expect(order).toEqual(plan.buckets.map((b) => b.index));
      for (let i = 0; i < elements; i += 997) {
        const terms = [value(step, i), value(step + 1, i), value(step + 2, i)];
        const exact = terms[0] + terms[1] + terms[2];
        // Two float32 roundings, each at most half an ulp of the largest partial sum.
        const bound = 2 ** -23 * 2 * terms.reduce((s, t) => s + Math.abs(t), 0);
        expect(Math.abs(ranks[0].grad[i] - exact)).toBeLessThanOrEqual(bound);
      }
      for (const r of ranks.slice(1)) expect(bytesOf(r.grad).equals(bytesOf(ranks[0].grad))).toBe(true);
    }
  }, 60_000);

  test('a rank whose bucket plan differs fails with a clear error naming the bucket, not a hang', async () => {
    const sizes = [10_000, 10_000, 10_000, 10_000];
    const a: BucketPlan = planBuckets(params(sizes), 0.08, 0.04);
    const b: BucketPlan = planBuckets(params(sizes), 0.2, 0.2);
    expect(a.buckets.length).not.toBe(b.buckets.length);
    const ranks = await ring(2, a.elements);
    ranks[0].comm.useBuckets(a);
    ranks[1].comm.useBuckets(b);
    const plans = [a, b];
    const outcomes = await Promise.allSettled(ranks.map(async (r, rank) => {
      r.comm.beginBuckets(0, r.grad.byteOffset / 4);
      for (let i = 0; i < plans[rank].buckets.length; i++) r.comm.release(i);
      for (let i = 0; i < plans[rank].buckets.length; i++) await r.comm.reduced(i);
    }));
    const messages = outcomes.map((o) => (o.status === 'rejected' ? (o.reason as Error).message : 'resolved'));
    expect(messages.some((m) => /bucket 0 of \d .*(seq|total|covers|elements|length)/.test(m)), messages.join('\n')).toBe(true);
  }, 30_000);

  test('close ends a wait for a bucket that backward never released', async () => {
    const plan = planBuckets(params([1000, 1000]), 0.004, 0.004);
    const ranks = await ring(2, plan.elements);
    for (const r of ranks) {
      r.comm.useBuckets(plan);
      r.comm.beginBuckets(0, r.grad.byteOffset / 4);
    }
    const waiting = ranks[0].comm.reduced(0);
    const started = performance.now();
    setTimeout(() => void ranks[0].comm.close(), 100);
    await expect(waiting).rejects.toThrow(/closed|exited/);
    expect(performance.now() - started).toBeLessThan(1500);
  }, 30_000);

  test('a buffer outside the attached memory is reduced through staging', async () => {
    const ranks = await ring(2, 16);
    const sums = await Promise.all(ranks.map(async (r, rank) => {
      const stats = Float32Array.from({ length: 5000 }, (_, i) => rank * 1000 + i);
      await r.comm.allReduceSum(stats, 0);
      return stats;
    }));
    expect(Array.from(sums[0].subarray(0, 3))).toEqual([1000, 1002, 1004]);
    expect(bytesOf(sums[1]).equals(bytesOf(sums[0]))).toBe(true);
  }, 30_000);
});
