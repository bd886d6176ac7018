// The call rules both reducers share (see ReduceGuard).

import { AllReduceError, errorMessage } from './errors.js';

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
