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

/**
 * The call rules both reducers share: one all-reduce at a time, none after
 * close, none after a failure; and a failure closes the reducer's links, so
 * that the peers' reduces fail promptly instead of waiting forever.
 */
export class ReduceGuard {
  private busy = false;
  private closed = false;
  private failure: Error | undefined;

  constructor(private readonly closeLinks: () => Promise<void>) {}

  async run(where: string, reduce: () => Promise<void>): Promise<void> {
    if (this.failure) throw new AllReduceError(`${where}: reducer is unusable after an earlier error: ${this.failure.message}`);
    if (this.closed) throw new AllReduceError(`${where}: reducer is closed`);
    if (this.busy) throw new AllReduceError(`${where}: allReduceSum called before the previous call finished`);
    this.busy = true;
    try {
      await reduce();
    } catch (err) {
      const error = err instanceof AllReduceError ? err : new AllReduceError(`${where}: ${errorMessage(err)}`, undefined, { cause: err });
      this.failure = error;
      this.close().catch(() => {});
      throw error;
    } finally {
      this.busy = false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.closeLinks();
  }
}
