// How a gradient of `total` elements is cut into pieces that travel as
// frames. Pure arithmetic, shared by sender and receiver so both sides
// agree on every (segment, chunk) -> element range without negotiation.

export interface ElementRange {
  offset: number;
  count: number;
}

export const DEFAULT_CHUNK_ELEMENTS = 256 * 1024; // 1 MiB of float32 per frame

export function checkChunkElements(chunkElements: number): void {
  if (!Number.isInteger(chunkElements) || chunkElements < 1) {
    throw new RangeError(`chunkElements must be a positive integer, got ${chunkElements}`);
  }
}

/**
 * The ring's layout: N contiguous segments (sizes differ by at most one, the
 * first `total % N` get the extra element), each cut into the same number of
 * chunks. Using the same chunk count for every segment (some chunks may be
 * empty, e.g. when total < N) keeps the schedule uniform: every rank sends
 * and receives exactly 2 (N-1) K frames per all-reduce.
 */
export class RingLayout {
  readonly chunksPerSegment: number;
  private readonly base: number;
  private readonly extra: number;

  constructor(
    readonly total: number,
    readonly worldSize: number,
    readonly chunkElements: number,
  ) {
    checkChunkElements(chunkElements);
    this.base = Math.floor(total / worldSize);
    this.extra = total % worldSize;
    const largest = this.base + (this.extra > 0 ? 1 : 0);
    this.chunksPerSegment = Math.max(1, Math.ceil(largest / chunkElements));
  }

  segment(g: number): ElementRange {
    return {
      offset: g * this.base + Math.min(g, this.extra),
      count: this.base + (g < this.extra ? 1 : 0),
    };
  }

  chunk(g: number, j: number): ElementRange {
    const seg = this.segment(g);
    const start = Math.min(j * this.chunkElements, seg.count);
    const end = Math.min(start + this.chunkElements, seg.count);
    return { offset: seg.offset + start, count: end - start };
  }
}

/** The star's layout: the whole gradient cut into chunks (at least one). */
export function starChunkCount(total: number, chunkElements: number): number {
  checkChunkElements(chunkElements);
  return Math.max(1, Math.ceil(total / chunkElements));
}

export function starChunk(total: number, chunkElements: number, j: number): ElementRange {
  const offset = Math.min(j * chunkElements, total);
  return { offset, count: Math.min(chunkElements, total - offset) };
}

/** a mod n for possibly negative a. */
export function mod(a: number, n: number): number {
  return ((a % n) + n) % n;
}
