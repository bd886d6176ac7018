// One open WebSocket as a Link (ws 8): binary frames out, binary frames in,
// and every way the socket can end (close, error, a text message) turned into
// a `recv` that rejects naming the peer. The sockets are opened and admitted
// elsewhere (ws-server.ts, ws-client.ts); this file only moves frames.
//
// Performance choices, measured on loopback:
// - perMessageDeflate is off (both sides, where the sockets are made): float
//   noise does not compress, it only costs CPU.
// - A frame is one preallocated buffer (header + floats) sent as one binary
//   message; ws writes it to the socket without copying.
// - Masking costs a pass over every byte a client sends; how the ring and
//   the star avoid it is in ring-wiring.ts and star-wiring.ts.

import { WebSocket } from 'ws';

import { FrameQueue } from './frame-queue.js';
import type { Link } from './link.js';

/** How long a locally closed link waits for the peer's close before it drops the socket. */
const CLOSE_GRACE_MS = 2_000;

/** A Link over one open WebSocket. */
export class WsLink implements Link {
  private readonly inbox = new FrameQueue();

  constructor(
    protected readonly ws: WebSocket,
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
