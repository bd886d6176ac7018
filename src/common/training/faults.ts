// Fault injection that the training step itself reads, for tests and drills
// of error reporting. (The worker's own faults, which need a group, sit in
// src/worker/group-session.ts.)

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
