// The zero-copy ring and its wire formats: fp32 gives exactly the sums of
// the earlier ring (same order of additions, bit for bit); bf16 and fp16
// leave every replica with identical bits, close to the exact sum; and a
// live WebSocket ring link fed hostile bytes fails with an error naming the
// peer, without crashing or growing memory.

import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';

import { createMemoryRing, RingAllReducer, RingEndpoint, type RingLinks } from '../src/common/allreduce/index.js';
import { mod, RingLayout } from '../src/common/allreduce/layout.js';
import { wireFormat, type WireName } from '../src/common/allreduce/wire-format.js';
import { connectStreamPeer } from '../src/common/allreduce/transport/ws-stream-link.js';
import { createLocalWsRing } from './helpers/local-ws-ring.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

function gradient(length: number, rank: number, seed: number): Float32Array {
  const g = new Float32Array(length);
  let x = (rank + 1) * 2654435761 + seed * 97;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    g[i] = ((x / 2 ** 32) - 0.5) * 10 ** ((i % 7) - 3);
  }
  return g;
}

function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  const x = bits(a);
  const y = bits(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/**
 * The ring's arithmetic written out serially: segment g's chunk travels
 * from rank g+1 round the ring, each rank adding its own value in fp32, and
 * is encoded for every hop (the owner rounds it once at the end).
 */
function serialRing(grads: Float32Array[], wire: WireName): Float32Array {
  const n = grads.length;
  const fmt = wireFormat(wire);
  const layout = new RingLayout(grads[0].length, n, 1 << 30);
  const out = new Float32Array(grads[0].length);
  for (let g = 0; g < n; g++) {
    const { offset, count } = layout.segment(g);
    // Reduce-scatter stage 0 starts at the rank that owns segment g's data first: rank g.
    let acc = Float32Array.from(grads[g].subarray(offset, offset + count));
    for (let s = 1; s < n; s++) {
      const r = mod(g + s, n);
      const wireBytes = new Uint8Array(count * fmt.bytesPerElement);
      fmt.encode(acc, wireBytes);
      const mine = Float32Array.from(grads[r].subarray(offset, offset + count));
      fmt.accumulate(wireBytes, mine);
      acc = mine;
    }
    fmt.roundInPlace(acc);
    out.set(acc, offset);
  }
  return out;
}

async function reduceAll(ring: RingLinks[], grads: Float32Array[], wire: WireName, chunkElements: number): Promise<void> {
  const reducers = ring.map((l) => new RingAllReducer(l, { wire, chunkElements, tag: 3 }));
  cleanups.push(...reducers.map((r) => () => r.close()));
  await Promise.all(reducers.map((r, i) => r.allReduceSum(grads[i], 7)));
}

describe('ring wire formats', () => {
  for (const transport of ['memory', 'ws'] as const) {
    for (const wire of ['fp32', 'bf16', 'fp16'] as const) {
      for (const n of [2, 3, 4]) {
        it(`${transport}, ${wire}, N=${n}: every replica holds the same bits, those of the serial ring`, async () => {
          const length = 5003;
          const grads = Array.from({ length: n }, (_, r) => gradient(length, r, n));
          const expected = serialRing(grads, wire);
          const ring = transport === 'memory' ? createMemoryRing(n, { misalign: true }) : await createLocalWsRing(n, { tag: 3 });
          await reduceAll(ring, grads, wire, 97);
          for (const g of grads) expect(sameBits(g, expected)).toBe(true);
        });
      }
    }
  }

  it('fp32 sums equal the earlier ring bit for bit (own value + received, hop by hop)', async () => {
    const n = 3;
    const grads = Array.from({ length: n }, (_, r) => gradient(4000, r, 1));
    // The earlier ring computed received[i] += own[i]; IEEE addition commutes, so the bits match.
    const old = serialRing(grads, 'fp32');
    await reduceAll(await createLocalWsRing(n, { tag: 3 }), grads, 'fp32', 64);
    expect(sameBits(grads[0], old)).toBe(true);
  });

  it('bf16 and fp16 stay close to the exact sum', async () => {
    for (const wire of ['bf16', 'fp16'] as const) {
      const n = 4;
      const grads = Array.from({ length: n }, (_, r) => Float32Array.from(gradient(3000, r, 2), (v) => v / 10));
      const exact = new Float64Array(3000);
      for (const g of grads) g.forEach((v, i) => (exact[i] += v));
      await reduceAll(createMemoryRing(n), grads, wire, 128);
      const scale = Math.max(...exact.map(Math.abs));
      const tol = (wire === 'bf16' ? 2 ** -8 : 2 ** -11) * n * scale;
      for (let i = 0; i < 3000; i++) expect(Math.abs(grads[0][i] - exact[i])).toBeLessThanOrEqual(tol);
    }
  });

  it('refuses a frame in another wire format, naming the sender and the fix', async () => {
    const ring = await createLocalWsRing(2, { tag: 3 });
    const a = new RingAllReducer(ring[0], { wire: 'bf16', tag: 3 });
    const b = new RingAllReducer(ring[1], { wire: 'fp16', tag: 3 });
    cleanups.push(() => a.close(), () => b.close());
    const results = await Promise.allSettled([a.allReduceSum(new Float32Array(100), 0), b.allReduceSum(new Float32Array(100), 0)]);
    const messages = results.map((r) => (r as PromiseRejectedResult).reason?.message ?? '');
    expect(messages.join('\n')).toMatch(/bad frame from rank [01]: frame uses the (bf16|fp16) wire format but this rank uses (fp16|bf16); every rank must pass the same wire option/);
  });

  it('refuses an unknown wire name', () => {
    const [links] = createMemoryRing(2);
    expect(() => new RingAllReducer(links, { wire: 'int8' as WireName })).toThrow(/wire must be one of fp32, bf16, fp16/);
  });
});

/**
 * A fake predecessor: a raw TCP server that answers the ring handshake as a
 * ws server would (101 + hello), then writes `payload` bytes.
 */
async function hostilePredecessor(tag: number, rank: number, worldSize: number, payload: () => Buffer): Promise<{ port: number; close: () => Promise<void> }> {
  const { acceptFor, wsFrameHeader } = await import('../src/common/allreduce/transport/ws-frame.js');
  const { helloFrame } = await import('../src/common/allreduce/transport/ws-handshake.js');
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    let head = '';
    socket.on('data', (d) => {
      if (head.includes('\r\n\r\n')) return;
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      const key = /sec-websocket-key: *(\S+)/i.exec(head)![1];
      const hello = helloFrame(tag, rank, worldSize);
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(key)}\r\n\r\n`,
      );
      socket.write(Buffer.concat([wsFrameHeader(2, hello.length, false), hello]));
      setTimeout(() => socket.write(payload()), 10);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function seeded(seed: number): () => number {
  let x = seed >>> 0;
  return () => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

describe('hostile bytes on a live ring link', () => {
  it('random and mutated frames fail the all-reduce with an error naming the peer; memory stays bounded', async () => {
    const { wsFrameHeader } = await import('../src/common/allreduce/transport/ws-frame.js');
    const { writeHeader, FrameType } = await import('../src/common/allreduce/frame.js');
    const rand = seeded(42);
    const rssBefore = process.memoryUsage().rss;
    const cases: (() => Buffer)[] = [
      // Pure noise.
      () => Buffer.from(Array.from({ length: 4096 }, () => Math.floor(rand() * 256))),
      // A frame whose WebSocket length claims 2^40 bytes.
      () => Buffer.from([0x82, 127, 0, 0, 1, 0, 0, 0, 0, 0]),
      // A masked server frame, RSV bits, an unknown opcode, a text frame.
      () => Buffer.from([0x82, 0x80 | 4, 1, 2, 3, 4, 0, 0, 0, 0]),
      () => Buffer.from([0xc2, 0]),
      () => Buffer.from([0x83, 0]),
      () => Buffer.from([0x81, 2, 0x68, 0x69]),
      // A well-framed all-reduce frame with mutated fields.
      () => {
        const body = Buffer.alloc(36 + 40);
        writeHeader(body, { type: FrameType.ReduceScatter, tag: 3, seq: 0, total: 20, stage: 0, chunk: 0, offset: 0, count: 10 });
        body[4 + Math.floor(rand() * 32)] ^= 1 + Math.floor(rand() * 255);
        return Buffer.concat([wsFrameHeader(2, body.length, false), body]);
      },
    ];
    for (let i = 0; i < 30; i++) {
      const make = cases[i % cases.length];
      const fake = await hostilePredecessor(3, 0, 2, make);
      const endpoint = await RingEndpoint.listen({ rank: 1, worldSize: 2, tag: 3 });
      // Rank 1's successor is rank 0: a plain client stands in for it.
      const [links, successor] = await Promise.all([
        endpoint.connect({ host: '127.0.0.1', port: fake.port }, { timeoutMs: 5000 }),
        connectStreamPeer(endpoint.address, { rank: 0, worldSize: 2, tag: 3, serverId: 1, serverName: 'rank 1', maxFrameBytes: 1 << 20, timeoutMs: 5000 }),
      ]);
      const reducer = new RingAllReducer(links, { tag: 3, chunkElements: 10 });
      // A mutation may leave a valid frame; then the reduce waits for more, and closing it ends the wait.
      const timer = setTimeout(() => void reducer.close(), 500);
      const err = await reducer.allReduceSum(new Float32Array(20), 0).then(
        () => undefined,
        (e: Error) => e,
      );
      clearTimeout(timer);
      await reducer.close();
      await successor.close();
      await fake.close();
      expect(err?.message).toMatch(/rank 0/);
    }
    const grownMb = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
    expect(grownMb).toBeLessThan(200);
  }, 60_000);
});
