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
