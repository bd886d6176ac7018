// All-reduce algorithms over the in-memory transport, plus the framing and
// layout they rely on. The socket transport has its own test file.

import { describe, expect, it } from 'vitest';

import {
  alignFrame,
  encodeFrame,
  FrameError,
  FrameType,
  HEADER_BYTES,
  payloadView,
  readHeader,
  retagFrame,
} from '../src/common/allreduce/frame.js';
import { RingLayout } from '../src/common/allreduce/layout.js';
import {
  AllReduceError,
  createMemoryLinkPair,
  createMemoryRing,
  RingAllReducer,
  StarAllReducer,
  StarHub,
  type AllReducer,
} from '../src/common/allreduce/index.js';

/** Deterministic pseudo-random gradient for (rank, step); mixed signs and magnitudes. */
function gradient(length: number, rank: number, step: number, integers = false): Float32Array {
  const g = new Float32Array(length);
  let s = (rank * 7919 + step * 104729 + 1) >>> 0;
  for (let i = 0; i < length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    g[i] = integers ? (s % 2001) - 1000 : ((s / 2 ** 32) * 2 - 1) * 10 ** ((s % 7) - 3);
  }
  return g;
}

/** Sequential sum in rank order, rounded to float32 after each addition (what the star computes). */
function referenceSum(grads: Float32Array[]): Float32Array {
  const acc = Float32Array.from(grads[0]);
  for (let r = 1; r < grads.length; r++) for (let i = 0; i < acc.length; i++) acc[i] += grads[r][i];
  return acc;
}

/** |a - b| <= 1e-6 * sum_r |g_r| elementwise: addition order may differ, nothing else. */
function expectClose(actual: Float32Array, expected: Float32Array, grads: Float32Array[]): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    let scale = 0;
    for (const g of grads) scale += Math.abs(g[i]);
    const err = Math.abs(actual[i] - expected[i]) / Math.max(scale, 1e-30);
    if (!(err <= worst)) worst = Number.isNaN(err) ? Infinity : err;
  }
  expect(worst).toBeLessThanOrEqual(1e-6);
}

function expectBitIdentical(bufs: Float32Array[]): void {
  const first = new Uint32Array(bufs[0].buffer, bufs[0].byteOffset, bufs[0].length);
  for (let r = 1; r < bufs.length; r++) {
    const other = new Uint32Array(bufs[r].buffer, bufs[r].byteOffset, bufs[r].length);
    expect(Buffer.compare(Buffer.from(first.buffer, first.byteOffset, first.byteLength),
      Buffer.from(other.buffer, other.byteOffset, other.byteLength))).toBe(0);
  }
}

function memoryStar(worldSize: number, chunkElements: number, misalign = false) {
  const hubLinks = [];
  const reducers: StarAllReducer[] = [];
  for (let rank = 0; rank < worldSize; rank++) {
    const [hubSide, workerSide] = createMemoryLinkPair('hub', `rank ${rank}`, { misalign });
    hubLinks.push(hubSide);
    reducers.push(new StarAllReducer(workerSide, rank, worldSize, { chunkElements }));
  }
  const hub = new StarHub(hubLinks);
  return { hub, reducers, serving: hub.serve() };
}

async function runSteps(reducers: AllReducer[], length: number, steps: number[], integers = false) {
  const results: { grads: Float32Array[]; bufs: Float32Array[] }[] = [];
  for (const step of steps) {
    const grads = reducers.map((_, r) => gradient(length, r, step, integers));
    const bufs = grads.map((g) => Float32Array.from(g));
    await Promise.all(reducers.map((red, r) => red.allReduceSum(bufs[r], step)));
    results.push({ grads, bufs });
  }
  return results;
}

describe('frame format', () => {
  it('round-trips a header and payload, and retags in place', () => {
    const payload = Float32Array.of(1.5, -2, 3e-8);
    const h = { type: FrameType.ReduceScatter, tag: 9, seq: 4_000_000_000, total: 10, stage: 2, chunk: 1, offset: 7, count: 3 };
    const frame = encodeFrame(h, payload);
    expect(frame.byteLength).toBe(HEADER_BYTES + 12);
    expect(readHeader(frame)).toEqual(h);
    expect(Array.from(payloadView(frame))).toEqual(Array.from(payload));
    retagFrame(frame, FrameType.AllGather, 3);
    expect(readHeader(frame)).toMatchObject({ type: FrameType.AllGather, stage: 3, seq: 4_000_000_000 });
  });

  it('views an aligned frame in place and copies a misaligned one once', () => {
    const frame = encodeFrame(
      { type: FrameType.StarUp, tag: 0, seq: 1, total: 2, stage: 0, chunk: 0, offset: 0, count: 2 },
      Float32Array.of(0.25, 8),
    );
    expect(alignFrame(frame)).toBe(frame);

    const backing = new Uint8Array(frame.byteLength + 3);
    const misaligned = backing.subarray(3);
    misaligned.set(frame);
    const aligned = alignFrame(misaligned);
    expect(aligned).not.toBe(misaligned);
    expect(aligned.byteOffset % 4).toBe(0);
    expect(readHeader(misaligned).count).toBe(2); // headers parse at any offset
    expect(Array.from(payloadView(aligned))).toEqual([0.25, 8]);
  });

  it('rejects short frames, bad magic, unknown types and length mismatches', () => {
    const good = encodeFrame(
      { type: FrameType.StarUp, tag: 0, seq: 1, total: 4, stage: 0, chunk: 0, offset: 0, count: 4 },
      new Float32Array(4),
    );
    expect(() => readHeader(good.subarray(0, 20))).toThrow(/shorter than the 36-byte header/);
    const badMagic = good.slice();
    badMagic[0] ^= 0xff;
    expect(() => readHeader(badMagic)).toThrow(FrameError);
    expect(() => readHeader(badMagic)).toThrow(/bad magic/);
    const badType = good.slice();
    new DataView(badType.buffer).setUint32(4, 77, true);
    expect(() => readHeader(badType)).toThrow(/unknown frame type 77/);
    expect(() => readHeader(good.subarray(0, good.byteLength - 4))).toThrow(/announces 4 floats/);
    const beyond = good.slice();
    new DataView(beyond.buffer).setUint32(28, 2, true); // offset 2 + 4 floats > total 4
    expect(() => readHeader(beyond)).toThrow(/beyond the gradient length 4/);
  });
});

describe('ring layout', () => {
  it('covers every element exactly once, for lengths that do not divide by N and for P < N', () => {
    for (const [total, n, chunk] of [[1, 4, 3], [7, 3, 2], [10, 4, 1], [1000003, 4, 65536], [0, 2, 5]]) {
      const layout = new RingLayout(total, n, chunk);
      const covered = new Uint8Array(total);
      for (let g = 0; g < n; g++) {
        for (let j = 0; j < layout.chunksPerSegment; j++) {
          const { offset, count } = layout.chunk(g, j);
          expect(count).toBeLessThanOrEqual(chunk);
          for (let i = offset; i < offset + count; i++) covered[i]++;
        }
      }
      expect(covered.every((c) => c === 1)).toBe(true);
    }
  });
});

describe('ring all-reduce over memory links', () => {
  for (const worldSize of [1, 2, 3, 4]) {
    for (const length of [1, 7, 1000]) {
      it(`N=${worldSize}, length ${length}: every rank ends with the same bits, close to the reference`, async () => {
        const reducers = createMemoryRing(worldSize).map((l) => new RingAllReducer(l, { chunkElements: 64 }));
        for (const { grads, bufs } of await runSteps(reducers, length, [0, 1, 2])) {
          expectBitIdentical(bufs);
          expectClose(bufs[0], referenceSum(grads), grads);
        }
        await Promise.all(reducers.map((r) => r.close()));
      });
    }
  }

  it('sums exactly when the sums are exact in float32 (integer gradients)', async () => {
    const reducers = createMemoryRing(3).map((l) => new RingAllReducer(l, { chunkElements: 5 }));
    const [{ grads, bufs }] = await runSteps(reducers, 1001, [7], true);
    for (const b of bufs) expect(Array.from(b)).toEqual(Array.from(referenceSum(grads)));
  });

  it('handles frames delivered at misaligned byte offsets', async () => {
    const reducers = createMemoryRing(3, { misalign: true }).map((l) => new RingAllReducer(l, { chunkElements: 16 }));
    for (const { grads, bufs } of await runSteps(reducers, 100, [0, 1])) {
      expectBitIdentical(bufs);
      expectClose(bufs[2], referenceSum(grads), grads);
    }
  });

  it('rejects a malformed frame naming the sender, and the failure reaches the other ranks', async () => {
    const links = createMemoryRing(3);
    const reducers = links.map((l) => new RingAllReducer(l, { chunkElements: 8 }));
    // Rank 0 is replaced by an impostor that sends garbage to rank 1.
    const bufs = [1, 2].map((r) => gradient(40, r, 0));
    const settled = Promise.allSettled([reducers[1].allReduceSum(bufs[0], 0), reducers[2].allReduceSum(bufs[1], 0)]);
    await links[0].toNext.send(new Uint8Array(64).fill(7));
    const [r1, r2] = await settled;
    expect(r1.status).toBe('rejected');
    const e1 = (r1 as PromiseRejectedResult).reason as AllReduceError;
    expect(e1).toBeInstanceOf(AllReduceError);
    expect(e1.message).toMatch(/rank 1 of 3, all-reduce #0\).*bad frame from rank 0: bad magic/);
    expect(e1.peer).toBe('rank 0');
    expect((r2 as PromiseRejectedResult).reason.message).toMatch(/rank 2 of 3.*rank 1 closed/);
    await expect(reducers[1].allReduceSum(bufs[0], 1)).rejects.toThrow(/unusable after an earlier error/);
  });

  it('rejects ranks that are out of order or disagree on the gradient length', async () => {
    let reducers = createMemoryRing(2).map((l) => new RingAllReducer(l));
    let results = await Promise.allSettled([
      reducers[0].allReduceSum(new Float32Array(10), 5),
      reducers[1].allReduceSum(new Float32Array(10), 6),
    ]);
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    const messages = results.map((r) => (r as PromiseRejectedResult).reason.message).join('\n');
    expect(messages).toMatch(/frame is for all-reduce #[56] but this rank is on all-reduce #[56]; the ranks are out of order/);

    reducers = createMemoryRing(2).map((l) => new RingAllReducer(l));
    results = await Promise.allSettled([
      reducers[0].allReduceSum(new Float32Array(10), 0),
      reducers[1].allReduceSum(new Float32Array(12), 0),
    ]);
    expect((results[0] as PromiseRejectedResult).reason.message).toMatch(
      /bad frame from rank 1: peer reduces a gradient of 12 elements but this rank's has 10/,
    );
  });

  it('rejects promptly when a neighbour drops its links mid-reduce', async () => {
    const links = createMemoryRing(3);
    const reducers = links.map((l) => new RingAllReducer(l, { chunkElements: 4 }));
    const settled = Promise.allSettled([0, 1].map((r) => reducers[r].allReduceSum(gradient(50, r, 3), 3)));
    await reducers[2].close(); // rank 2 leaves without reducing
    const results = await settled;
    expect((results[0] as PromiseRejectedResult).reason.message).toMatch(/rank 0 of 3, all-reduce #3\).*link from rank 2 closed/);
    expect(results[1].status).toBe('rejected');
  });

  it('refuses bad arguments with a clear error', async () => {
    const [links] = createMemoryRing(1);
    const reducer = new RingAllReducer(links);
    await expect(reducer.allReduceSum(new Float64Array(3) as unknown as Float32Array, 0)).rejects.toThrow(/Float32Array/);
    await expect(reducer.allReduceSum(new Float32Array(3), -1)).rejects.toThrow(/seq \(the all-reduce sequence number\) must be an integer/);
    const [a] = createMemoryRing(2, { maxFrameBytes: 1000 });
    expect(() => new RingAllReducer(a, { chunkElements: 1000 })).toThrow(/above the 1000-byte limit.*lower chunkElements/);
  });
});

describe('star all-reduce over memory links', () => {
  for (const worldSize of [1, 2, 3, 4]) {
    it(`N=${worldSize}: equals the sequential reference bit for bit, on every rank`, async () => {
      const { hub, reducers, serving } = memoryStar(worldSize, 3, worldSize === 3);
      for (const length of [1, 7, 100]) {
        for (const { grads, bufs } of await runSteps(reducers, length, [length, length + 1])) {
          expectBitIdentical([referenceSum(grads), ...bufs]);
        }
      }
      await hub.close();
      await serving;
    });
  }

  it('matches the ring within rounding', async () => {
    const ring = createMemoryRing(4).map((l) => new RingAllReducer(l, { chunkElements: 100 }));
    const { hub, reducers: star, serving } = memoryStar(4, 100);
    const [ringRun] = await runSteps(ring, 1003, [1]);
    const [starRun] = await runSteps(star, 1003, [1]);
    expectClose(ringRun.bufs[0], starRun.bufs[0], ringRun.grads);
    await hub.close();
    await serving;
  });

  it('fails the hub and every worker when one worker sends the wrong length', async () => {
    const { reducers, serving } = memoryStar(3, 4);
    const results = await Promise.allSettled([
      reducers[0].allReduceSum(new Float32Array(10), 2),
      reducers[1].allReduceSum(new Float32Array(9), 2),
      reducers[2].allReduceSum(new Float32Array(10), 2),
    ]);
    await expect(serving).rejects.toThrow(/star hub \(all-reduce #2\): bad frame from rank 1: peer reduces a gradient of 9 elements/);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason.message).toMatch(/star all-reduce \(rank \d of 3, all-reduce #2\).*hub/);
    }
  });
});
