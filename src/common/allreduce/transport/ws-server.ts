// The listening side of an all-reduce WebSocket (steps 1, 3 and 4 of the
// handshake in ws-handshake.ts): one HTTP server with a ws server on it that
// admits only the peers it expects, each at most once, greets each admitted
// peer with a hello, and hands its link to whoever waits for that rank. A
// ring rank's endpoint and the star hub are both a PeerServer.

import { WebSocket, WebSocketServer } from 'ws';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

import { helloFrame, HUB_ID, readPeerUrl, type PeerAddress, type Role } from './ws-handshake.js';
import { WsLink } from './ws-link.js';
import { WsVectorLink } from './ws-vector-link.js';
import type { Link } from './link.js';

/** Whom a PeerServer admits. */
export interface Expectation {
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
export class PeerServer {
  private readonly waiting = new Map<number, { resolve: (l: Link) => void; reject: (e: Error) => void }>();
  private readonly accepted = new Map<number, Link>();
  private failure: Error | undefined;

  private constructor(
    private readonly http: Server,
    private readonly wss: WebSocketServer,
    private readonly expect: Expectation,
    readonly address: PeerAddress,
  ) {
    // ws does the opening handshake; we route the upgrade ourselves only to
    // keep the raw socket, on which a ring link sends its frames
    // (ws-vector-link.ts).
    http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, req, socket));
    });
    wss.on('error', (err) => this.failAll(new Error(`all-reduce server failed: ${err.message}`)));
  }

  static listen(host: string, port: number, expect: Expectation): Promise<PeerServer> {
    // We own the HTTP server (rather than passing `port` to ws) so that we
    // can stop listening without waiting for the accepted connections to end.
    const http = createServer();
    const wss = new WebSocketServer({
      noServer: true,
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

  /** Steps 3 and 4: admit or refuse, then greet. */
  private onConnection(ws: WebSocket, req: IncomingMessage, socket: Socket): void {
    const claim = readPeerUrl(req.url);
    const problem = this.refusalReason(claim);
    if (problem) {
      // Close reasons are limited to 123 bytes.
      ws.close(1008, problem.slice(0, 123));
      return;
    }
    const { rank } = claim;
    const link =
      this.expect.role === 'ring'
        ? new WsVectorLink(ws, socket, `rank ${rank}`, this.expect.maxFrameBytes)
        : new WsLink(ws, `rank ${rank}`, this.expect.maxFrameBytes);
    this.accepted.set(rank, link);
    ws.send(helloFrame(this.expect.tag, this.expect.selfId, this.expect.worldSize), { binary: true });
    const waiter = this.waiting.get(rank);
    this.waiting.delete(rank);
    waiter?.resolve(link);
  }

  private refusalReason(claim: ReturnType<typeof readPeerUrl>): string | undefined {
    const e = this.expect;
    const { path, tag, worldSize, rank } = claim;
    if (path !== `/${e.role}`) return `this is a ${e.role} endpoint, not ${path}`;
    if (tag !== e.tag) return `run tag ${tag} does not match this run's tag ${e.tag}`;
    if (worldSize !== e.worldSize) return `world size ${worldSize} does not match ${e.worldSize}`;
    if (!e.ranks.includes(rank)) return `rank ${rank} is not expected here (expected ${e.ranks.join(', ')})`;
    if (this.accepted.has(rank)) return `rank ${rank} is already connected`;
    return undefined;
  }
}
