// All-reduce over real WebSocket connections on 127.0.0.1. Every rank runs as
// an async task in this process, each on its own sockets.

import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';

import {
  connectToStarHub,
  RingAllReducer,
  RingEndpoint,
  StarAllReducer,
  StarHub,
  StarHubServer,
  type AllReducer,
  type Link,
} from '../src/common/allreduce/index.js';
import { createLocalWsRing } from './helpers/local-ws-ring.js';

function gradient(length: number, rank: number, step: number): Float32Array {
  const g = new Float32Array(length);
  let s = (rank * 7919 + step * 104729 + 1) >>> 0;
  for (let i = 0; i < length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    g[i] = ((s / 2 ** 32) * 2 - 1) * 10 ** ((s % 7) - 3);
  }
  return g;
}

function referenceSum(grads: Float32Array[]): Float32Array {
  const acc = Float32Array.from(grads[0]);
  for (let r = 1; r < grads.length; r++) for (let i = 0; i < acc.length; i++) acc[i] += grads[r][i];
  return acc;
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Largest |a - b| / sum_r |g_r| over all elements. */
function worstRelativeError(a: Float32Array, b: Float32Array, grads: Float32Array[]): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    let scale = 0;
    for (const g of grads) scale += Math.abs(g[i]);
    worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(scale, 1e-30));
  }
  return worst;
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  await Promise.allSettled(cleanups.splice(0).map((c) => c()));
});

async function wsStar(worldSize: number, chunkElements?: number) {
  const server = await StarHubServer.listen({ worldSize, tag: 11 });
  const [hubLinks, workerLinks] = await Promise.all([
    server.accept(),
    Promise.all(
      Array.from({ length: worldSize }, (_, rank) => connectToStarHub(server.address, { rank, worldSize, tag: 11 })),
    ),
  ]);
  const hub = new StarHub(hubLinks, { tag: 11 });
  const serving = hub.serve();
  const reducers = workerLinks.map((l, rank) => new StarAllReducer(l, rank, worldSize, { tag: 11, chunkElements }));
  cleanups.push(() => hub.close(), ...reducers.map((r) => () => r.close()));
  return { hub, serving, reducers };
}

async function wsRing(worldSize: number, chunkElements?: number): Promise<RingAllReducer[]> {
  const links = await createLocalWsRing(worldSize, { tag: 11 });
  const reducers = links.map((l) => new RingAllReducer(l, { tag: 11, chunkElements }));
  cleanups.push(...reducers.map((r) => () => r.close()));
  return reducers;
}

async function reduceAll(reducers: AllReducer[], grads: Float32Array[], step: number): Promise<Float32Array[]> {
  const bufs = grads.map((g) => Float32Array.from(g));
  await Promise.all(reducers.map((r, rank) => r.allReduceSum(bufs[rank], step)));
  return bufs;
}

describe('ring and star over WebSockets', () => {
  for (const worldSize of [2, 3, 4]) {
    it(`N=${worldSize}: ring is bit-identical across ranks and close to the reference; star equals the reference`, async () => {
      const ring = await wsRing(worldSize, 65536);
      const { reducers: star } = await wsStar(worldSize, 65536);
      // Several consecutive steps; lengths that do not divide by N, and one below N.
      const lengths = worldSize === 4 ? [1, 7, 1000003] : [1, 7, 100003];
      let step = 0;
      for (const length of lengths) {
        for (let rep = 0; rep < 2; rep++, step++) {
          const grads = Array.from({ length: worldSize }, (_, r) => gradient(length, r, step));
          const reference = referenceSum(grads);
          const ringBufs = await reduceAll(ring, grads, step);
          const starBufs = await reduceAll(star, grads, step);
          for (let r = 0; r < worldSize; r++) {
            expect(sameBits(ringBufs[r], ringBufs[0])).toBe(true);
            expect(sameBits(starBufs[r], reference)).toBe(true);
          }
          expect(worstRelativeError(ringBufs[0], reference, grads)).toBeLessThanOrEqual(1e-6);
        }
      }
    });
  }

  it('keeps frames of a step that a neighbour starts early until this rank gets there', async () => {
    const ring = await wsRing(3, 16);
    const step0 = [0, 1, 2].map((r) => gradient(200, r, 0));
    const step1 = [0, 1, 2].map((r) => gradient(200, r, 1));
    let rank0AfterStep0: Float32Array | undefined;
    // Rank 0 goes straight on to step 1; its step-1 frames reach rank 1
    // while rank 1 is still in step 0 or idle between steps.
    const rank0 = ring[0].allReduceSum(step0[0], 0).then(() => {
      rank0AfterStep0 = Float32Array.from(step0[0]);
      return ring[0].allReduceSum(step1[0], 1);
    });
    await Promise.all([ring[1].allReduceSum(step0[1], 0), ring[2].allReduceSum(step0[2], 0)]);
    await new Promise((r) => setTimeout(r, 20));
    await Promise.all([ring[1].allReduceSum(step1[1], 1), ring[2].allReduceSum(step1[2], 1), rank0]);
    expect(sameBits(rank0AfterStep0!, step0[1]) && sameBits(step0[1], step0[2])).toBe(true);
    expect(sameBits(step1[0], step1[1]) && sameBits(step1[1], step1[2])).toBe(true);
    const fresh = [0, 1, 2].map((r) => gradient(200, r, 1));
    expect(worstRelativeError(step1[0], referenceSum(fresh), fresh)).toBeLessThanOrEqual(1e-6);
  });
});

describe('failures over WebSockets', () => {
  it('a malformed frame rejects with an error naming the sender; the neighbours fail too', async () => {
    const links = await createLocalWsRing(3);
    const reducers = links.map((l) => new RingAllReducer(l, { chunkElements: 8 }));
    cleanups.push(...reducers.map((r) => () => r.close()));
    const settled = Promise.allSettled([1, 2].map((r) => reducers[r].allReduceSum(gradient(40, r, 0), 0)));
    // Rank 0 misbehaves: a frame whose header announces more floats than it carries.
    const bogus = new Uint8Array(40);
    new DataView(bogus.buffer).setUint32(0, 0x31445241, true);
    new DataView(bogus.buffer).setUint32(4, 1, true);
    new DataView(bogus.buffer).setUint32(32, 1000, true);
    await links[0].toNext.send(bogus);
    const [r1, r2] = await settled;
    expect((r1 as PromiseRejectedResult).reason.message).toMatch(
      /rank 1 of 3, all-reduce #0\): bad frame from rank 0: ReduceScatter frame is 40 bytes but its header announces 1000 floats/,
    );
    expect((r2 as PromiseRejectedResult).reason.message).toMatch(/rank 2 of 3, all-reduce #0\): link with rank 1 closed/);
  });

  it('a connection lost mid-reduce rejects promptly, naming the rank', async () => {
    const links = await createLocalWsRing(3);
    const reducers = links.map((l) => new RingAllReducer(l, { chunkElements: 1024 }));
    cleanups.push(...reducers.map((r) => () => r.close()));
    const settled = Promise.allSettled([0, 1].map((r) => reducers[r].allReduceSum(gradient(100000, r, 4), 4)));
    // Simulate rank 2 crashing: its sockets vanish without a close handshake.
    // Both ring link kinds (WsVectorLink, WsStreamLink) can drop their socket without a close handshake.
    for (const l of [links[2].toNext, links[2].fromPrev]) (l as unknown as { terminate(): void }).terminate();
    const [r0, r1] = await settled;
    expect((r0 as PromiseRejectedResult).reason.message).toMatch(/rank 0 of 3, all-reduce #4\): link with rank 2 closed/);
    expect((r0 as PromiseRejectedResult).reason.peer).toBe('rank 2');
    expect(r1.status).toBe('rejected');
  });

  it('a text message is rejected as a protocol error', async () => {
    const links = await createLocalWsRing(2);
    const reducer = new RingAllReducer(links[1]);
    cleanups.push(() => reducer.close(), () => links[0].toNext.close(), () => links[0].fromPrev.close());
    const reduced = expect(reducer.allReduceSum(new Float32Array(4), 0)).rejects;
    (links[0].toNext as unknown as { ws: WebSocket }).ws.send('hello');
    await reduced.toThrow(/rank 0 sent a text message; all-reduce links carry binary frames only/);
  });

  it('the hub fails every worker when one of them disconnects', async () => {
    const { serving, reducers } = await wsStar(3, 1000);
    const settled = Promise.allSettled([0, 1].map((r) => reducers[r].allReduceSum(gradient(10000, r, 1), 1)));
    await reducers[2].close();
    await expect(serving).rejects.toThrow(/star hub.*link with rank 2 closed/);
    for (const r of await settled) {
      expect((r as PromiseRejectedResult).reason.message).toMatch(/star all-reduce \(rank [01] of 3, all-reduce #1\): link with hub closed/);
    }
  });
});

describe('connection handshake', () => {
  it('refuses a ring peer from another run, with the reason on the client side', async () => {
    const endpoint = await RingEndpoint.listen({ rank: 0, worldSize: 2, tag: 5 });
    cleanups.push(() => endpoint.close());
    const intruder = await RingEndpoint.listen({ rank: 1, worldSize: 2, tag: 6 });
    cleanups.push(() => intruder.close());
    await expect(intruder.connect(endpoint.address, { timeoutMs: 2000 })).rejects.toThrow(
      /ring rank 1: cannot connect to rank 0 .*refused the connection \(code 1008: run tag 6 does not match this run's tag 5\)/,
    );
  });

  it('refuses an unexpected star rank and a duplicate', async () => {
    const server = await StarHubServer.listen({ worldSize: 2 });
    cleanups.push(() => server.close());
    await expect(connectToStarHub(server.address, { rank: 1, worldSize: 3, timeoutMs: 2000 })).rejects.toThrow(
      /hub refused the connection \(code 1008: world size 3 does not match 2\)/,
    );
    const first: Link = await connectToStarHub(server.address, { rank: 0, worldSize: 2 });
    cleanups.push(() => first.close());
    await expect(connectToStarHub(server.address, { rank: 0, worldSize: 2, timeoutMs: 2000 })).rejects.toThrow(
      /rank 0 is already connected/,
    );
  });

  it('reports a peer that never comes up', async () => {
    const closed = await RingEndpoint.listen({ rank: 0, worldSize: 2 });
    const address = closed.address;
    await closed.close();
    const endpoint = await RingEndpoint.listen({ rank: 1, worldSize: 2 });
    await expect(endpoint.connect(address, { timeoutMs: 300 })).rejects.toThrow(
      /ring rank 1: (cannot connect to rank 0 at ws:\/\/127\.0\.0\.1.*ECONNREFUSED|rank 0 did not connect .* within 300 ms)/,
    );
  });
});
