// Error type and argument checks shared by the ring and star reducers.

import { MAX_U32 } from './frame.js';

/** An all-reduce failure; `peer` names the other end involved, when known. */
export class AllReduceError extends Error {
  override name = 'AllReduceError';
  constructor(
    message: string,
    readonly peer?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function checkReduceArgs(buf: Float32Array, step: number): void {
  if (!(buf instanceof Float32Array)) {
    throw new TypeError('allReduceSum needs a Float32Array gradient buffer');
  }
  if (buf.length > MAX_U32) {
    throw new RangeError(`gradient of ${buf.length} elements exceeds the frame format's u32 length limit`);
  }
  if (!Number.isInteger(step) || step < 0 || step > MAX_U32) {
    throw new RangeError(`step must be an integer in [0, 2^32), got ${step}`);
  }
}

export function checkTag(tag: number): void {
  if (!Number.isInteger(tag) || tag < 0 || tag > MAX_U32) {
    throw new RangeError(`tag must be an integer in [0, 2^32), got ${tag}`);
  }
}

export function checkRankAndWorld(rank: number, worldSize: number): void {
  if (!Number.isInteger(worldSize) || worldSize < 1) {
    throw new RangeError(`worldSize must be a positive integer, got ${worldSize}`);
  }
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
    throw new RangeError(`rank must be an integer in [0, ${worldSize}), got ${rank}`);
  }
}
