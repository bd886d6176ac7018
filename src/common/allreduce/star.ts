// Star all-reduce: every worker sends its gradient to a hub (the coordinator
// in production), which sums the chunks in rank order and sends the same
// bytes back to every worker. Simpler than the ring and the baseline it is
// measured against; the hub's link carries N times the gradient each way.
//
// Bit-identity: the hub computes each sum once, as ((g0 + g1) + g2) + ...,
// which is also exactly the plain sequential reference, and every worker
// receives the same bytes.

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
import { checkChunkElements, DEFAULT_CHUNK_ELEMENTS, starChunk, starChunkCount } from './layout.js';
import { DEFAULT_MAX_IN_FLIGHT_BYTES, SendWindow } from './transport/send-window.js';
import { addInto } from './sum.js';
import type { Link } from './transport/link.js';
import type { AllReducer } from './reducer.js';

export interface StarOptions {
  /** Elements per frame payload; default 262144 (1 MiB). Workers only. */
  chunkElements?: number;
  /** Run tag carried in every frame; hub and workers must agree. Default 0. */
  tag?: number;
  /** Bytes sent but not yet flushed before waiting; default 32 MiB. */
  maxInFlightBytes?: number;
}

async function receiveFrom(link: Link, where: string): Promise<Uint8Array> {
  try {
    return alignFrame(await link.recv());
  } catch (err) {
    throw new AllReduceError(`${where}: ${errorMessage(err)}`, link.peer, { cause: err });
  }
}

/** The worker side of the star: one link to the hub. */
export class StarAllReducer implements AllReducer {
  private readonly chunkElements: number;
  private readonly tag: number;
  private readonly maxInFlightBytes: number;
  private readonly guard = new ReduceGuard(() => this.hub.close());

  constructor(
    private readonly hub: Link,
    readonly rank: number,
    readonly worldSize: number,
    options: StarOptions = {},
  ) {
    checkRankAndWorld(rank, worldSize);
    this.chunkElements = options.chunkElements ?? DEFAULT_CHUNK_ELEMENTS;
    this.tag = options.tag ?? 0;
    this.maxInFlightBytes = options.maxInFlightBytes ?? DEFAULT_MAX_IN_FLIGHT_BYTES;
    checkChunkElements(this.chunkElements);
    checkTag(this.tag);
    const frameBytes = HEADER_BYTES + this.chunkElements * 4;
    if (frameBytes > hub.maxFrameBytes) {
      throw new RangeError(
        `chunkElements ${this.chunkElements} makes ${frameBytes}-byte frames, above the ` +
          `${hub.maxFrameBytes}-byte limit of the link to ${hub.peer}; lower chunkElements or raise maxFrameBytes`,
      );
    }
  }

  async allReduceSum(buf: Float32Array, seq: number): Promise<void> {
    checkReduceArgs(buf, seq);
    const where = `star all-reduce (rank ${this.rank} of ${this.worldSize}, all-reduce #${seq})`;
    await this.guard.run(where, () => this.reduce(buf, seq, where));
  }

  async close(): Promise<void> {
    await this.guard.close();
  }

  private async reduce(buf: Float32Array, seq: number, where: string): Promise<void> {
    const chunks = starChunkCount(buf.length, this.chunkElements);
    const window = new SendWindow(this.maxInFlightBytes);
    const run = { tag: this.tag, seq, total: buf.length };

    const upload = async (): Promise<void> => {
      for (let j = 0; j < chunks; j++) {
        const { offset, count } = starChunk(buf.length, this.chunkElements, j);
        const header = { ...run, type: FrameType.StarUp, stage: 0, chunk: j, offset, count };
        await window.send(this.hub, encodeFrame(header, buf.subarray(offset, offset + count)));
      }
    };

    // Chunk j comes back only after the hub has our chunk j, which was copied
    // into its frame before sending, so overwriting `buf` here is safe.
    const download = async (): Promise<void> => {
      for (let j = 0; j < chunks; j++) {
        const frame = await receiveFrom(this.hub, where);
        const want = starChunk(buf.length, this.chunkElements, j);
        let h: FrameHeader;
        try {
          h = readHeader(frame);
        } catch (err) {
          throw new AllReduceError(`${where}: bad frame from ${this.hub.peer}: ${errorMessage(err)}`, this.hub.peer);
        }
        const problem =
          runMismatch(h, run) ??
          (h.type !== FrameType.StarDown ? `expected a StarDown frame, got ${FrameType[h.type]}` : undefined) ??
          (h.chunk !== j || h.offset !== want.offset || h.count !== want.count
            ? `expected chunk ${j} covering [${want.offset}, +${want.count}), got chunk ${h.chunk} covering [${h.offset}, +${h.count})`
            : undefined);
        if (problem) throw new AllReduceError(`${where}: bad frame from ${this.hub.peer}: ${problem}`, this.hub.peer);
        buf.set(payloadView(frame), h.offset);
      }
    };

    await Promise.all([upload(), download()]);
    await window.drain();
  }
}

/**
 * The hub side of the star. `links[r]` is the link to rank r. The hub needs
 * no setup per all-reduce: it learns the sequence number (`seq`) and the
 * gradient length from rank 0's first frame and checks that every rank agrees.
 */
export class StarHub {
  private closing = false;
  private readonly tag: number;
  private readonly maxInFlightBytes: number;

  constructor(
    private readonly links: readonly Link[],
    options: Pick<StarOptions, 'tag' | 'maxInFlightBytes'> = {},
  ) {
    if (links.length < 1) throw new RangeError('StarHub needs at least one worker link');
    this.tag = options.tag ?? 0;
    this.maxInFlightBytes = options.maxInFlightBytes ?? DEFAULT_MAX_IN_FLIGHT_BYTES;
    checkTag(this.tag);
  }

  get worldSize(): number {
    return this.links.length;
  }

  /**
   * Serves all-reduces until `close()` is called (then resolves). Rejects on
   * the first bad frame or lost worker, after closing every link so that the
   * other workers fail promptly too.
   */
  async serve(): Promise<void> {
    try {
      for (;;) await this.reduceOnce();
    } catch (err) {
      if (this.closing) return;
      await this.close();
      throw err;
    }
  }

  /** Performs one all-reduce round; resolves with its seq and length. */
  async reduceOnce(): Promise<{ seq: number; total: number }> {
    const window = new SendWindow(this.maxInFlightBytes);
    let run: { tag: number; seq: number; total: number } | undefined;
    let where = 'star hub';
    let offset = 0;
    for (let j = 0; ; j++) {
      let acc: Float32Array | undefined;
      let out: Uint8Array | undefined;
      let count = 0;
      // Summing strictly in rank order makes the result equal to the
      // sequential reference and independent of arrival order.
      for (let rank = 0; rank < this.links.length; rank++) {
        const link = this.links[rank];
        const frame = await receiveFrom(link, where);
        const reject = (problem: string): never => {
          throw new AllReduceError(`${where}: bad frame from ${link.peer}: ${problem}`, link.peer);
        };
        let h: FrameHeader;
        try {
          h = readHeader(frame);
        } catch (err) {
          return reject(errorMessage(err));
        }
        if (h.type !== FrameType.StarUp) reject(`expected a StarUp frame, got ${FrameType[h.type]}`);
        if (!run) {
          if (h.tag !== this.tag) reject(`frame has run tag ${h.tag} but this run's tag is ${this.tag}`);
          run = { tag: h.tag, seq: h.seq, total: h.total };
          where = `star hub (all-reduce #${h.seq})`;
        }
        const mismatch = runMismatch(h, run);
        if (mismatch) reject(mismatch);
        if (rank === 0) {
          count = h.count;
          if (count === 0 && run.total > 0) reject(`empty chunk ${j} in a gradient of ${run.total} elements`);
        }
        if (h.chunk !== j || h.offset !== offset || h.count !== count) {
          reject(
            `expected chunk ${j} covering [${offset}, +${count}) as rank 0 sent, ` +
              `got chunk ${h.chunk} covering [${h.offset}, +${h.count}); workers disagree on chunkElements?`,
          );
        }
        if (acc) {
          addInto(acc, payloadView(frame));
        } else {
          out = frame;
          acc = payloadView(frame);
        }
      }
      // Every worker receives the very same bytes.
      retagFrame(out!, FrameType.StarDown, 0);
      try {
        for (const link of this.links) await window.send(link, out!);
      } catch (err) {
        throw new AllReduceError(`${where}: ${errorMessage(err)}`, undefined, { cause: err });
      }
      offset += count;
      if (offset >= run!.total) break;
    }
    await window.drain().catch((err: unknown) => {
      throw new AllReduceError(`${where}: ${errorMessage(err)}`, undefined, { cause: err });
    });
    return { seq: run!.seq, total: run!.total };
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.links.map((l) => l.close()));
  }
}
