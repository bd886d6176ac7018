// Fault injection that the training step itself reads, for tests and drills
// of error reporting. (The worker's own faults, which need a group, sit in
// src/worker/group-session.ts.)

import fs from 'node:fs';

/**
 * Fault injection for tests and drills: "rank:step,..." ("*:step" for every
 * rank) makes that rank's (1-based) step throw right after its backward
 * pass, as a bug or an out-of-memory error in the step would. The
 * single-process trainer is rank 0; the workers read it too.
 */
export const THROW_FAULT_ENV = 'TFJS_DDP_THROW_AT';

/** Throws the injected failure if THROW_FAULT_ENV names this rank and step. The message is the same on every rank. */
export function throwIfInjected(rank: number, step: number): void {
  const spec = process.env[THROW_FAULT_ENV];
  if (!spec) return;
  if (spec.split(',').some((f) => f === `${rank}:${step}` || f === `*:${step}`)) {
    throw new Error(`injected failure at step ${step} (${THROW_FAULT_ENV})`);
  }
}

/**
 * Fault injection for the same: "rank,..." ("*" for every rank) makes that
 * rank's worker exit hard once it has its rank, before its first step: a
 * line on stderr, then exit code 3, and no error message to the coordinator,
 * as a process that dies while CUDA starts does. (In a worker thread,
 * process.exit ends only the thread.)
 */
export const EXIT_AT_START_FAULT_ENV = 'TFJS_DDP_EXIT_AT_START';

/** The exit code of an injected start-up crash. */
export const EXIT_AT_START_CODE = 3;

/** Exits the process if EXIT_AT_START_FAULT_ENV names this rank. */
export function exitIfInjectedAtStart(rank: number): void {
  const spec = process.env[EXIT_AT_START_FAULT_ENV];
  if (!spec) return;
  if (spec.split(',').some((f) => f === String(rank) || f === '*')) {
    // Written synchronously: process.exit does not wait for a stream to drain.
    fs.writeSync(2, `injected start-up crash of rank ${rank} (${EXIT_AT_START_FAULT_ENV})\n`);
    process.exit(EXIT_AT_START_CODE);
  }
}
