// Links over WebSockets (ws 8), and the handshakes that wire them into a
// ring or a star.
//
// Performance choices, measured on loopback:
// - perMessageDeflate is off: float noise does not compress, it only costs CPU.
// - A frame is one preallocated buffer (header + floats) sent as one binary
//   message; ws writes it to the socket without copying.
// - Client-to-server messages must be masked (RFC 6455), which makes ws XOR
//   and copy the whole payload. Ring links are therefore oriented so data
//   flows server -> client: each rank is the client of its predecessor's
//   server and only receives on that connection.
// - The star's uploads necessarily go client -> server; `zeroMask` (on for the
//   star client) uses an all-zero masking key, which is valid framing and lets
//   ws skip the XOR and the copy. Masking only protects HTTP intermediaries
//   from script-crafted bytes, which does not apply to Node-to-Node links.

import { WebSocket, WebSocketServer } from 'ws';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import { FrameType, HEADER_BYTES, MAX_U32, readHeader, writeHeader } from '../frame.js';
import { FrameQueue } from './frame-queue.js';
import { checkRankAndWorld, checkTag } from '../checks.js';
import { errorMessage } from '../errors.js';
import type { Link, RingLinks } from './link.js';

/**
 * Default largest accepted message: 64 MiB, far above the default 1 MiB
 * chunk (ws's own default of 100 MiB would also do, but a stated limit makes
 * a misconfigured chunk size fail at construction, not mid-run).
 */
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024;
const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;
const CLOSE_GRACE_MS = 2_000;
/** Hello frames identify the hub with this id instead of a rank. */
const HUB_ID = MAX_U32;

export interface PeerAddress {
  host: string;
  port: number;
}

function wsUrl(address: PeerAddress, path: string, query: Record<string, number>): string {
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  const params = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)]));
  return `ws://${host}:${address.port}${path}?${params}`;
}

/** A Link over one open WebSocket. */
export class WsLink implements Link {
  private readonly inbox = new FrameQueue();

  constructor(
    private readonly ws: WebSocket,
    readonly peer: string,
    readonly maxFrameBytes: number,
  ) {
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) {
        this.inbox.end(new Error(`${peer} sent a text message; all-reduce links carry binary frames only`));
        ws.terminate();
        return;
      }
      this.inbox.push(data);
    });
    ws.on('close', (code: number, reason: Buffer) => {
      const why = reason.length > 0 ? `: ${reason.toString()}` : code === 1006 ? ' (connection lost)' : '';
      this.inbox.end(new Error(`link with ${peer} closed (code ${code}${why})`));
    });
    ws.on('error', (err: Error) => {
      this.inbox.end(new Error(`link with ${peer} failed: ${err.message}`));
    });
  }

  send(frame: Uint8Array): Promise<void> {
    if (this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Error(`cannot send to ${this.peer}: link is closed`));
    }
    return new Promise((resolve, reject) => {
      // The callback fires once the bytes are handed to the kernel, so the
      // caller's buffer is free again and the window can advance.
      this.ws.send(frame, { binary: true, compress: false }, (err) => {
        if (err) reject(new Error(`sending to ${this.peer} failed: ${err.message}`));
        else resolve();
      });
    });
  }

  recv(): Promise<Uint8Array> {
    return this.inbox.next();
  }

  close(): Promise<void> {
    this.inbox.discard();
    this.inbox.end(new Error(`link with ${this.peer} was closed locally`));
    const ws = this.ws;
    if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
      ws.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      if (ws.readyState === WebSocket.OPEN) ws.close(1000, 'all-reduce link closed');
      else if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
    });
  }
}

function helloFrame(tag: number, senderId: number, worldSize: number): Uint8Array {
  const frame = new Uint8Array(HEADER_BYTES);
  writeHeader(frame, { type: FrameType.Hello, tag, seq: 0, total: worldSize, stage: senderId, chunk: 0, offset: 0, count: 0 });
  return frame;
}

type Role = 'ring' | 'star';

interface Expectation {
  role: Role;
  tag: number;
  worldSize: number;
  /** The id this server answers with in its hello (a rank, or HUB_ID). */
  selfId: number;
  /** Ranks allowed to connect; each at most once. */
  ranks: number[];
  maxFrameBytes: number;
}

/**
 * A WebSocket server that accepts only the expected peers: each client names
 * its role, rank, world size and run tag in the URL; a mismatch is refused
 * with a close reason the client reports. Accepted peers get a hello frame.
 */
class PeerServer {
  private readonly waiting = new Map<number, { resolve: (l: Link) => void; reject: (e: Error) => void }>();
  private readonly accepted = new Map<number, Link>();
  private failure: Error | undefined;

  private constructor(
    private readonly http: Server,
    private readonly wss: WebSocketServer,
    private readonly expect: Expectation,
    readonly address: PeerAddress,
  ) {
    wss.on('connection', (ws, req) => this.onConnection(ws, req));
    wss.on('error', (err) => this.failAll(new Error(`all-reduce server failed: ${err.message}`)));
  }

  static listen(host: string, port: number, expect: Expectation): Promise<PeerServer> {
    // We own the HTTP server (rather than passing `port` to ws) so that we
    // can stop listening without waiting for the accepted connections to end.
    const http = createServer();
    const wss = new WebSocketServer({
      server: http,
      perMessageDeflate: false,
      maxPayload: expect.maxFrameBytes,
      clientTracking: false,
    });
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => {
        wss.close();
        reject(new Error(`cannot listen for all-reduce peers on ${host}:${port}: ${err.message}`));
      };
      http.once('error', onError);
      http.listen(port, host, () => {
        http.off('error', onError);
        const info = http.address() as AddressInfo;
        resolve(new PeerServer(http, wss, expect, { host: info.address, port: info.port }));
      });
    });
  }

  /** The link to `rank`, once that rank has connected. */
  waitFor(rank: number, timeoutMs: number): Promise<Link> {
    const ready = this.accepted.get(rank);
    if (ready) return Promise.resolve(ready);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(rank);
        reject(new Error(`rank ${rank} did not connect to ${this.describe()} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(rank, {
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  /** Stops listening; accepted connections stay open. */
  close(): Promise<void> {
    this.failAll(new Error(`${this.describe()} was closed before every peer connected`));
    if (this.http.listening) {
      this.wss.close();
      this.http.close();
    }
    return Promise.resolve();
  }

  private describe(): string {
    const { host, port } = this.address;
    const who = this.expect.selfId === HUB_ID ? 'the star hub' : `ring rank ${this.expect.selfId}`;
    return `${who} at ${host}:${port}`;
  }

  private failAll(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
  }

  private onConnection(ws: WebSocket, req: IncomingMessage): void {
    const problem = this.refusalReason(req);
    const rank = Number(new URL(req.url ?? '/', 'ws://x').searchParams.get('rank'));
    if (problem) {
      // Close reasons are limited to 123 bytes.
      ws.close(1008, problem.slice(0, 123));
      return;
    }
    const peer = `rank ${rank}`;
    const link = new WsLink(ws, peer, this.expect.maxFrameBytes);
    this.accepted.set(rank, link);
    ws.send(helloFrame(this.expect.tag, this.expect.selfId, this.expect.worldSize), { binary: true });
    const waiter = this.waiting.get(rank);
    this.waiting.delete(rank);
    waiter?.resolve(link);
  }

  private refusalReason(req: IncomingMessage): string | undefined {
    const url = new URL(req.url ?? '/', 'ws://x');
    const q = (name: string) => Number(url.searchParams.get(name) ?? NaN);
    const e = this.expect;
    if (url.pathname !== `/${e.role}`) return `this is a ${e.role} endpoint, not ${url.pathname}`;
    if (q('tag') !== e.tag) return `run tag ${q('tag')} does not match this run's tag ${e.tag}`;
    if (q('worldSize') !== e.worldSize) return `world size ${q('worldSize')} does not match ${e.worldSize}`;
    const rank = q('rank');
    if (!e.ranks.includes(rank)) return `rank ${rank} is not expected here (expected ${e.ranks.join(', ')})`;
    if (this.accepted.has(rank)) return `rank ${rank} is already connected`;
    return undefined;
  }
}

interface ConnectOptions {
  role: Role;
  rank: number;
  worldSize: number;
  tag: number;
  /** Id the server must answer with in its hello. */
  serverId: number;
  serverName: string;
  maxFrameBytes: number;
  timeoutMs: number;
  zeroMask: boolean;
}

/**
 * Connects to a PeerServer and waits for its hello. Retries refused
 * connections until the timeout, since the peer may still be starting.
 */
async function connectPeer(address: PeerAddress, o: ConnectOptions): Promise<Link> {
  const url = wsUrl(address, `/${o.role}`, { rank: o.rank, worldSize: o.worldSize, tag: o.tag });
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    try {
      return await connectOnce(url, o, deadline);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ECONNREFUSED' || Date.now() >= deadline) {
        throw new Error(`cannot connect to ${o.serverName} at ${url}: ${errorMessage(err)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

function connectOnce(url: string, o: ConnectOptions, deadline: number): Promise<Link> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      perMessageDeflate: false,
      maxPayload: o.maxFrameBytes,
      ...(o.zeroMask ? { generateMask: (mask: Buffer) => mask.fill(0) } : {}),
    });
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`no hello within ${o.timeoutMs} ms`));
    }, Math.max(0, deadline - Date.now()));
    const settle = (err: Error | undefined, link?: Link) => {
      clearTimeout(timer);
      ws.off('message', onMessage);
      ws.off('close', onClose);
      ws.off('error', onError);
      if (err) {
        ws.terminate();
        reject(err);
      } else {
        resolve(link!);
      }
    };
    const onError = (err: Error) => settle(err);
    const onClose = (code: number, reason: Buffer) =>
      settle(new Error(`${o.serverName} refused the connection (code ${code}${reason.length ? `: ${reason}` : ''})`));
    // Runs synchronously inside ws's message dispatch, so the WsLink's own
    // listener is in place before the next message can be emitted.
    const onMessage = (data: Buffer, isBinary: boolean) => {
      try {
        if (!isBinary) throw new Error('expected a binary hello frame');
        const h = readHeader(data);
        if (h.type !== FrameType.Hello) throw new Error(`expected a Hello frame, got ${FrameType[h.type]}`);
        if (h.tag !== o.tag || h.stage !== o.serverId || h.total !== o.worldSize) {
          throw new Error(`hello names tag ${h.tag}, id ${h.stage}, world size ${h.total}; expected ${o.tag}, ${o.serverId}, ${o.worldSize}`);
        }
      } catch (err) {
        settle(new Error(`bad hello from ${o.serverName}: ${errorMessage(err)}`));
        return;
      }
      settle(undefined, new WsLink(ws, o.serverName, o.maxFrameBytes));
    };
    ws.on('message', onMessage);
    ws.on('close', onClose);
    ws.on('error', onError);
  });
}

// ---------------------------------------------------------------------------
// Ring wiring

export interface RingEndpointOptions {
  rank: number;
  worldSize: number;
  /** Interface to listen on; default 127.0.0.1. */
  host?: string;
  /** Port to listen on; default 0 (ephemeral). */
  port?: number;
  /** Run tag; all ranks must agree. Default 0. */
  tag?: number;
  maxFrameBytes?: number;
}

/**
 * One rank's half of ring setup. Usage (the coordinator relays addresses):
 *
 *   const endpoint = await RingEndpoint.listen({ rank, worldSize, host, port });
 *   report(endpoint.address);             // to the coordinator
 *   const links = await endpoint.connect(prevAddress);
 *
 * Data flows from each rank's server to the next rank's client (unmasked
 * server-to-client frames), so a rank connects to its predecessor and
 * accepts its successor.
 */
export class RingEndpoint {
  private constructor(
    private readonly server: PeerServer,
    readonly rank: number,
    readonly worldSize: number,
    private readonly tag: number,
    private readonly maxFrameBytes: number,
  ) {}

  static async listen(options: RingEndpointOptions): Promise<RingEndpoint> {
    const { rank, worldSize } = options;
    checkRankAndWorld(rank, worldSize);
    const tag = options.tag ?? 0;
    checkTag(tag);
    const maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    const server = await PeerServer.listen(options.host ?? '127.0.0.1', options.port ?? 0, {
      role: 'ring',
      tag,
      worldSize,
      selfId: rank,
      ranks: [(rank + 1) % worldSize],
      maxFrameBytes,
    });
    return new RingEndpoint(server, rank, worldSize, tag, maxFrameBytes);
  }

  /** Where this rank's successor must connect (report it to the coordinator). */
  get address(): PeerAddress {
    return this.server.address;
  }

  /**
   * Connects to the predecessor's endpoint and waits for the successor to
   * connect here; then stops listening.
   */
  async connect(prevAddress: PeerAddress, options: { timeoutMs?: number } = {}): Promise<RingLinks> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const prev = (this.rank - 1 + this.worldSize) % this.worldSize;
    const next = (this.rank + 1) % this.worldSize;
    const fromPrevP = connectPeer(prevAddress, {
      role: 'ring',
      rank: this.rank,
      worldSize: this.worldSize,
      tag: this.tag,
      serverId: prev,
      serverName: `rank ${prev}`,
      maxFrameBytes: this.maxFrameBytes,
      timeoutMs,
      zeroMask: false, // this side never sends data
    });
    const toNextP = this.server.waitFor(next, timeoutMs);
    try {
      const [fromPrev, toNext] = await Promise.all([fromPrevP, toNextP]);
      return { rank: this.rank, worldSize: this.worldSize, toNext, fromPrev };
    } catch (err) {
      // Do not leave a half-built ring open. Closing the server first makes a
      // still-pending wait for the successor reject at once.
      await this.server.close();
      await Promise.allSettled([fromPrevP, toNextP].map(async (p) => (await p).close()));
      throw new Error(`ring rank ${this.rank}: ${errorMessage(err)}`, { cause: err });
    } finally {
      await this.server.close();
    }
  }

  /** Stops listening (if `connect` has not already). */
  close(): Promise<void> {
    return this.server.close();
  }
}

/** For tests and benchmarks: a full ring of `worldSize` ranks on 127.0.0.1 with ephemeral ports. */
export async function createLocalWsRing(
  worldSize: number,
  options: { tag?: number; maxFrameBytes?: number } = {},
): Promise<RingLinks[]> {
  const endpoints = await Promise.all(
    Array.from({ length: worldSize }, (_, rank) => RingEndpoint.listen({ rank, worldSize, ...options })),
  );
  return Promise.all(
    endpoints.map((e) => e.connect(endpoints[(e.rank - 1 + worldSize) % worldSize].address)),
  );
}

// ---------------------------------------------------------------------------
// Star wiring

export interface StarHubServerOptions {
  worldSize: number;
  host?: string;
  port?: number;
  tag?: number;
  maxFrameBytes?: number;
}

/** The hub's listening side: accepts one connection from each rank. */
export class StarHubServer {
  private constructor(
    private readonly server: PeerServer,
    readonly worldSize: number,
  ) {}

  static async listen(options: StarHubServerOptions): Promise<StarHubServer> {
    const { worldSize } = options;
    checkRankAndWorld(0, worldSize);
    const tag = options.tag ?? 0;
    checkTag(tag);
    const server = await PeerServer.listen(options.host ?? '127.0.0.1', options.port ?? 0, {
      role: 'star',
      tag,
      worldSize,
      selfId: HUB_ID,
      ranks: Array.from({ length: worldSize }, (_, r) => r),
      maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
    });
    return new StarHubServer(server, worldSize);
  }

  get address(): PeerAddress {
    return this.server.address;
  }

  /** Waits for every rank to connect; returns the links indexed by rank and stops listening. */
  async accept(options: { timeoutMs?: number } = {}): Promise<Link[]> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const pending = Array.from({ length: this.worldSize }, (_, r) => this.server.waitFor(r, timeoutMs));
    try {
      return await Promise.all(pending);
    } catch (err) {
      await this.server.close();
      await Promise.allSettled(pending.map(async (p) => (await p).close()));
      throw err;
    } finally {
      await this.server.close();
    }
  }

  close(): Promise<void> {
    return this.server.close();
  }
}

export interface StarClientOptions {
  rank: number;
  worldSize: number;
  tag?: number;
  maxFrameBytes?: number;
  timeoutMs?: number;
  /** Send uploads with an all-zero mask (see the file comment); default true. */
  zeroMask?: boolean;
}

/** A worker's link to the star hub. */
export function connectToStarHub(hub: PeerAddress, options: StarClientOptions): Promise<Link> {
  checkRankAndWorld(options.rank, options.worldSize);
  const tag = options.tag ?? 0;
  checkTag(tag);
  return connectPeer(hub, {
    role: 'star',
    rank: options.rank,
    worldSize: options.worldSize,
    tag,
    serverId: HUB_ID,
    serverName: 'hub',
    maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
    timeoutMs: options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    zeroMask: options.zeroMask ?? true,
  });
}
