// Binary framing for all-reduce messages: a fixed 36-byte little-endian
// header followed by raw float32 bytes. A fixed, 4-byte-aligned header lets
// the receiver view the payload as a Float32Array without copying, and lets
// the ring rewrite the header of a received frame and forward it as is.

import { endianness } from 'node:os';

// Float32Array uses the platform byte order and the payload is sent raw.
// Every platform Node supports for this project is little-endian; refuse to
// run rather than silently exchange byte-swapped gradients.
if (endianness() !== 'LE') {
  throw new Error('all-reduce frames carry raw little-endian float32; this platform is big-endian');
}

/** "ARD1" read as a little-endian u32: identifies an all-reduce frame. */
export const FRAME_MAGIC = 0x31445241;
export const HEADER_BYTES = 36;
export const MAX_U32 = 0xffffffff;

export enum FrameType {
  /** Ring reduce-scatter: a partial sum travelling to the next rank. */
  ReduceScatter = 1,
  /** Ring all-gather: a fully reduced chunk travelling from its owner. */
  AllGather = 2,
  /** Star: a worker's gradient chunk going to the hub. */
  StarUp = 3,
  /** Star: the summed chunk coming back from the hub. */
  StarDown = 4,
  /** Connection handshake: the accepting side confirms who it is. */
  Hello = 5,
}

/**
 * How a frame's payload elements are encoded (see wire-format.ts). Carried in
 * the high byte of the `type` field, so fp32 frames (code 0) are bit for bit
 * the frames of earlier versions, and a rank that expects bf16 refuses an
 * fp16 frame of the same length instead of decoding garbage.
 */
export const WIRE_CODES = { fp32: 0, bf16: 1, fp16: 2 } as const;
export type WireCode = (typeof WIRE_CODES)[keyof typeof WIRE_CODES];
const WIRE_BY_CODE = ['fp32', 'bf16', 'fp16'] as const;
const WIRE_BYTES = [4, 2, 2] as const;

/** Bytes per payload element of wire code `wire`. */
export function wireBytes(wire: WireCode): 2 | 4 {
  return WIRE_BYTES[wire];
}

export interface FrameHeader {
  type: FrameType;
  /** Payload encoding; absent means fp32 (code 0). */
  wire?: WireCode;
  /** Identifies the training run, so frames from a stale run are rejected. */
  tag: number;
  seq: number;
  /** Length (elements) of the whole gradient being reduced. */
  total: number;
  /** Ring: stage within the phase (0..N-2). Star: 0. Hello: sender rank. */
  stage: number;
  /** Index of the chunk within its segment (ring) or gradient (star). */
  chunk: number;
  /** Element offset of the payload within the gradient. */
  offset: number;
  /** Number of float32 elements in the payload. */
  count: number;
}

const FIELD_NAMES = ['magic', 'type', 'tag', 'seq', 'total', 'stage', 'chunk', 'offset', 'count'] as const;

export function writeHeader(frame: Uint8Array, h: FrameHeader): void {
  const view = new DataView(frame.buffer, frame.byteOffset, HEADER_BYTES);
  const values = [FRAME_MAGIC, h.type | ((h.wire ?? 0) << 8), h.tag, h.seq, h.total, h.stage, h.chunk, h.offset, h.count];
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isInteger(v) || v < 0 || v > MAX_U32) {
      throw new RangeError(`frame header field ${FIELD_NAMES[i]} = ${v} is not a u32`);
    }
    view.setUint32(i * 4, v, true);
  }
}

/** Rewrites the type and stage of a frame in place (used when forwarding); keeps its wire code. */
export function retagFrame(frame: Uint8Array, type: FrameType, stage: number): void {
  const view = new DataView(frame.buffer, frame.byteOffset, HEADER_BYTES);
  view.setUint32(4, (view.getUint32(4, true) & 0xff00) | type, true);
  view.setUint32(20, stage, true);
}

/**
 * Uninitialized memory for a frame that is about to be filled completely
 * (skips zero-filling, which costs as much as the copy). allocUnsafeSlow
 * never hands out a slice of Node's shared pool, so byteOffset is 0 and the
 * payload at byte 36 is 4-byte aligned.
 */
function allocFrame(bytes: number): Uint8Array {
  // Returned as a plain Uint8Array: Buffer's slice() is a view, not a copy,
  // which would surprise callers that were promised a Uint8Array.
  return new Uint8Array(Buffer.allocUnsafeSlow(bytes).buffer, 0, bytes);
}

/** Allocates a frame and copies `payload` into it after the header. */
export function encodeFrame(h: FrameHeader, payload: Float32Array): Uint8Array {
  if (payload.length !== h.count) {
    throw new RangeError(`payload has ${payload.length} elements but the header says ${h.count}`);
  }
  const frame = allocFrame(HEADER_BYTES + payload.byteLength);
  writeHeader(frame, h);
  payloadView(frame).set(payload);
  return frame;
}

/** Thrown for any frame that does not parse; the message says what is wrong. */
export class FrameError extends Error {
  override name = 'FrameError';
}

/**
 * Reads and checks the header of a received frame: magic, a known type, and
 * a byte length that matches the element count. Semantic checks (seq, type
 * expected at this point, offsets) are the caller's job.
 */
export function readHeader(frame: Uint8Array): FrameHeader {
  const h = parseHeader(frame, frame.byteLength);
  // The star and the hello carry fp32 only; only the ring negotiates 16-bit
  // wires (it uses parseHeader and checks the code itself).
  if (h.wire !== undefined) {
    throw new FrameError(`${FrameType[h.type]} frame uses the ${WIRE_BY_CODE[h.wire]} wire format, which only ring frames may use`);
  }
  return h;
}

/**
 * readHeader for a frame whose first HEADER_BYTES bytes are `header` and
 * whose whole length (header included) is `frameBytes`: what a streaming
 * receiver knows before the payload has arrived.
 */
export function parseHeader(headerBytes: Uint8Array, frameBytes: number): FrameHeader {
  if (frameBytes < HEADER_BYTES || headerBytes.byteLength < HEADER_BYTES) {
    throw new FrameError(`frame of ${frameBytes} bytes is shorter than the ${HEADER_BYTES}-byte header`);
  }
  const view = new DataView(headerBytes.buffer, headerBytes.byteOffset, HEADER_BYTES);
  const magic = view.getUint32(0, true);
  if (magic !== FRAME_MAGIC) {
    throw new FrameError(
      `bad magic 0x${magic.toString(16).padStart(8, '0')} (expected 0x${FRAME_MAGIC.toString(16)}); ` +
        'the peer is not an all-reduce endpoint of this version',
    );
  }
  const typeField = view.getUint32(4, true);
  const type = typeField & 0xff;
  const wire = typeField >>> 8;
  if (typeof FrameType[type] !== 'string') {
    throw new FrameError(`unknown frame type ${typeField}`);
  }
  if (wire >= WIRE_BY_CODE.length) {
    throw new FrameError(`unknown wire format code ${wire} in a ${FrameType[type]} frame (known: ${WIRE_BY_CODE.join(', ')})`);
  }
  const header: FrameHeader = {
    type: type as FrameType,
    tag: view.getUint32(8, true),
    seq: view.getUint32(12, true),
    total: view.getUint32(16, true),
    stage: view.getUint32(20, true),
    chunk: view.getUint32(24, true),
    offset: view.getUint32(28, true),
    count: view.getUint32(32, true),
  };
  // Only 16-bit frames name their wire, so fp32 headers read as before.
  if (wire !== 0) header.wire = wire as WireCode;
  const width = WIRE_BYTES[wire];
  const expectedBytes = HEADER_BYTES + header.count * width;
  if (frameBytes !== expectedBytes) {
    const what = wire === 0 ? 'floats' : `${WIRE_BY_CODE[wire]} elements`;
    throw new FrameError(
      `${FrameType[header.type]} frame is ${frameBytes} bytes but its header announces ` +
        `${header.count} ${what} (${expectedBytes} bytes)`,
    );
  }
  if (header.offset + header.count > header.total) {
    throw new FrameError(
      `frame covers elements [${header.offset}, ${header.offset + header.count}) beyond the gradient length ${header.total}`,
    );
  }
  return header;
}

/**
 * Returns the frame itself when its payload can be viewed as float32 in
 * place, else one aligned copy of the whole frame. Transports hand out
 * buffers at arbitrary byte offsets (ws slices small messages out of the
 * socket's read buffer), and a Float32Array view needs a multiple of 4.
 */
export function alignFrame(frame: Uint8Array): Uint8Array {
  if (frame.byteOffset % 4 === 0) return frame;
  const copy = allocFrame(frame.byteLength);
  copy.set(frame);
  return copy;
}

/** The float32 payload of an aligned frame, as a view sharing its memory. */
export function payloadView(frame: Uint8Array): Float32Array {
  const count = (frame.byteLength - HEADER_BYTES) / 4;
  return new Float32Array(frame.buffer, frame.byteOffset + HEADER_BYTES, count);
}

/**
 * Checks that a frame belongs to the all-reduce in progress; returns what is
 * wrong, or undefined if it matches.
 */
export function runMismatch(h: FrameHeader, expected: { tag: number; seq: number; total: number }): string | undefined {
  if (h.tag !== expected.tag) {
    return `frame has run tag ${h.tag} but this run's tag is ${expected.tag} (a peer from another run?)`;
  }
  if (h.seq !== expected.seq) {
    return `frame is for all-reduce #${h.seq} but this rank is on all-reduce #${expected.seq}; the ranks are out of order`;
  }
  if (h.total !== expected.total) {
    return (
      `peer reduces a gradient of ${h.total} elements but this rank's has ${expected.total}; ` +
      'every rank must pass a buffer of the same length'
    );
  }
  return undefined;
}
