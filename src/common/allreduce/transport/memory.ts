// In-process Links, so the all-reduce algorithms can be tested without
// sockets and with control over the byte alignment of delivered frames.

import { FrameQueue } from './frame-queue.js';
import type { Link, RingLinks } from './link.js';

export interface MemoryLinkOptions {
  /**
   * Deliver every frame at a byteOffset that is not a multiple of 4, as a
   * socket transport may, to exercise the receiver's realignment path.
   */
  misalign?: boolean;
  /** Reported as `maxFrameBytes`; the memory link itself has no limit. */
  maxFrameBytes?: number;
}

class MemoryLink implements Link {
  readonly inbox = new FrameQueue();
  other!: MemoryLink;

  constructor(
    readonly peer: string,
    readonly maxFrameBytes: number,
    private readonly misalign: boolean,
  ) {}

  send(frame: Uint8Array): Promise<void> {
    if (this.inbox.ended || this.other.inbox.ended) {
      return Promise.reject(new Error(`cannot send to ${this.peer}: link is closed`));
    }
    if (frame.byteLength > this.maxFrameBytes) {
      return Promise.reject(
        new Error(`frame of ${frame.byteLength} bytes exceeds the ${this.maxFrameBytes}-byte limit of the link to ${this.peer}`),
      );
    }
    // Copy, as a wire would: the sender may reuse its buffer once this resolves.
    let copy: Uint8Array;
    if (this.misalign) {
      const backing = new Uint8Array(frame.byteLength + 1);
      copy = backing.subarray(1);
    } else {
      copy = new Uint8Array(frame.byteLength);
    }
    copy.set(frame);
    this.other.inbox.push(copy);
    return Promise.resolve();
  }

  recv(): Promise<Uint8Array> {
    return this.inbox.next();
  }

  close(): Promise<void> {
    this.inbox.discard();
    this.inbox.end(new Error(`link to ${this.peer} was closed locally`));
    this.other.inbox.end(new Error(`link from ${this.other.peer} closed by that peer`));
    return Promise.resolve();
  }
}

/**
 * Two connected Links: what is sent on `a` is received on `b` and vice
 * versa. `aName` is how `b` refers to its peer (and the other way round).
 */
export function createMemoryLinkPair(aName: string, bName: string, options: MemoryLinkOptions = {}): [Link, Link] {
  const max = options.maxFrameBytes ?? Number.MAX_SAFE_INTEGER;
  const misalign = options.misalign ?? false;
  const a = new MemoryLink(bName, max, misalign);
  const b = new MemoryLink(aName, max, misalign);
  a.other = b;
  b.other = a;
  return [a, b];
}

/** Ring links for all `worldSize` ranks, connected in memory. */
export function createMemoryRing(worldSize: number, options: MemoryLinkOptions = {}): RingLinks[] {
  if (!Number.isInteger(worldSize) || worldSize < 1) {
    throw new RangeError(`worldSize must be a positive integer, got ${worldSize}`);
  }
  const toNext: Link[] = [];
  const fromPrev: Link[] = new Array(worldSize);
  for (let rank = 0; rank < worldSize; rank++) {
    const next = (rank + 1) % worldSize;
    const [sending, receiving] = createMemoryLinkPair(`rank ${rank}`, `rank ${next}`, options);
    toNext.push(sending);
    fromPrev[next] = receiving;
  }
  return toNext.map((link, rank) => ({ rank, worldSize, toNext: link, fromPrev: fromPrev[rank] }));
}
