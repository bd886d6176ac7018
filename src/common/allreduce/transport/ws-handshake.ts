// The terms both ends of an all-reduce WebSocket agree on before any
// gradient flows: the URL a client asks for, the hello frame a server
// answers with, the ids, and the limits. The same handshake opens a ring
// link (ring-wiring.ts) and a star link (star-wiring.ts):
//
//   1. The server (a ring rank's endpoint, or the star hub) listens on an
//      ephemeral or given port; its address reaches the client through the
//      coordinator (`ready {ringAddress}`, then `connect {peer}`).
//   2. The client opens ws://host:port/<role>?rank=R&worldSize=N&tag=T,
//      retrying a refused connection until its timeout, since the server
//      may still be starting (ws-client.ts).
//   3. The server admits it only if the role (the path), the run tag and the
//      world size are its own and R is a rank it expects that has not
//      connected yet; otherwise it closes the socket with code 1008 and the
//      reason, which the client reports (ws-server.ts).
//   4. The server sends a Hello frame naming itself (tag, total = world size,
//      stage = its id: its rank, or HUB_ID for the hub) and uses the socket
//      as a WsLink from then on.
//   5. The client checks the hello (binary, type Hello, tag, id, world size)
//      and uses the socket as a WsLink; a bad hello fails the connect.
//
// Both sides then hold one Link each; nothing else is exchanged before data.

import { FrameType, HEADER_BYTES, MAX_U32, readHeader, writeHeader, type FrameHeader } from '../frame.js';

/**
 * Default largest accepted message: 64 MiB, far above the default 1 MiB
 * chunk (ws's own default of 100 MiB would also do, but a stated limit makes
 * a misconfigured chunk size fail at construction, not mid-run).
 */
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024;
/** How long a connect (step 2 to 5) or a wait for a peer may take by default. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;
/** Hello frames identify the hub with this id instead of a rank. */
export const HUB_ID = MAX_U32;

export interface PeerAddress {
  host: string;
  port: number;
}

/** Which wiring a socket belongs to; also the URL's path. */
export type Role = 'ring' | 'star';

/** What a client says about itself in the URL (step 2). */
export interface PeerClaim {
  rank: number;
  worldSize: number;
  tag: number;
}

/** The URL of step 2. */
export function peerUrl(address: PeerAddress, role: Role, claim: PeerClaim): string {
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  const params = new URLSearchParams({ rank: String(claim.rank), worldSize: String(claim.worldSize), tag: String(claim.tag) });
  return `ws://${host}:${address.port}/${role}?${params}`;
}

/** The path and claim of a request URL (step 3); a missing or malformed number reads as NaN. */
export function readPeerUrl(url: string | undefined): { path: string } & PeerClaim {
  const parsed = new URL(url ?? '/', 'ws://x');
  const q = (name: string) => Number(parsed.searchParams.get(name) ?? NaN);
  return { path: parsed.pathname, rank: q('rank'), worldSize: q('worldSize'), tag: q('tag') };
}

/** The hello of step 4. */
export function helloFrame(tag: number, senderId: number, worldSize: number): Uint8Array {
  const frame = new Uint8Array(HEADER_BYTES);
  writeHeader(frame, { type: FrameType.Hello, tag, seq: 0, total: worldSize, stage: senderId, chunk: 0, offset: 0, count: 0 });
  return frame;
}

/** Step 5 on a parsed header: throws unless `h` is the hello of server `id` in this run and world size. */
export function checkHelloHeader(h: FrameHeader, expected: { tag: number; id: number; worldSize: number }): void {
  if (h.type !== FrameType.Hello) throw new Error(`expected a Hello frame, got ${FrameType[h.type]}`);
  if (h.tag !== expected.tag || h.stage !== expected.id || h.total !== expected.worldSize) {
    throw new Error(`hello names tag ${h.tag}, id ${h.stage}, world size ${h.total}; expected ${expected.tag}, ${expected.id}, ${expected.worldSize}`);
  }
}

/** Step 5: throws unless `data` is the hello of server `id` in this run and world size. */
export function checkHello(data: Buffer, isBinary: boolean, expected: { tag: number; id: number; worldSize: number }): void {
  if (!isBinary) throw new Error('expected a binary hello frame');
  const h = readHeader(data);
  if (h.type !== FrameType.Hello) throw new Error(`expected a Hello frame, got ${FrameType[h.type]}`);
  if (h.tag !== expected.tag || h.stage !== expected.id || h.total !== expected.worldSize) {
    throw new Error(`hello names tag ${h.tag}, id ${h.stage}, world size ${h.total}; expected ${expected.tag}, ${expected.id}, ${expected.worldSize}`);
  }
}
