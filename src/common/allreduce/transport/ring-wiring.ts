// Wiring the ring: each rank's RingEndpoint listens for its successor and
// connects to its predecessor, which gives it the two links of RingLinks.
//
// Orientation: client-to-server messages must be masked (RFC 6455), which
// would cost a pass over every byte. Data therefore flows server -> client
// on every ring link: rank r listens, rank r+1 mod N connects to it, and
// each rank *receives* on the connection it opened (toNext is the accepted
// socket, a WsVectorLink that sends header + payload views with writev;
// fromPrev the one it opened, a WsStreamLink, our own client that parses
// frames straight into the gradient; see those files).
//
// The ring handshake, for rank r of N (the coordinator relays addresses):
//
//   1. r listens: RingEndpoint.listen({ rank: r, worldSize: N, host, port, tag }),
//      admitting only rank (r + 1) mod N, with this run's tag and N;
//   2. r reports endpoint.address to the coordinator (`ready {ringAddress}`);
//   3. once every rank is ready, the coordinator sends r the address of rank
//      (r - 1) mod N (`connect {peer}`);
//   4. endpoint.connect(peer) does two things at once: it connects to the
//      predecessor's endpoint (the handshake of ws-handshake.ts, expecting
//      the predecessor's hello), and waits for the successor to connect here;
//   5. when both links are up, r stops listening and has its RingLinks. If
//      either fails or times out, both are closed (no half-built ring) and
//      connect rejects naming r.
//
// A ring over some of the group's ranks (the hierarchical all-reduce's ring
// of a local leader and the other processes, coordinator/group.ts) keeps the
// group's ranks and world size in the handshake: the endpoint listens
// before anyone knows which ranks will be its neighbours, so it listens with
// `admit: 'any'` (any other rank of the group, once), and connect names the
// predecessor and successor (`prevRank`, `nextRank`). The links it returns
// still carry the group rank and world size; the caller renumbers them for
// the ring it runs (see hierarchical.ts).

import { checkRankAndWorld, checkTag } from '../checks.js';
import { errorMessage } from '../errors.js';
import { connectStreamPeer } from './ws-stream-link.js';
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_MAX_FRAME_BYTES, type PeerAddress } from './ws-handshake.js';
import { PeerServer } from './ws-server.js';
import type { RingLinks } from './link.js';

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
  /**
   * Whom to admit: 'successor' (default), only rank (rank + 1) mod N; 'any',
   * any other rank of the world once (connect then waits for `nextRank`):
   * for an endpoint whose neighbours are decided after it listens.
   */
  admit?: 'successor' | 'any';
}

export interface RingConnectOptions {
  timeoutMs?: number;
  /** The predecessor's rank, whose hello is expected; default (rank - 1) mod N. */
  prevRank?: number;
  /** The successor's rank, which must connect here; default (rank + 1) mod N (one the endpoint admits). */
  nextRank?: number;
}

/**
 * One rank's half of ring setup (steps 1, 4 and 5 above):
 *
 *   const endpoint = await RingEndpoint.listen({ rank, worldSize, host, port });
 *   report(endpoint.address);             // to the coordinator
 *   const links = await endpoint.connect(prevAddress);
 */
export class RingEndpoint {
  private constructor(
    private readonly server: PeerServer,
    readonly rank: number,
    readonly worldSize: number,
    private readonly tag: number,
    private readonly maxFrameBytes: number,
    private readonly admit: 'successor' | 'any',
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
      ranks: options.admit === 'any'
        ? Array.from({ length: worldSize }, (_, r) => r).filter((r) => r !== rank)
        : [(rank + 1) % worldSize],
      maxFrameBytes,
    });
    return new RingEndpoint(server, rank, worldSize, tag, maxFrameBytes, options.admit ?? 'successor');
  }

  /** Where this rank's successor must connect (report it to the coordinator). */
  get address(): PeerAddress {
    return this.server.address;
  }

  /**
   * Connects to the predecessor's endpoint and waits for the successor to
   * connect here; then stops listening.
   */
  async connect(prevAddress: PeerAddress, options: RingConnectOptions = {}): Promise<RingLinks> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const prev = options.prevRank ?? (this.rank - 1 + this.worldSize) % this.worldSize;
    const next = options.nextRank ?? (this.rank + 1) % this.worldSize;
    for (const [what, r] of [['prevRank', prev], ['nextRank', next]] as const) {
      if (!Number.isInteger(r) || r < 0 || r >= this.worldSize || r === this.rank) {
        throw new RangeError(`ring rank ${this.rank}: ${what} must be another rank in [0, ${this.worldSize}), got ${r}`);
      }
    }
    if (this.admit === 'successor' && next !== (this.rank + 1) % this.worldSize) {
      throw new RangeError(`ring rank ${this.rank}: this endpoint admits only rank ${(this.rank + 1) % this.worldSize}, not ${next} (listen with admit 'any')`);
    }
    const fromPrevP = connectStreamPeer(prevAddress, {
      rank: this.rank,
      worldSize: this.worldSize,
      tag: this.tag,
      serverId: prev,
      serverName: `rank ${prev}`,
      maxFrameBytes: this.maxFrameBytes,
      timeoutMs,
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
