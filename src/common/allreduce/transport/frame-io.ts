// The ring's view of its two links: a FrameSender that sends a header beside
// a payload the caller still owns (no copy into a frame), and a
// FrameReceiver that streams each payload into a destination the ring picks
// once it has seen the header (the gradient itself for all-gather, a small
// scratch it sums from for reduce-scatter).
//
// The WebSocket ring links implement both natively (ws-vector-link.ts,
// ws-stream-link.ts). Any other Link (in-memory links in tests) is adapted
// here, with the copies a whole-frame Link implies.

import { encodeFrame, HEADER_BYTES, parseHeader, writeHeader, type FrameHeader } from '../frame.js';
import type { Link } from './link.js';

/** Where a FrameReceiver delivers one frame's payload; implemented by the ring. */
export interface PayloadSink {
  /**
   * A frame with this (parsed, length-checked) header has started. Return
   * the bytes its payload must be written into (exactly count * element
   * width long), or undefined to be handed the payload piece by piece via
   * `data`. Throwing rejects the frame and fails the receive.
   */
  header(h: FrameHeader): Uint8Array | undefined;
  /**
   * Payload bytes [at, at + bytes.length) of the current frame; each piece
   * but the last is a multiple of 4 bytes. The bytes are valid only during
   * the call (the receiver reuses its buffer).
   */
  data(bytes: Uint8Array, at: number): void;
  /**
   * The frame is complete. A returned promise holds back the next frame
   * until it settles (send back-pressure); a rejection fails the receive.
   */
  end(h: FrameHeader): void | Promise<void>;
}

export interface FrameReceiver {
  readonly peer: string;
  /** Streams the next `frames` frames into `sink`; resolves once the last `end` settled. */
  receive(sink: PayloadSink, frames: number): Promise<void>;
}

export interface FrameSender {
  readonly peer: string;
  readonly maxFrameBytes: number;
  /**
   * Sends one frame: `h` written beside `payload`. `payload` is not copied,
   * so it must not change until the promise settles; the promise settling is
   * also the back-pressure signal.
   */
  sendFrame(h: FrameHeader, payload: Uint8Array): Promise<void>;
}

function hasReceive(link: Link): link is Link & FrameReceiver {
  return typeof (link as Partial<FrameReceiver>).receive === 'function';
}

function hasSendFrame(link: Link): link is Link & FrameSender {
  return typeof (link as Partial<FrameSender>).sendFrame === 'function';
}

/** The link's own streaming receive, or one over `recv()` (a whole frame at a time). */
export function frameReceiver(link: Link): FrameReceiver {
  if (hasReceive(link)) return link;
  return {
    peer: link.peer,
    async receive(sink: PayloadSink, frames: number): Promise<void> {
      for (let i = 0; i < frames; i++) {
        const frame = await link.recv();
        const h = parseHeader(frame, frame.byteLength);
        const payload = frame.subarray(HEADER_BYTES);
        const dest = sink.header(h);
        if (dest) dest.set(payload);
        else sink.data(payload, 0);
        await sink.end(h);
      }
    },
  };
}

/** The link's own vectored send, or one that copies header and payload into a frame. */
export function frameSender(link: Link): FrameSender {
  if (hasSendFrame(link)) return link;
  return {
    peer: link.peer,
    maxFrameBytes: link.maxFrameBytes,
    sendFrame(h: FrameHeader, payload: Uint8Array): Promise<void> {
      if (h.wire === undefined || h.wire === 0) {
        const floats = new Float32Array(payload.buffer, payload.byteOffset, payload.byteLength / 4);
        return link.send(encodeFrame(h, floats));
      }
      const frame = new Uint8Array(HEADER_BYTES + payload.byteLength);
      writeHeader(frame, h);
      frame.set(payload, HEADER_BYTES);
      return link.send(frame);
    },
  };
}

/** Assembles one whole frame from a FrameReceiver (for Link.recv() on streaming links). */
export async function receiveWholeFrame(receiver: FrameReceiver): Promise<Uint8Array> {
  let frame: Uint8Array | undefined;
  await receiver.receive(
    {
      header(h) {
        const width = h.wire === 1 || h.wire === 2 ? 2 : 4;
        frame = new Uint8Array(HEADER_BYTES + h.count * width);
        writeHeader(frame, h);
        return frame.subarray(HEADER_BYTES);
      },
      data() {},
      end() {},
    },
    1,
  );
  return frame!;
}

