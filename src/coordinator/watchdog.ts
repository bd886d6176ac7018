// Notices a worker that has gone silent: hung, stopped (SIGSTOP), or cut off
// by a network that keeps its TCP connection half-open. Workers send a
// heartbeat between operations, but not during a step's synchronous compute,
// so the allowance is --worker-timeout plus twice the longest step seen, and
// until the first step has been measured, plus --first-step-timeout (default
// 10 minutes): backend start-up and the first step's kernel compilation
// block the heartbeats too.

import type { BackendChoice } from '../common/backend/names.js';
import type { ControlConnection } from '../common/protocol/index.js';

const CHECK_EVERY_MS = 250;

/**
 * Until the first step is measured, a step's length is unknown (a big model on
 * a CPU backend can take minutes, kernels compile on first use): allow this
 * unless --first-step-timeout says otherwise.
 */
export const DEFAULT_FIRST_STEP_ALLOWANCE_MS = 10 * 60_000;

/**
 * TensorFlow 2.9 ships GPU code up to sm_75 plus PTX for compute_80: on
 * Ampere and Hopper the driver compiles that PTX on first start, for minutes.
 * The driver's cache (CUDA_CACHE_PATH, default ~/.nv/ComputeCache, 256 MiB
 * unless CUDA_CACHE_MAXSIZE) keeps it for the next start when it is big
 * enough and survives the container.
 */
const PTX_ADVICE = 'on A100/H100/H200 GPUs TensorFlow 2.9 compiles its kernels from PTX for minutes on first start: ' +
  'raise --first-step-timeout, and set CUDA_CACHE_PATH to a persistent directory and CUDA_CACHE_MAXSIZE=4294967296 so they are compiled only once';

export interface WatchdogOptions {
  /** The allowance before any step is measured (--first-step-timeout); default DEFAULT_FIRST_STEP_ALLOWANCE_MS. */
  firstStepAllowanceMs?: number;
  /** The run's backend: for 'tensorflow' and 'auto', giving up before the first step comes with the PTX advice. */
  backend?: BackendChoice;
}

export class Watchdog {
  private longestStepMs = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly firstStepAllowanceMs: number;

  /** `members`: the connections to watch now (the group changes during a run). */
  constructor(members: () => ControlConnection[], private readonly timeoutMs: number, private readonly options: WatchdogOptions = {}) {
    this.firstStepAllowanceMs = options.firstStepAllowanceMs ?? DEFAULT_FIRST_STEP_ALLOWANCE_MS;
    this.timer = setInterval(() => {
      const now = Date.now();
      const measured = this.longestStepMs > 0;
      const allowance = this.timeoutMs + (measured ? 2 * this.longestStepMs : this.firstStepAllowanceMs);
      for (const conn of members()) {
        const silent = now - conn.lastHeard;
        if (silent > allowance && conn.failedWith === null) {
          // Failing this connection rejects whatever the run is waiting for
          // from it: the member is lost, and the group is re-formed without it.
          conn.abort(this.message(silent, measured));
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

  /** Why a connection is given up on, naming the allowance actually applied. */
  private message(silentMs: number, measured: boolean): string {
    const seconds = (ms: number) => (ms / 1000).toFixed(1);
    const head = `sent nothing for ${seconds(silentMs)} s (--worker-timeout ${this.timeoutMs / 1000} s plus `;
    if (measured) return `${head}twice the longest step, ${seconds(2 * this.longestStepMs)} s): hung, stopped or cut off`;
    const backend = this.options.backend;
    return `${head}the first-step allowance, ${this.firstStepAllowanceMs / 1000} s (--first-step-timeout), as no step has been measured yet): ` +
      'hung, stopped or cut off, or still starting' + (backend === 'tensorflow' || backend === 'auto' ? `; ${PTX_ADVICE}` : '');
  }
}
