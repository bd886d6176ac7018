// Bounds how many bytes a reducer has handed to a link but not yet seen
// flushed. Sends are not awaited one by one (that would serialize sending
// with reducing); instead the reducer waits only when the window is full,
// which keeps memory bounded while the pipeline stays busy.

import type { Link } from './link.js';

export const DEFAULT_MAX_IN_FLIGHT_BYTES = 32 * 1024 * 1024;

export class SendWindow {
  private readonly pending: { done: Promise<void>; bytes: number }[] = [];
  private inFlightBytes = 0;
  private firstError: Error | undefined;

  constructor(private readonly maxInFlightBytes: number = DEFAULT_MAX_IN_FLIGHT_BYTES) {}

  async send(link: Link, frame: Uint8Array): Promise<void> {
    this.throwIfFailed();
    // Record the failure here so a rejected send is never unhandled, and
    // surface it on the next send or on drain().
    const done = link.send(frame).catch((err: unknown) => {
      this.firstError ??= err instanceof Error ? err : new Error(String(err));
    });
    this.pending.push({ done, bytes: frame.byteLength });
    this.inFlightBytes += frame.byteLength;
    while (this.inFlightBytes > this.maxInFlightBytes && this.pending.length > 1) {
      await this.retireOldest();
    }
    this.throwIfFailed();
  }

  /**
   * Tracks a send already started (`done` settles when its bytes are
   * flushed). Returns a promise to wait on only when the window is over its
   * limit, else undefined, so a caller on the hot path makes no promise per
   * frame. `onSettled` runs once that send settles (to recycle its buffer).
   */
  track(done: Promise<void>, bytes: number, onSettled?: () => void, wait = true): Promise<void> | undefined {
    const settled = done.then(
      () => onSettled?.(),
      (err: unknown) => {
        onSettled?.();
        this.firstError ??= err instanceof Error ? err : new Error(String(err));
      },
    );
    this.pending.push({ done: settled, bytes });
    this.inFlightBytes += bytes;
    // wait = false: a caller that must not be held back (the ring's forwards);
    // its errors surface on the next waiting call or on drain().
    if (!wait) return undefined;
    if (this.firstError) return Promise.reject(this.firstError);
    if (this.inFlightBytes > this.maxInFlightBytes && this.pending.length > 1) return this.shrink();
    return undefined;
  }

  private async shrink(): Promise<void> {
    while (this.inFlightBytes > this.maxInFlightBytes && this.pending.length > 1) await this.retireOldest();
    this.throwIfFailed();
  }

  /** Waits until everything sent so far has been flushed. */
  async drain(): Promise<void> {
    while (this.pending.length > 0) await this.retireOldest();
    this.throwIfFailed();
  }

  private async retireOldest(): Promise<void> {
    const oldest = this.pending.shift()!;
    await oldest.done;
    this.inFlightBytes -= oldest.bytes;
  }

  private throwIfFailed(): void {
    if (this.firstError) throw this.firstError;
  }
}
