// Ring all-reduce (reduce-scatter, then all-gather) over two links per rank.
//
// The gradient is cut into N segments and each segment into K chunks (see
// RingLayout). In reduce-scatter stage s, rank r receives the partial sum of
// segment (r - s - 1) mod N from its predecessor, adds it into its own
// values and passes the new partial sum on; after N-1 stages rank r holds
// the full sum of segment (r + 1) mod N, which it then circulates in
// all-gather. Each rank sends and receives 2 (N-1) / N of the gradient bytes.
//
// Everything is per chunk, so the pipeline overlaps: a rank reduces chunk k
// while chunk k+1 is on the wire, and the owner of a chunk starts its
// all-gather as soon as that chunk is final.
//
// No copies on the hot path (fp32, over the WebSocket ring links):
// - reduce-scatter: the receiver sums each read's bytes into the gradient at
//   once (PayloadSink.data), while they are in cache, and forwards the new
//   partial sum straight from the gradient (FrameSender.sendFrame: header
//   beside a view, no frame assembled);
// - all-gather: the payload is read straight into the gradient (the sink's
//   `header` returns that range) and forwarded from there.
// Over other links (in-memory, in tests) frame-io.ts adapts, with copies.
//
// Why a region of `buf` handed to a send cannot change before that send
// completes: every region is written at most twice per all-reduce, once in
// reduce-scatter (the sum into it, before it is sent) and once in all-gather
// (the final value from its owner). The final value of a chunk is computed
// from the partial sum this rank sent, so it can only arrive after the next
// rank has read those bytes, i.e. after the kernel has taken them. The owner
// sends its final chunk and never writes it again. And allReduceSum resolves
// only after every send's callback (window.drain), so the caller cannot
// touch `buf` while a send still refers to it.
//
// Wire formats (`wire`, see wire-format.ts): fp32 keeps the exact semantics
// and sum order of earlier versions (buf + received, which in IEEE
// arithmetic is the same as received + buf). With bf16 or fp16, each rank's
// own contribution and every partial sum stay fp32; only what travels is
// rounded (once per hop). The owner rounds its final fp32 sum once
// (roundInPlace) and every rank, the owner included, stores those decoded
// bits. This is compression, and lossy: results are labelled so.
//
// Bit-identity across ranks: the final value of every chunk is computed once,
// by its owner, and everyone else stores those bytes (or their decoding).

import { FrameError, FrameType, runMismatch, WIRE_CODES, type FrameHeader, type WireCode } from './frame.js';
import { AllReduceError, errorMessage } from './errors.js';
import { checkRankAndWorld, checkReduceArgs, checkTag } from './checks.js';
import { ReduceGuard } from './reduce-guard.js';
import { checkChunkElements, DEFAULT_CHUNK_ELEMENTS, mod, RingLayout, type ElementRange } from './layout.js';
import { DEFAULT_MAX_IN_FLIGHT_BYTES, SendWindow } from './transport/send-window.js';
import { frameReceiver, frameSender, type FrameReceiver, type FrameSender, type PayloadSink } from './transport/frame-io.js';
import { addInto } from './sum.js';
import { WIRE_NAMES, wireFormat, type WireFormat, type WireName } from './wire-format.js';
import type { RingLinks } from './transport/link.js';
import type { AllReducer } from './reducer.js';

export interface RingAllReducerOptions {
  /** Elements per frame payload; default 262144 (1 MiB of fp32). */
  chunkElements?: number;
  /** Run tag carried in every frame; all ranks must agree. Default 0. */
  tag?: number;
  /** Bytes sent but not yet flushed before the reducer waits; default 32 MiB. */
  maxInFlightBytes?: number;
  /**
   * What travels between ranks: 'fp32' (default, exact), or 'bf16' / 'fp16'
   * (compressed: half the bytes, sums rounded on the wire; see the file
   * comment). All ranks must agree; a frame in another format is refused.
   */
  wire?: WireName;
}

/** Reusable encode buffers for 16-bit sends, one chunk each, recycled when their send settles. */
class EncodePool {
  private readonly free: Uint8Array[] = [];
  constructor(private readonly bytes: number) {}
  take(): Uint8Array {
    return this.free.pop() ?? new Uint8Array(this.bytes);
  }
  give(b: Uint8Array): void {
    this.free.push(b);
  }
}

export class RingAllReducer implements AllReducer {
  readonly rank: number;
  readonly worldSize: number;
  /** The wire format's name, for reports ('bf16' and 'fp16' are compressed). */
  readonly wire: WireName;
  private readonly chunkElements: number;
  private readonly tag: number;
  private readonly maxInFlightBytes: number;
  private readonly format: WireFormat;
  private readonly wireCode: WireCode;
  private readonly sender: FrameSender;
  private readonly receiver: FrameReceiver;
  private readonly pool: EncodePool;
  private readonly guard = new ReduceGuard(() => Promise.all([this.links.toNext.close(), this.links.fromPrev.close()]).then(() => {}));

  constructor(
    private readonly links: RingLinks,
    options: RingAllReducerOptions = {},
  ) {
    checkRankAndWorld(links.rank, links.worldSize);
    this.rank = links.rank;
    this.worldSize = links.worldSize;
    this.chunkElements = options.chunkElements ?? DEFAULT_CHUNK_ELEMENTS;
    this.tag = options.tag ?? 0;
    this.maxInFlightBytes = options.maxInFlightBytes ?? DEFAULT_MAX_IN_FLIGHT_BYTES;
    this.wire = options.wire ?? 'fp32';
    if (!WIRE_NAMES.includes(this.wire)) {
      throw new RangeError(`wire must be one of ${WIRE_NAMES.join(', ')}, got ${JSON.stringify(this.wire)}`);
    }
    this.format = wireFormat(this.wire);
    this.wireCode = WIRE_CODES[this.wire];
    checkTag(this.tag);
    checkChunkElements(this.chunkElements);
    const frameBytes = 36 + this.chunkElements * this.format.bytesPerElement;
    if (this.worldSize > 1 && frameBytes > links.toNext.maxFrameBytes) {
      throw new RangeError(
        `chunkElements ${this.chunkElements} makes ${frameBytes}-byte frames, above the ` +
          `${links.toNext.maxFrameBytes}-byte limit of the link to ${links.toNext.peer}; ` +
          'lower chunkElements or raise the link maxFrameBytes',
      );
    }
    this.sender = frameSender(links.toNext);
    this.receiver = frameReceiver(links.fromPrev);
    this.pool = new EncodePool(this.chunkElements * this.format.bytesPerElement);
  }

  async allReduceSum(buf: Float32Array, seq: number): Promise<void> {
    checkReduceArgs(buf, seq);
    await this.guard.run(this.where(seq), () => (this.worldSize === 1 ? Promise.resolve() : this.reduce(buf, seq)));
  }

  async close(): Promise<void> {
    await this.guard.close();
  }

  private where(seq: number): string {
    return `ring all-reduce (rank ${this.rank} of ${this.worldSize}, all-reduce #${seq})`;
  }

  private async reduce(buf: Float32Array, seq: number): Promise<void> {
    const layout = new RingLayout(buf.length, this.worldSize, this.chunkElements);
    const window = new SendWindow(this.maxInFlightBytes);
    const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    const fp32 = this.wireCode === WIRE_CODES.fp32;
    const { format, pool } = this;
    const base = { tag: this.tag, seq, total: buf.length, wire: this.wireCode };

    /** Sends buf[range] as one frame: a view (fp32) or a pooled encoding. */
    const send = (type: FrameType, stage: number, chunk: number, range: ElementRange, wait = true): Promise<void> | undefined => {
      const h: FrameHeader = { ...base, type, stage, chunk, offset: range.offset, count: range.count };
      if (fp32) {
        const payload = bytes.subarray(range.offset * 4, (range.offset + range.count) * 4);
        return window.track(this.sender.sendFrame(h, payload), payload.byteLength, undefined, wait);
      }
      const encoded = pool.take();
      const payload = encoded.subarray(0, range.count * 2);
      format.encode(buf.subarray(range.offset, range.offset + range.count), payload);
      return window.track(this.sender.sendFrame(h, payload), payload.byteLength, () => pool.give(encoded), wait);
    };

    // Stage 0 of reduce-scatter: this rank's own segment, straight from buf.
    const sendOwnSegment = async (): Promise<void> => {
      for (let j = 0; j < layout.chunksPerSegment; j++) {
        const held = send(FrameType.ReduceScatter, 0, j, layout.chunk(this.rank, j));
        if (held) await held;
      }
    };

    const sink = this.sink(buf, bytes, seq, layout, send);
    const frames = 2 * (this.worldSize - 1) * layout.chunksPerSegment;
    const receiving = this.receiver.receive(sink, frames).catch((err: unknown) => {
      throw this.receiveError(err, seq);
    });
    await Promise.all([sendOwnSegment(), receiving]);
    await window.drain();
  }

  private receiveError(err: unknown, seq: number): AllReduceError {
    if (err instanceof AllReduceError) return err;
    const peer = this.links.fromPrev.peer;
    if (err instanceof FrameError) {
      return new AllReduceError(`${this.where(seq)}: bad frame from ${peer}: ${err.message}`, peer, { cause: err });
    }
    return new AllReduceError(`${this.where(seq)}: ${errorMessage(err)}`, peer, { cause: err });
  }

  /** Where each received frame's bytes go, and what is sent on when it is complete. */
  private sink(
    buf: Float32Array,
    bytes: Uint8Array,
    seq: number,
    layout: RingLayout,
    send: (type: FrameType, stage: number, chunk: number, range: ElementRange, wait?: boolean) => Promise<void> | undefined,
  ): PayloadSink {
    const n = this.worldSize;
    const framesPerPhase = (n - 1) * layout.chunksPerSegment;
    const seen = new Uint8Array(2 * framesPerPhase);
    const expectedRun = { tag: this.tag, seq, total: buf.length };
    const format = this.format;
    const width = format.bytesPerElement;
    const fp32 = width === 4;
    let current: FrameHeader | undefined;

    return {
      header: (h) => {
        this.checkFrame(h, expectedRun, layout, seen, framesPerPhase);
        current = h;
        // All-gather in fp32: the final bytes land in place, no copy at all.
        if (fp32 && h.type === FrameType.AllGather) return bytes.subarray(h.offset * 4, (h.offset + h.count) * 4);
        return undefined;
      },
      data: (piece, at) => {
        const h = current!;
        const start = h.offset + at / width;
        const dst = buf.subarray(start, start + piece.byteLength / width);
        if (h.type === FrameType.ReduceScatter) {
          if (fp32 && piece.byteOffset % 4 === 0) {
            addInto(dst, new Float32Array(piece.buffer, piece.byteOffset, piece.byteLength / 4));
          } else {
            format.accumulate(piece, dst);
          }
        } else {
          format.decodeInto(piece, dst);
        }
      },
      end: (h) => {
        // Forwards are never awaited here. Holding the receive back until our
        // own sends drain would deadlock the ring: every rank's sends drain
        // only when its successor reads, and the successor would be waiting
        // for its own sends in turn. Reading always goes on instead; what is
        // in flight stays bounded by the all-reduce itself (one forward per
        // received frame; fp32 forwards are views of buf and cost no memory,
        // 16-bit ones one pooled chunk each).
        const range = { offset: h.offset, count: h.count };
        const last = h.stage === n - 2;
        if (h.type === FrameType.ReduceScatter) {
          if (last) {
            // This rank owns the chunk now: round its sum once (16-bit wires)
            // so that it keeps the very bits everyone else will decode.
            format.roundInPlace(buf.subarray(h.offset, h.offset + h.count));
            send(FrameType.AllGather, 0, h.chunk, range, false);
          } else {
            send(FrameType.ReduceScatter, h.stage + 1, h.chunk, range, false);
          }
        } else if (!last) {
          send(FrameType.AllGather, h.stage + 1, h.chunk, range, false);
        }
      },
    };
  }

  /** Checks a parsed header is one this rank expects now; throws naming the sender. */
  private checkFrame(
    h: FrameHeader,
    expectedRun: { tag: number; seq: number; total: number },
    layout: RingLayout,
    seen: Uint8Array,
    framesPerPhase: number,
  ): void {
    const peer = this.links.fromPrev.peer;
    const reject = (problem: string): never => {
      throw new AllReduceError(`${this.where(expectedRun.seq)}: bad frame from ${peer}: ${problem}`, peer);
    };
    const mismatch = runMismatch(h, expectedRun);
    if (mismatch) reject(mismatch);
    if ((h.wire ?? 0) !== this.wireCode) {
      const names = ['fp32', 'bf16', 'fp16'];
      reject(`frame uses the ${names[h.wire ?? 0]} wire format but this rank uses ${this.wire}; every rank must pass the same wire option`);
    }
    const n = this.worldSize;
    let phase: number;
    let segment: number;
    if (h.type === FrameType.ReduceScatter) {
      phase = 0;
      segment = mod(this.rank - h.stage - 1, n);
    } else if (h.type === FrameType.AllGather) {
      phase = 1;
      segment = mod(this.rank - h.stage, n);
    } else {
      return reject(`unexpected ${FrameType[h.type]} frame on a ring link`);
    }
    if (h.stage >= n - 1) reject(`stage ${h.stage} is out of range for ${n} ranks`);
    if (h.chunk >= layout.chunksPerSegment) {
      reject(`chunk ${h.chunk} is out of range (${layout.chunksPerSegment} chunks per segment)`);
    }
    const want = layout.chunk(segment, h.chunk);
    if (h.offset !== want.offset || h.count !== want.count) {
      reject(
        `${FrameType[h.type]} stage ${h.stage} chunk ${h.chunk} covers [${h.offset}, +${h.count}) ` +
          `but should cover [${want.offset}, +${want.count}); ranks disagree on chunkElements?`,
      );
    }
    const index = phase * framesPerPhase + h.stage * layout.chunksPerSegment + h.chunk;
    if (seen[index]) reject(`duplicate ${FrameType[h.type]} frame for stage ${h.stage} chunk ${h.chunk}`);
    seen[index] = 1;
  }
}
