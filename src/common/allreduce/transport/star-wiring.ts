// Wiring the star: the hub (in the coordinator) listens and accepts one link
// from every rank; each worker connects to it. Both use the handshake of
// ws-handshake.ts, the hub answering with the id HUB_ID instead of a rank.
//
// Masking: the star's uploads necessarily go client -> server, and RFC 6455
// makes clients mask what they send, which costs ws an XOR and a copy of
// every payload. `zeroMask` (on for the star client by default) uses an
// all-zero masking key, which is valid framing and lets ws skip both.
// Masking only protects HTTP intermediaries from script-crafted bytes, which
// does not apply to Node-to-Node links.

import { checkRankAndWorld, checkTag } from '../checks.js';
import { connectPeer } from './ws-client.js';
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_MAX_FRAME_BYTES, HUB_ID, type PeerAddress } from './ws-handshake.js';
import { PeerServer } from './ws-server.js';
import type { Link } from './link.js';

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
