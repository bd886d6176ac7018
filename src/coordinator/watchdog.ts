// Notices a worker that has gone silent: hung, stopped (SIGSTOP), or cut off
// by a network that keeps its TCP connection half-open. Workers send a
// heartbeat between operations, but not during a step's synchronous compute,
// so the allowance is --worker-timeout plus twice the longest step seen (10
// minutes until the first step has been measured).

import type { ControlConnection } from '../common/protocol/index.js';

const CHECK_EVERY_MS = 250;
/**
 * Until the first step is measured, a step's length is unknown (a big model on
 * a CPU backend can take minutes, kernels compile on first use): allow this.
 */
const FIRST_STEP_ALLOWANCE_MS = 10 * 60_000;

export class Watchdog {
  private longestStepMs = 0;
  private readonly timer: NodeJS.Timeout;

  /** `members`: the connections to watch now (the group changes during a run). */
  constructor(members: () => ControlConnection[], private readonly timeoutMs: number) {
    this.timer = setInterval(() => {
      const now = Date.now();
      const allowance = this.timeoutMs + (this.longestStepMs > 0 ? 2 * this.longestStepMs : FIRST_STEP_ALLOWANCE_MS);
      for (const conn of members()) {
        const silent = now - conn.lastHeard;
        if (silent > allowance && conn.failedWith === null) {
          // Failing this connection rejects whatever the run is waiting for
          // from it: the member is lost, and the group is re-formed without it.
          conn.abort(`sent nothing for ${(silent / 1000).toFixed(1)} s (--worker-timeout ${this.timeoutMs / 1000} s ` +
            `plus twice the longest step, ${(2 * this.longestStepMs / 1000).toFixed(1)} s): hung, stopped or cut off`);
        }
      }
    }, CHECK_EVERY_MS);
  }

  /** A step's duration, data wait included: steps block a worker's heartbeats while they compute. */
  noteStep(ms: number): void {
    if (ms > this.longestStepMs) this.longestStepMs = ms;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
