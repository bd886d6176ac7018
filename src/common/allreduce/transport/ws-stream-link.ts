// The receiving end of a ring link: our own WebSocket client that parses
// RFC 6455 frames straight out of the socket into buffers the ring chooses.
//
// Why not ws: ws's receiver takes whatever 64 KiB buffers Node allocates
// for each socket read, then gathers every 1 MiB message into a new buffer
// (a copy), and the ring copied once more into the gradient. Node can read
// into memory we pick (`net.Socket` option `onread: { buffer, callback }`,
// whose `buffer` function is asked for the target of every next read), but
// that option exists only when the socket is constructed, and ws's client
// builds its own socket. So this side of the ring handshake is ours: a GET
// with Upgrade, a check of the 101 and its Sec-WebSocket-Accept, then frames.
// The server side stays ws (ws-server.ts), which does the handshake; its
// sending is ours too (ws-vector-link.ts) but it receives only control frames.
//
// Where each read lands (nextReadBuffer):
// - all-gather payload (fp32): straight into the gradient, at the chunk's
//   offset (the ring's PayloadSink returns that range from `header`);
// - reduce-scatter payload (and 16-bit all-gather): a 256 KiB scratch that
//   the sink sums (or decodes) from at once, while the bytes are in cache;
// - frame headers and control frames: a small scratch. When one read there
//   also brings payload bytes, those few are copied to where they belong.
// A frame's header is parsed and checked (ws's limits, then the all-reduce
// header via the sink) before any of its payload lands anywhere.
//
// Masking: data flows server -> client on ring links, and RFC 6455 forbids
// servers to mask, so nothing needs unmasking here (a masked frame from the
// server is refused, as RFC 6455 5.1 says). The few frames this side sends
// (close, pong) are masked with an all-zero key (ws-frame.ts says why).
//
// Back-pressure: while no receive() is active, or while the sink's `end`
// holds a frame back, reading pauses (the socket's own flow control then
// slows the sender) instead of buffering the peer's data.

import { connect, type Socket } from 'node:net';

import { FrameError, HEADER_BYTES, parseHeader, type FrameHeader } from '../frame.js';
import { errorMessage } from '../errors.js';
import { receiveWholeFrame, type FrameReceiver, type PayloadSink } from './frame-io.js';
import {
  acceptFor,
  closeFrame,
  newWebSocketKey,
  OPCODE_BINARY,
  OPCODE_CLOSE,
  OPCODE_PING,
  OPCODE_TEXT,
  parseWsFrameHead,
  wsFrameHeader,
  WsProtocolError,
} from './ws-frame.js';
import { checkHelloHeader, peerUrl, type PeerAddress } from './ws-handshake.js';
import type { Link } from './link.js';
import type { ConnectOptions } from './ws-client.js';

/** Header scratch: reads of at most READ_BYTES into a buffer twice that size always leave room. */
const READ_BYTES = 64 * 1024;
const SCRATCH_BYTES = 2 * READ_BYTES;
/** Payload scratch for sums: small enough that a read's bytes are still in L2 when summed. */
const PAYLOAD_SCRATCH_BYTES = 256 * 1024;
const MAX_HTTP_RESPONSE_BYTES = 16 * 1024;
const CLOSE_GRACE_MS = 2_000;

/** What ws-client.ts's connect takes, less what a ring data link never varies (it is always the client, never masked). */
export type StreamConnectOptions = Omit<ConnectOptions, 'role' | 'zeroMask'>;

type State = 'http' | 'frame' | 'payload';
type Target = 'scratch' | 'dest' | 'pay';

/** A receive-only ring link over our own WebSocket client; see the file comment. */
export class WsStreamLink implements Link, FrameReceiver {
  private readonly socket: Socket;
  private readonly scratch = new Uint8Array(SCRATCH_BYTES);
  private start = 0;
  private end = 0;
  private state: State = 'http';
  private target: Target = 'scratch';

  // The data frame being received.
  private header: FrameHeader | undefined;
  private dest: Uint8Array | undefined;
  private payloadBytes = 0;
  /** Payload bytes received so far (into dest, pay or scratch). */
  private received = 0;
  private readonly pay = new Uint8Array(PAYLOAD_SCRATCH_BYTES);
  /** Bytes at the start of `pay` not yet handed to the sink (at most 3 between reads). */
  private payFill = 0;
  /** Payload offset of pay[0]. */
  private payAt = 0;

  private sink: PayloadSink | undefined;
  private framesLeft = 0;
  private receiving: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private blocked = false;
  private failure: Error | undefined;
  /**
   * Whether onRead last returned false. Node then stops reading, but the
   * socket's isPaused() stays false (net.Socket's onread pause is internal),
   * so we keep the state ourselves.
   */
  private paused = false;
  private closeSent = false;
  private readonly closed: Promise<void>;
  private recvBusy = false;

  private handshake:
    | { key: string; resolve: () => void; reject: (e: Error) => void; expected: { tag: number; id: number; worldSize: number } }
    | undefined;

  private constructor(
    address: PeerAddress,
    readonly peer: string,
    readonly maxFrameBytes: number,
  ) {
    this.socket = connect({
      host: address.host,
      port: address.port,
      onread: {
        buffer: () => this.nextReadBuffer(),
        callback: (n: number) => this.onRead(n),
      },
    });
    this.socket.setNoDelay(true);
    this.closed = new Promise((resolve) => this.socket.once('close', () => resolve()));
    this.socket.on('error', (err) => this.fail(new Error(`link with ${this.peer} failed: ${err.message}`), err));
    this.socket.on('close', () => this.fail(new Error(`link with ${this.peer} closed (code 1006 (connection lost))`)));
    this.socket.on('end', () => this.fail(new Error(`link with ${this.peer} closed (code 1006 (connection lost))`)));
  }

  /** Opens one connection and completes the handshake (steps 2 and 5 of ws-handshake.ts). */
  static open(address: PeerAddress, o: StreamConnectOptions, deadline: number): Promise<WsStreamLink> {
    const link = new WsStreamLink(address, o.serverName, o.maxFrameBytes);
    const url = new URL(peerUrl(address, 'ring', { rank: o.rank, worldSize: o.worldSize, tag: o.tag }));
    const key = newWebSocketKey();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        link.fail(new Error(`no hello within ${o.timeoutMs} ms`));
      }, Math.max(0, deadline - Date.now()));
      link.handshake = {
        key,
        expected: { tag: o.tag, id: o.serverId, worldSize: o.worldSize },
        resolve: () => {
          clearTimeout(timer);
          link.handshake = undefined;
          resolve(link);
        },
        reject: (e) => {
          clearTimeout(timer);
          link.handshake = undefined;
          link.socket.destroy();
          reject(e);
        },
      };
      link.socket.once('connect', () => {
        link.socket.write(
          `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
        );
      });
    });
  }

  // -- Link ------------------------------------------------------------------

  /** Rarely used (data flows the other way): a masked binary message, zero key. */
  send(frame: Uint8Array): Promise<void> {
    if (this.failure) return Promise.reject(new Error(`cannot send to ${this.peer}: link is closed`));
    return new Promise((resolve, reject) => {
      this.socket.cork();
      this.socket.write(wsFrameHeader(OPCODE_BINARY, frame.byteLength, true));
      this.socket.write(frame, (err) => (err ? reject(new Error(`sending to ${this.peer} failed: ${err.message}`)) : resolve()));
      this.socket.uncork();
    });
  }

  async recv(): Promise<Uint8Array> {
    if (this.recvBusy) throw new Error('Link.recv() called while another recv() is pending; receive sequentially');
    this.recvBusy = true;
    try {
      return await receiveWholeFrame(this);
    } finally {
      this.recvBusy = false;
    }
  }

  close(): Promise<void> {
    if (!this.failure) {
      this.fail(new Error(`link with ${this.peer} was closed locally`), undefined, 1000, 'all-reduce link closed');
    }
    return this.closed;
  }

  /** Drops the connection without a close handshake (a crash, for tests). */
  terminate(): void {
    this.socket.destroy();
  }

  // -- FrameReceiver -----------------------------------------------------------

  receive(sink: PayloadSink, frames: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.sink) return Promise.reject(new Error(`receive() on the link from ${this.peer} while another receive is active`));
    if (frames <= 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.sink = sink;
      this.framesLeft = frames;
      this.receiving = { resolve, reject };
      this.pumpAndResume();
    });
  }

  // -- reading -----------------------------------------------------------------

  /** Node asks this for the target of every next read; never empty. */
  private nextReadBuffer(): Uint8Array {
    if (this.state === 'payload' && this.start === this.end && !this.failure) {
      const remaining = this.payloadBytes - this.received;
      if (remaining > 0) {
        if (this.dest) {
          this.target = 'dest';
          return this.dest.subarray(this.received, this.payloadBytes);
        }
        this.target = 'pay';
        return this.pay.subarray(this.payFill, this.payFill + Math.min(remaining, PAYLOAD_SCRATCH_BYTES - this.payFill));
      }
    }
    this.target = 'scratch';
    if (this.start === this.end) {
      this.start = this.end = 0;
    } else if (SCRATCH_BYTES - this.end < READ_BYTES) {
      // Unparsed bytes here are at most one read plus a partial header, so
      // moving them to the front always leaves READ_BYTES of room.
      this.scratch.copyWithin(0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    return this.scratch.subarray(this.end, this.end + READ_BYTES);
  }

  private onRead(n: number): boolean {
    if (this.failure) {
      // Closing: discard whatever still comes until the peer's FIN.
      this.start = this.end = 0;
      return true;
    }
    try {
      if (this.target === 'scratch') {
        this.end += n;
      } else if (this.target === 'dest') {
        this.received += n;
      } else {
        this.payFill += n;
        this.received += n;
        this.flushPay(this.received === this.payloadBytes);
      }
      this.pump();
    } catch (err) {
      this.failOn(err);
    }
    // A failed link keeps reading until the socket ends: the peer's disconnect
    // after its close frame is what lets close() resolve without its grace timer.
    const more = this.failure ? !this.socket.destroyed : this.wantsData();
    this.paused = !more;
    return more;
  }

  private wantsData(): boolean {
    if (this.failure || this.blocked) return false;
    // Pause when a data frame waits for a receiver; keep reading otherwise,
    // so a close from the peer is seen even between all-reduces.
    return this.sink !== undefined || this.state === 'http' || this.start === this.end;
  }

  private pumpAndResume(): void {
    try {
      this.pump();
    } catch (err) {
      this.failOn(err);
    }
    if (this.wantsData()) this.resumeReading();
  }

  private resumeReading(): void {
    if (!this.paused) return;
    this.paused = false;
    this.socket.resume();
  }

  /** Parses what the scratch holds, as far as it can. */
  private pump(): void {
    while (!this.failure && !this.blocked) {
      if (this.state === 'http') {
        if (!this.parseHttpResponse()) return;
      } else if (this.state === 'frame') {
        if (!this.parseFrameStart()) return;
      } else {
        if (this.received === this.payloadBytes) {
          this.finishFrame();
          continue;
        }
        if (this.start === this.end) return;
        const n = Math.min(this.end - this.start, this.payloadBytes - this.received);
        const piece = this.scratch.subarray(this.start, this.start + n);
        this.start += n;
        if (this.dest) {
          this.dest.set(piece, this.received);
          this.received += n;
        } else {
          this.pay.set(piece, this.payFill);
          this.payFill += n;
          this.received += n;
          this.flushPay(this.received === this.payloadBytes);
        }
      }
    }
  }

  /** Hands the whole 4-byte words of `pay` (all of it at the end) to the sink. */
  private flushPay(last: boolean): void {
    const k = last ? this.payFill : this.payFill & ~3;
    if (k === 0) return;
    this.sink!.data(this.pay.subarray(0, k), this.payAt);
    this.payAt += k;
    this.pay.copyWithin(0, k, this.payFill);
    this.payFill -= k;
  }

  private parseHttpResponse(): boolean {
    const text = Buffer.from(this.scratch.buffer, this.start, this.end - this.start).toString('latin1');
    const endOfHead = text.indexOf('\r\n\r\n');
    if (endOfHead < 0) {
      if (this.end - this.start > MAX_HTTP_RESPONSE_BYTES) throw new Error(`${this.peer} sent an HTTP response head over ${MAX_HTTP_RESPONSE_BYTES} bytes`);
      return false;
    }
    this.start += endOfHead + 4;
    const [statusLine, ...lines] = text.slice(0, endOfHead).split('\r\n');
    const status = /^HTTP\/1\.1 (\d{3})/.exec(statusLine);
    if (!status) throw new Error(`${this.peer} did not answer with HTTP/1.1 (got ${JSON.stringify(statusLine.slice(0, 80))})`);
    if (status[1] !== '101') throw new Error(`${this.peer} answered ${JSON.stringify(statusLine.slice(0, 80))} instead of switching to WebSocket`);
    const headers = new Map<string, string>();
    for (const line of lines) {
      const colon = line.indexOf(':');
      if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    const problems: string[] = [];
    if (headers.get('upgrade')?.toLowerCase() !== 'websocket') problems.push('no "Upgrade: websocket"');
    if (!/(^|,)\s*upgrade\s*(,|$)/i.test(headers.get('connection') ?? '')) problems.push('no "Connection: Upgrade"');
    if (headers.get('sec-websocket-accept') !== acceptFor(this.handshake?.key ?? '')) problems.push('a wrong Sec-WebSocket-Accept');
    if (headers.has('sec-websocket-extensions')) problems.push('an extension we did not offer');
    if (headers.has('sec-websocket-protocol')) problems.push('a subprotocol we did not offer');
    if (problems.length) throw new Error(`${this.peer}'s WebSocket handshake answer has ${problems.join(', ')}`);
    this.state = 'frame';
    return true;
  }

  /** A frame header in the scratch: control frames are handled whole, data frames start. */
  private parseFrameStart(): boolean {
    const head = parseWsFrameHead(this.scratch, this.start, this.end, this.maxFrameBytes);
    if (!head) return false;
    const { headerBytes, opcode, payloadBytes } = head;
    if (opcode >= 0x8) {
      if (this.end - this.start < headerBytes + payloadBytes) return false;
      const body = this.scratch.subarray(this.start + headerBytes, this.start + headerBytes + payloadBytes);
      this.start += headerBytes + payloadBytes;
      this.onControl(opcode, body);
      return true;
    }
    if (opcode === OPCODE_TEXT) {
      throw new WsProtocolError(`${this.peer} sent a text message; all-reduce links carry binary frames only`, 1003);
    }
    const available = this.end - this.start - headerBytes;
    if (payloadBytes >= HEADER_BYTES && available < HEADER_BYTES) return false;
    const sink = this.handshake ? this.helloSink() : this.sink;
    // No receiver yet: leave the frame unparsed and pause (wantsData).
    if (!sink) return false;
    const h = parseHeader(this.scratch.subarray(this.start + headerBytes, this.start + headerBytes + Math.min(HEADER_BYTES, available)), payloadBytes);
    this.start += headerBytes + HEADER_BYTES;
    this.header = h;
    this.payloadBytes = payloadBytes - HEADER_BYTES;
    this.received = 0;
    this.payFill = 0;
    this.payAt = 0;
    this.state = 'payload';
    this.dest = sink.header(h);
    if (this.dest && this.dest.byteLength !== this.payloadBytes) {
      throw new Error(`receiver gave ${this.dest.byteLength} bytes for a ${this.payloadBytes}-byte payload`);
    }
    return true;
  }

  private finishFrame(): void {
    const h = this.header!;
    this.state = 'frame';
    this.header = undefined;
    this.dest = undefined;
    if (this.handshake) {
      this.handshake.resolve();
      return;
    }
    const sink = this.sink!;
    const last = --this.framesLeft === 0;
    if (last) this.sink = undefined;
    const held = sink.end(h);
    if (held) {
      this.blocked = true;
      held.then(
        () => {
          this.blocked = false;
          if (last) this.finishReceive();
          this.pumpAndResume();
        },
        (err: unknown) => this.failOn(err),
      );
    } else if (last) {
      this.finishReceive();
    }
  }

  private finishReceive(): void {
    const r = this.receiving;
    this.receiving = undefined;
    r?.resolve();
  }

  private helloSink(): PayloadSink {
    const expected = this.handshake!.expected;
    return {
      header: (h) => {
        try {
          checkHelloHeader(h, expected);
        } catch (err) {
          throw new Error(`bad hello from ${this.peer}: ${errorMessage(err)}`);
        }
        return undefined;
      },
      data() {},
      end() {},
    };
  }

  private onControl(opcode: number, body: Uint8Array): void {
    if (opcode === OPCODE_PING) {
      this.socket.write(Buffer.concat([wsFrameHeader(0xa, body.length, true), body]));
    } else if (opcode === OPCODE_CLOSE) {
      const code = body.length >= 2 ? (body[0] << 8) | body[1] : 1005;
      const reason = Buffer.from(body.subarray(2)).toString('utf8');
      const message = this.handshake
        ? `${this.peer} refused the connection (code ${code}${reason ? `: ${reason}` : ''})`
        : `link with ${this.peer} closed (code ${code}${reason ? `: ${reason}` : ''})`;
      this.fail(new Error(message), undefined, code === 1005 ? 1000 : code, '');
    }
    // Pongs are ignored: this side never pings.
  }

  // -- failure -----------------------------------------------------------------

  private failOn(err: unknown): void {
    if (err instanceof WsProtocolError) {
      const message = err.message.startsWith(this.peer) ? err.message : `${this.peer} broke the WebSocket framing: ${err.message}`;
      this.fail(new Error(message), err, err.closeCode, err.message);
    } else if (err instanceof FrameError) {
      // The ring names the sender ("bad frame from rank R") when it wraps this.
      this.fail(err, undefined, 1002, err.message);
    } else {
      this.fail(err instanceof Error ? err : new Error(String(err)), undefined, 1002, errorMessage(err));
    }
  }

  /**
   * Ends the link once: every waiter rejects with `reason`. With a close
   * code, a close frame goes out first (and the socket is dropped if the
   * peer does not finish the close within CLOSE_GRACE_MS); without one, the
   * socket is gone already or is dropped at once.
   */
  private fail(reason: Error, cause?: unknown, closeCode?: number, closeReason = ''): void {
    if (this.failure) return;
    this.failure = cause && reason.cause === undefined ? new Error(reason.message, { cause }) : reason;
    this.sink = undefined;
    const r = this.receiving;
    this.receiving = undefined;
    r?.reject(this.failure);
    this.handshake?.reject(this.failure);
    // A read may already be aimed at the caller's gradient (nextReadBuffer):
    // drop the socket at once then, so no late bytes land there.
    const aimedAtCaller = this.target !== 'scratch';
    if (closeCode !== undefined && !aimedAtCaller && !this.socket.destroyed && this.socket.writable) {
      if (!this.closeSent) {
        this.closeSent = true;
        this.socket.end(closeFrame(closeCode, closeReason, true));
      }
      const timer = setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS);
      timer.unref();
      this.socket.once('close', () => clearTimeout(timer));
      // Keep reading (and discarding) so the peer's close and FIN arrive.
      this.state = 'frame';
      this.start = this.end = 0;
      this.resumeReading();
    } else {
      this.socket.destroy();
    }
  }
}

/**
 * Connects to the predecessor's ring endpoint with a WsStreamLink. Retries
 * refused connections until the timeout, since the peer may still be starting.
 */
export async function connectStreamPeer(address: PeerAddress, o: StreamConnectOptions): Promise<WsStreamLink> {
  const url = peerUrl(address, 'ring', { rank: o.rank, worldSize: o.worldSize, tag: o.tag });
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    try {
      return await WsStreamLink.open(address, o, deadline);
    } catch (err) {
      const code = ((err as Error).cause as NodeJS.ErrnoException | undefined)?.code;
      if (code !== 'ECONNREFUSED' || Date.now() >= deadline) {
        throw new Error(`cannot connect to ${o.serverName} at ${url}: ${errorMessage(err)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
