// Ring all-reduce (reduce-scatter, then all-gather) over two links per rank.
//
// The gradient is cut into N segments and each segment into K chunks (see
// RingLayout). In reduce-scatter stage s, rank r receives the partial sum of
// segment (r - s - 1) mod N from its predecessor, adds its own values and
// passes it on; after N-1 stages rank r holds the full sum of segment
// (r + 1) mod N, which it then circulates in all-gather. Each rank sends and
// receives 2 (N-1) / N of the gradient bytes.
//
// Everything is per chunk, so the pipeline overlaps: a rank reduces chunk k
// while chunk k+1 is on the wire, and the owner of a chunk starts its
// all-gather as soon as that chunk is final. Received frames are summed into
// in place and forwarded with a rewritten header, so apart from the first
// stage no frame is allocated or copied on the send side.
//
// Bit-identity across ranks: the final value of every chunk is computed once,
// by its owner, and everyone else copies those bytes.

import {
  alignFrame,
  encodeFrame,
  FrameType,
  HEADER_BYTES,
  payloadView,
  readHeader,
  retagFrame,
  runMismatch,
  type FrameHeader,
} from './frame.js';
import { AllReduceError, errorMessage } from './errors.js';
import { checkRankAndWorld, checkReduceArgs, checkTag } from './checks.js';
import { ReduceGuard } from './reduce-guard.js';
import { checkChunkElements, DEFAULT_CHUNK_ELEMENTS, mod, RingLayout } from './layout.js';
import { DEFAULT_MAX_IN_FLIGHT_BYTES, SendWindow } from './transport/send-window.js';
import { addInto } from './sum.js';
import type { RingLinks } from './transport/link.js';
import type { AllReducer } from './reducer.js';

export interface RingAllReducerOptions {
  /** Elements per frame payload; default 262144 (1 MiB). */
  chunkElements?: number;
  /** Run tag carried in every frame; all ranks must agree. Default 0. */
  tag?: number;
  /** Bytes sent but not yet flushed before the reducer waits; default 32 MiB. */
  maxInFlightBytes?: number;
}

export class RingAllReducer implements AllReducer {
  readonly rank: number;
  readonly worldSize: number;
  private readonly chunkElements: number;
  private readonly tag: number;
  private readonly maxInFlightBytes: number;
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
    checkTag(this.tag);
    checkChunkElements(this.chunkElements);
    const frameBytes = HEADER_BYTES + this.chunkElements * 4;
    if (this.worldSize > 1 && frameBytes > links.toNext.maxFrameBytes) {
      throw new RangeError(
        `chunkElements ${this.chunkElements} makes ${frameBytes}-byte frames, above the ` +
          `${links.toNext.maxFrameBytes}-byte limit of the link to ${links.toNext.peer}; ` +
          'lower chunkElements or raise the link maxFrameBytes',
      );
    }
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
    const { toNext } = this.links;
    const base = { tag: this.tag, seq, total: buf.length };

    // Stage 0 of reduce-scatter: this rank's own segment, copied into frames
    // (the only copy on the send side; `buf` is overwritten later on).
    const sendOwnSegment = async (): Promise<void> => {
      for (let j = 0; j < layout.chunksPerSegment; j++) {
        const { offset, count } = layout.chunk(this.rank, j);
        const header = { ...base, type: FrameType.ReduceScatter, stage: 0, chunk: j, offset, count };
        await window.send(toNext, encodeFrame(header, buf.subarray(offset, offset + count)));
      }
    };

    await Promise.all([sendOwnSegment(), this.receiveAll(buf, seq, layout, window)]);
    await window.drain();
  }

  private async receiveAll(buf: Float32Array, seq: number, layout: RingLayout, window: SendWindow): Promise<void> {
    const { fromPrev, toNext } = this.links;
    const n = this.worldSize;
    const k = layout.chunksPerSegment;
    const framesPerPhase = (n - 1) * k;
    const seen = new Uint8Array(2 * framesPerPhase);
    const expectedRun = { tag: this.tag, seq, total: buf.length };

    for (let received = 0; received < seen.length; received++) {
      let raw: Uint8Array;
      try {
        raw = await fromPrev.recv();
      } catch (err) {
        throw new AllReduceError(`${this.where(seq)}: ${errorMessage(err)}`, fromPrev.peer, { cause: err });
      }
      const frame = alignFrame(raw);
      const header = this.checkFrame(frame, expectedRun, layout, seen, framesPerPhase);
      const payload = payloadView(frame);
      const last = header.stage === n - 2;

      if (header.type === FrameType.ReduceScatter) {
        addInto(payload, buf.subarray(header.offset, header.offset + header.count));
        if (last) {
          // This rank owns the chunk now: keep the final sum and start its all-gather.
          buf.set(payload, header.offset);
          retagFrame(frame, FrameType.AllGather, 0);
        } else {
          retagFrame(frame, FrameType.ReduceScatter, header.stage + 1);
        }
        await window.send(toNext, frame);
      } else {
        buf.set(payload, header.offset);
        if (!last) {
          retagFrame(frame, FrameType.AllGather, header.stage + 1);
          await window.send(toNext, frame);
        }
      }
    }
  }

  /** Parses a frame and checks it is one this rank expects now; throws naming the sender. */
  private checkFrame(
    frame: Uint8Array,
    expectedRun: { tag: number; seq: number; total: number },
    layout: RingLayout,
    seen: Uint8Array,
    framesPerPhase: number,
  ): FrameHeader {
    const peer = this.links.fromPrev.peer;
    const reject = (problem: string): never => {
      throw new AllReduceError(`${this.where(expectedRun.seq)}: bad frame from ${peer}: ${problem}`, peer);
    };
    let h: FrameHeader;
    try {
      h = readHeader(frame);
    } catch (err) {
      return reject(errorMessage(err));
    }
    const mismatch = runMismatch(h, expectedRun);
    if (mismatch) reject(mismatch);
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
    return h;
  }
}
