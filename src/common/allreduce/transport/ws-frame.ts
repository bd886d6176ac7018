// RFC 6455 framing, the few pieces the ring's own WebSocket ends need: the
// header of a frame we send, the parse of a frame header we receive with
// the same limits ws enforces, the opening handshake's key and accept
// values, and close frames. ws does all of this internally but exports none
// of it, and the ring's data links must frame and parse bytes themselves to
// avoid ws's copies (see ws-stream-link.ts and ws-vector-link.ts).

import { createHash, randomBytes } from 'node:crypto';

export const OPCODE_CONTINUATION = 0x0;
export const OPCODE_TEXT = 0x1;
export const OPCODE_BINARY = 0x2;
export const OPCODE_CLOSE = 0x8;
export const OPCODE_PING = 0x9;
export const OPCODE_PONG = 0xa;

/** Longest frame header: 2 bytes, 8 of extended length, 4 of mask. */
export const MAX_WS_HEADER_BYTES = 14;

const ACCEPT_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** A fresh Sec-WebSocket-Key (16 random bytes, base64). */
export function newWebSocketKey(): string {
  return randomBytes(16).toString('base64');
}

/** The Sec-WebSocket-Accept a server must answer `key` with (RFC 6455 section 4.2.2). */
export function acceptFor(key: string): string {
  return createHash('sha1').update(key + ACCEPT_GUID).digest('base64');
}

/**
 * Header of one final (FIN) frame with `payloadBytes` of payload. With
 * `mask`, the MASK bit is set and the masking key is all zero, so the payload
 * goes out unchanged: RFC 6455 asks clients for an unpredictable key to stop
 * hostile browser scripts from steering what an HTTP intermediary sees; no
 * script writes on these Node-to-Node links, and a zero key is valid framing
 * that ws accepts (star-wiring.ts makes the same choice).
 * `extra` bytes are reserved after the header for the caller (our frame header).
 */
export function wsFrameHeader(opcode: number, payloadBytes: number, mask: boolean, extra = 0): Buffer {
  const lenBytes = payloadBytes < 126 ? 0 : payloadBytes < 65536 ? 2 : 8;
  const maskBytes = mask ? 4 : 0;
  const out = Buffer.allocUnsafe(2 + lenBytes + maskBytes + extra);
  out[0] = 0x80 | opcode;
  const maskBit = mask ? 0x80 : 0;
  if (lenBytes === 0) {
    out[1] = maskBit | payloadBytes;
  } else if (lenBytes === 2) {
    out[1] = maskBit | 126;
    out.writeUInt16BE(payloadBytes, 2);
  } else {
    out[1] = maskBit | 127;
    out.writeUInt32BE(Math.floor(payloadBytes / 2 ** 32), 2);
    out.writeUInt32BE(payloadBytes >>> 0, 6);
  }
  if (mask) out.fill(0, 2 + lenBytes, 2 + lenBytes + 4);
  return out;
}

/** A whole close frame (code, reason cut to fit the 125-byte control limit). */
export function closeFrame(code: number, reason: string, mask: boolean): Buffer {
  const text = Buffer.from(reason, 'utf8').subarray(0, 123);
  const header = wsFrameHeader(OPCODE_CLOSE, 2 + text.length, mask);
  const body = Buffer.allocUnsafe(2 + text.length);
  body.writeUInt16BE(code, 0);
  text.copy(body, 2);
  return Buffer.concat([header, body]);
}

export interface WsFrameHead {
  /** Bytes of the header itself (2 to 10 here: masked frames are refused). */
  headerBytes: number;
  opcode: number;
  payloadBytes: number;
}

/** A frame header that breaks RFC 6455 or our limits; `closeCode` is what ws would close with. */
export class WsProtocolError extends Error {
  override name = 'WsProtocolError';
  constructor(
    message: string,
    readonly closeCode: number,
  ) {
    super(message);
  }
}

/**
 * Parses the header of a frame sent by a server to this client at
 * `bytes[at..end)`; returns undefined until the whole header is there.
 * Enforces what ws's Receiver enforces on a client without extensions: RSV
 * bits clear, known opcodes, control frames final and at most 125 bytes, no
 * mask from a server, a payload within `maxPayload` (ws: 1009). Stricter
 * than ws in one point: our peers never fragment messages, so a
 * non-final data frame or a continuation is refused as well.
 */
export function parseWsFrameHead(bytes: Uint8Array, at: number, end: number, maxPayload: number): WsFrameHead | undefined {
  if (end - at < 2) return undefined;
  const b0 = bytes[at];
  const b1 = bytes[at + 1];
  const fin = (b0 & 0x80) !== 0;
  const opcode = b0 & 0x0f;
  if ((b0 & 0x70) !== 0) throw new WsProtocolError('RSV bits set, but no extension was negotiated', 1002);
  if (b1 & 0x80) throw new WsProtocolError('the server masked a frame (RFC 6455 5.1: server frames are never masked)', 1002);
  const isControl = opcode >= 0x8;
  if (isControl) {
    if (opcode !== OPCODE_CLOSE && opcode !== OPCODE_PING && opcode !== OPCODE_PONG) {
      throw new WsProtocolError(`invalid opcode ${opcode}`, 1002);
    }
    if (!fin) throw new WsProtocolError('fragmented control frame', 1002);
  } else if (opcode === OPCODE_CONTINUATION || (!fin && opcode === OPCODE_BINARY)) {
    throw new WsProtocolError('fragmented message; ring links send every frame as one message', 1002);
  } else if (opcode !== OPCODE_BINARY && opcode !== OPCODE_TEXT) {
    throw new WsProtocolError(`invalid opcode ${opcode}`, 1002);
  }
  let len = b1 & 0x7f;
  let headerBytes = 2;
  if (len === 126) {
    if (end - at < 4) return undefined;
    len = (bytes[at + 2] << 8) | bytes[at + 3];
    headerBytes = 4;
  } else if (len === 127) {
    if (end - at < 10) return undefined;
    const hi = ((bytes[at + 2] << 24) | (bytes[at + 3] << 16) | (bytes[at + 4] << 8) | bytes[at + 5]) >>> 0;
    const lo = ((bytes[at + 6] << 24) | (bytes[at + 7] << 16) | (bytes[at + 8] << 8) | bytes[at + 9]) >>> 0;
    len = hi * 2 ** 32 + lo;
    headerBytes = 10;
  }
  if (isControl && len > 125) throw new WsProtocolError(`control frame of ${len} bytes (at most 125)`, 1002);
  if (len > maxPayload) {
    throw new WsProtocolError(`frame of ${len} bytes exceeds the ${maxPayload}-byte limit (maxFrameBytes)`, 1009);
  }
  return { headerBytes, opcode, payloadBytes: len };
}
