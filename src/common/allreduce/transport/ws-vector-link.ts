// The sending end of a ring link: a WsLink (ws did the handshake, and ws
// still receives whatever the client sends: close frames) whose data frames
// we write to the socket ourselves, because ws.send takes one buffer and the
// ring's frame is two pieces: our 36-byte header and a view of the gradient.
// Joining them is the copy this file exists to avoid.
//
// One frame = one corked pair of writes, flushed by uncork as one writev:
//   [WebSocket header (unmasked: server -> client) | our frame header]  [payload view]
// Node keeps a reference to the payload view until the write callback, and
// the kernel copies it from there; nothing copies it in user space. Each
// frame's writes happen in one synchronous call, so they never interleave
// with ws's own writes (a pong, the close frame), which are whole frames too.
//
// Several frames may be in flight at once (the ring's SendWindow bounds the
// bytes); gloo keeps two 1 MiB segments in flight, we keep at least that.

import type { Socket } from 'node:net';
import { WebSocket } from 'ws';

import { HEADER_BYTES, writeHeader, type FrameHeader } from '../frame.js';
import type { FrameSender } from './frame-io.js';
import { OPCODE_BINARY, wsFrameHeader } from './ws-frame.js';
import { WsLink } from './ws-link.js';

export class WsVectorLink extends WsLink implements FrameSender {
  constructor(
    ws: WebSocket,
    private readonly socket: Socket,
    peer: string,
    maxFrameBytes: number,
  ) {
    super(ws, peer, maxFrameBytes);
  }

  /**
   * Sends `h` and `payload` as one binary message without copying `payload`;
   * the caller must leave those bytes alone until the promise settles (the
   * ring's reasons it can are in ring.ts).
   */
  sendFrame(h: FrameHeader, payload: Uint8Array): Promise<void> {
    if (this.ws.readyState !== WebSocket.OPEN || this.socket.destroyed) {
      return Promise.reject(new Error(`cannot send to ${this.peer}: link is closed`));
    }
    const messageBytes = HEADER_BYTES + payload.byteLength;
    if (messageBytes > this.maxFrameBytes) {
      return Promise.reject(new Error(`frame of ${messageBytes} bytes exceeds the ${this.maxFrameBytes}-byte limit of the link to ${this.peer}`));
    }
    const head = wsFrameHeader(OPCODE_BINARY, messageBytes, false, HEADER_BYTES);
    writeHeader(head.subarray(head.length - HEADER_BYTES), h);
    return new Promise((resolve, reject) => {
      const done = (err?: Error | null) => (err ? reject(new Error(`sending to ${this.peer} failed: ${err.message}`)) : resolve());
      if (payload.byteLength === 0) {
        this.socket.write(head, done);
        return;
      }
      this.socket.cork();
      this.socket.write(head);
      this.socket.write(payload, done);
      this.socket.uncork();
    });
  }

  /** Drops the connection without a close handshake (a crash, for tests). */
  terminate(): void {
    this.ws.terminate();
  }
}
