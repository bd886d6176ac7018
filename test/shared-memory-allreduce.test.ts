// The shared-memory all-reduce between real worker threads: the sum is the
// sequential float32 sum in rank order, bit-identical on every rank, for
// odd lengths and lengths that change between calls; a rank that dies or
// closes mid-all-reduce fails the others promptly, naming it; and the sum
// kernel's bytes are the assembly of its source.
import { describe, expect, test } from 'vitest';
import { runSharedMemoryThreads } from '../src/common/allreduce/shared-memory-launch.js';
import { sharedTestValue, type SharedThreadResult } from '../src/common/allreduce/shared-memory-thread.js';
import {
  createSharedRegion, prepareSharedRegion, SharedMemoryAllReducer,
} from '../src/common/allreduce/shared-memory.js';

/** ((x_0 + x_1) + x_2) + ... in float32, the documented order. */
function sequentialSum(worldSize: number, call: number, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let acc = sharedTestValue(0, call, i);
    for (let r = 1; r < worldSize; r++) acc = Math.fround(acc + sharedTestValue(r, call, i));
    out[i] = acc;
  }
  return out;
}

const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

function sums(results: SharedThreadResult[]): Float32Array[][] {
  return results.map((r) => {
    if (r.kind !== 'check') throw new Error(`rank ${r.rank}: ${r.kind === 'error' ? r.message : r.kind}`);
    return r.sums;
  });
}

describe('shared-memory all-reduce', () => {
  test.each([2, 3, 4])('N=%i: the rank-order float32 sum, bit-identical on every rank, odd lengths', async (n) => {
    // Odd and tiny lengths (fewer floats than ranks, segments that are empty), a
    // length not a multiple of 4 or 16, and a longer one spanning many blocks.
    const lengths = [1, 3, 17, 1001, 40_003, 5, 40_003];
    const results = sums(await runSharedMemoryThreads(n, { lengths, mode: 'check' }));
    lengths.forEach((len, call) => {
      const expected = bytes(sequentialSum(n, call, len));
      for (let rank = 0; rank < n; rank++) expect(bytes(results[rank][call]).equals(expected), `rank ${rank} call ${call}`).toBe(true);
    });
  }, 60_000);

  test('one region serves group after group (the coordinator re-prepares it with a new tag)', async () => {
    const region = createSharedRegion(4, 5000)!;
    for (const n of [4, 2, 3]) {
      const results = sums(await runSharedMemoryThreads(n, { lengths: [4999, 12], mode: 'check' }, region));
      for (let rank = 0; rank < n; rank++) expect(bytes(results[rank][0]).equals(bytes(sequentialSum(n, 0, 4999)))).toBe(true);
    }
  }, 60_000);

  test('a rank that closes its reducer mid-all-reduce fails the others at once, naming it', async () => {
    const results = await runSharedMemoryThreads(3, { lengths: [1000, 1000, 1000], mode: 'check', fail: { rank: 1, at: 1, how: 'close' } });
    for (const r of [results[0], results[2]]) {
      expect(r.kind).toBe('error');
      if (r.kind !== 'error') continue;
      expect(r.call).toBe(1);
      expect(r.message).toMatch(/rank 1 closed its all-reduce/);
      expect(r.afterMs).toBeLessThan(5000);
    }
  }, 30_000);

  test('a rank whose thread dies mid-all-reduce fails the others after the arrival timeout, naming it; no hang', async () => {
    const results = await runSharedMemoryThreads(4, {
      lengths: [1000, 1000, 1000], mode: 'check', arrivalTimeoutMs: 500, fail: { rank: 2, at: 1, how: 'exit' },
    });
    expect(results[2]).toMatchObject({ kind: 'error', message: /without a result/ });
    // The first to time out closes its reducer, which fails the others at once; every message names rank 2.
    const messages: string[] = [];
    for (const rank of [0, 1, 3]) {
      const r = results[rank];
      expect(r.kind).toBe('error');
      if (r.kind !== 'error') continue;
      expect(r.message).toMatch(/rank 2 did not arrive within 0\.5 s|while waiting for rank 2$/);
      expect(r.afterMs).toBeLessThan(5000);
      messages.push(r.message);
    }
    expect(messages.some((m) => /rank 2 did not arrive/.test(m))).toBe(true);
  }, 30_000);

  test('a rank that never comes to the all-reduce is named', async () => {
    const results = await runSharedMemoryThreads(2, { lengths: [10], mode: 'check', arrivalTimeoutMs: 300, fail: { rank: 0, at: 0, how: 'absent' } });
    expect(results[1]).toMatchObject({ kind: 'error', message: /rank 0 did not arrive within 0\.3 s/ });
  }, 30_000);

  test('a reducer refuses a region prepared for another group, and vectors longer than its slots', async () => {
    const region = createSharedRegion(2, 64)!;
    prepareSharedRegion(region, 7, 2);
    expect(() => new SharedMemoryAllReducer(region, { rank: 0, worldSize: 2, tag: 8 })).toThrow(/prepared for another group/);
    const reducer = new SharedMemoryAllReducer(region, { rank: 0, worldSize: 2, tag: 7 });
    await expect(reducer.allReduceSum(new Float32Array(65), 0)).rejects.toThrow(/65 floats exceed the region's 64/);
    await expect(reducer.allReduceSum(new Float32Array(8), 1)).rejects.toThrow(/unusable after an earlier error/);
    await reducer.close();
    expect(createSharedRegion(1, 64)).toBeNull();
  });
});
