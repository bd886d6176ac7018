// The connecting side of an all-reduce WebSocket (steps 2 and 5 of the
// handshake in ws-handshake.ts): open the URL that names this rank, retry
// while the server is not up yet, and accept the socket as a link only after
// the server's hello proves it is the peer this rank meant to reach.

import { WebSocket } from 'ws';

import { errorMessage } from '../errors.js';
import { checkHello, peerUrl, type PeerAddress, type Role } from './ws-handshake.js';
import { WsLink } from './ws-link.js';
import type { Link } from './link.js';

export interface ConnectOptions {
  role: Role;
  rank: number;
  worldSize: number;
  tag: number;
  /** Id the server must answer with in its hello. */
  serverId: number;
  serverName: string;
  maxFrameBytes: number;
  timeoutMs: number;
  /** Mask this side's frames with an all-zero key (see star-wiring.ts). */
  zeroMask: boolean;
}

/**
 * Connects to a PeerServer and waits for its hello. Retries refused
 * connections until the timeout, since the peer may still be starting.
 */
export async function connectPeer(address: PeerAddress, o: ConnectOptions): Promise<Link> {
  const url = peerUrl(address, o.role, { rank: o.rank, worldSize: o.worldSize, tag: o.tag });
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
        checkHello(data, isBinary, { tag: o.tag, id: o.serverId, worldSize: o.worldSize });
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
