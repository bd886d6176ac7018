// The hierarchical all-reduce between real worker threads: local members
// over one shared region, the leader and the other members over loopback
// WebSocket ring links. Every rank ends bit-identical, close to the exact
// sum, for odd lengths and lengths that change between calls; a member that
// closes mid-all-reduce fails every other member promptly, naming it; and the
// layouts the coordinator sends are checked.
import { describe, expect, test } from 'vitest';
import { runHierarchicalThreads } from '../src/common/allreduce/shared-memory-launch.js';
import { sharedTestValue, type SharedThreadResult } from '../src/common/allreduce/shared-memory-thread.js';
import { hierarchicalLayout, hierarchicalRole } from '../src/common/allreduce/hierarchical.js';
import { decodeMessage, encodeMessage, ProtocolError } from '../src/common/protocol/codec.js';
import type { ControlMessage } from '../src/common/protocol/types.js';

const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

function sums(results: SharedThreadResult[]): Float32Array[][] {
  return results.map((r) => {
    if (r.kind !== 'check') throw new Error(`rank ${r.rank}: ${r.kind === 'error' ? r.message : r.kind}`);
    return r.sums;
  });
}

/** Largest |got - exact| over the sum of |x| (float64 reference). */
function relativeToExact(got: Float32Array, worldSize: number, call: number): number {
  let worst = 0;
  for (let i = 0; i < got.length; i++) {
    let exact = 0;
    let scale = 0;
    for (let r = 0; r < worldSize; r++) {
      const x = sharedTestValue(r, call, i);
      exact += x;
      scale += Math.abs(x);
    }
    worst = Math.max(worst, Math.abs(got[i] - exact) / scale);
  }
  return worst;
}

describe('hierarchical layout', () => {
  test('the leader is the lowest local rank; the ring is the leader and the others in rank order', () => {
    expect(hierarchicalLayout([1, 0], 3)).toEqual({ localRanks: [0, 1], ringRanks: [0, 2] });
    expect(hierarchicalLayout([4, 1, 2], 5)).toEqual({ localRanks: [1, 2, 4], ringRanks: [0, 1, 3] });
    const layout = { localRanks: [1, 2, 4], ringRanks: [0, 1, 3] };
    expect(hierarchicalRole(1, 5, layout)).toEqual({
      local: { rank: 0, worldSize: 3, groupRanks: [1, 2, 4] }, ring: { rank: 1, worldSize: 3, prevRank: 0, nextRank: 3 },
    });
    expect(hierarchicalRole(4, 5, layout)).toEqual({ local: { rank: 2, worldSize: 3, groupRanks: [1, 2, 4] }, ring: null });
    expect(hierarchicalRole(0, 5, layout)).toEqual({ local: null, ring: { rank: 0, worldSize: 3, prevRank: 3, nextRank: 1 } });
    expect(() => hierarchicalLayout([0, 1, 2], 3)).toThrow(/needs 2 to 2 local ranks/);
    // A second local member in the ring, a rank with no part, unsorted or out-of-range ranks.
    for (const bad of [
      { localRanks: [0, 1], ringRanks: [0, 1, 2] }, { localRanks: [0, 1], ringRanks: [0, 2] }, { localRanks: [1, 0], ringRanks: [0, 2, 3] },
      { localRanks: [0, 1], ringRanks: [1, 2, 3] }, { localRanks: [0, 9], ringRanks: [0, 2, 3] },
    ]) expect(() => hierarchicalRole(0, 4, bad), JSON.stringify(bad)).toThrow(/do not make a group of 4/);
  });
});

describe('hierarchical fields of the protocol', () => {
  test('connect carries the layout; ready says whether a worker can join; both optional', () => {
    const connect: ControlMessage = { type: 'connect', peer: { host: '127.0.0.1', port: 9 }, reducer: 'hierarchical', localRanks: [0, 1], ringRanks: [0, 2] };
    expect(decodeMessage(encodeMessage(connect))).toEqual(connect);
    expect(decodeMessage(encodeMessage({ type: 'connect', peer: null }))).toEqual({ type: 'connect', peer: null, reducer: null, localRanks: null, ringRanks: null });
    const ready: ControlMessage = { type: 'ready', ringAddress: null, backend: 'cpu', localRegion: null, hierarchical: true };
    expect(decodeMessage(encodeMessage(ready))).toEqual(ready);
    expect(decodeMessage(encodeMessage({ type: 'ready', ringAddress: null, backend: 'cpu' }))).toMatchObject({ hierarchical: null });
    for (const ringRanks of [[0, -1], [0, 1.5], '0,2', [0, '2']]) {
      const bad = encodeMessage({ ...connect, ringRanks } as unknown as ControlMessage);
      expect(() => decodeMessage(bad)).toThrow(ProtocolError);
    }
    expect(() => decodeMessage(encodeMessage({ ...ready, hierarchical: 'yes' } as unknown as ControlMessage))).toThrow(/"hierarchical" must be true or false/);
  });
});

describe('hierarchical all-reduce over threads and ring links', () => {
  test.each([
    { worldSize: 3, local: [0, 1] },
    { worldSize: 5, local: [1, 2, 4] },
  ])('$worldSize ranks, local $local: bit-identical on every rank, close to the exact sum', async ({ worldSize, local }) => {
    const lengths = [1, 3, 17, 1001, 40_003, 5, 40_003];
    const results = sums(await runHierarchicalThreads(worldSize, hierarchicalLayout(local, worldSize), { lengths, mode: 'check' }));
    lengths.forEach((_, call) => {
      const first = bytes(results[0][call]);
      for (let rank = 1; rank < worldSize; rank++) expect(bytes(results[rank][call]).equals(first), `rank ${rank} call ${call}`).toBe(true);
      expect(relativeToExact(results[0][call], worldSize, call)).toBeLessThan(1e-6);
    });
  }, 60_000);

  test('a ring member that closes mid-all-reduce fails every other member at once', async () => {
    const layout = hierarchicalLayout([0, 1, 2], 4);
    const results = await runHierarchicalThreads(4, layout, { lengths: [1000, 1000, 1000], mode: 'check', fail: { rank: 3, at: 1, how: 'close' } });
    for (const r of results.slice(0, 3)) {
      expect(r.kind, `rank ${r.rank}`).toBe('error');
      if (r.kind !== 'error') continue;
      expect(r.call).toBe(1);
      expect(r.afterMs).toBeLessThan(5000);
      // The leader's ring names its peer; the other local members name the leader, whose failure closed the region.
      expect(r.message).toMatch(r.rank === 0 ? /hierarchical all-reduce, rank 0 of 4 \(leader of 3 local, ring rank 0 of 2\).*rank 3/ : /rank 0 closed its all-reduce/);
    }
  }, 30_000);

  test('a local member that closes mid-all-reduce fails every other member at once, naming it', async () => {
    const layout = hierarchicalLayout([1, 2], 4);
    const results = await runHierarchicalThreads(4, layout, { lengths: [1000, 1000, 1000], mode: 'check', fail: { rank: 2, at: 1, how: 'close' } });
    for (const rank of [0, 1, 3]) {
      const r = results[rank];
      expect(r.kind, `rank ${rank}`).toBe('error');
      if (r.kind !== 'error') continue;
      expect(r.call).toBe(1);
      expect(r.afterMs).toBeLessThan(5000);
      if (rank === 1) expect(r.message).toMatch(/rank 2 closed its all-reduce/);
    }
  }, 30_000);
});
