// What one replica must agree on with every other: weights, momentum,
// BatchNorm running statistics and the step count, plus a copy of them from
// before the last step, so that an uncommitted step can be undone when the
// group changes (see `halt` in docs/PROTOCOL.md).

import { stateChecksum, type InitMessage } from '../common/protocol/index.js';
import type { OptimizerState } from '../common/training/step.js';

export class ReplicaState implements OptimizerState {
  readonly weights: Float32Array;
  readonly momentum: Float32Array;
  readonly runningStats: Float32Array;
  step: number;
  private readonly before: { weights: Float32Array; momentum: Float32Array; runningStats: Float32Array; step: number | null };

  constructor(init: Pick<InitMessage, 'weights' | 'momentum' | 'runningStats' | 'step'>) {
    this.weights = init.weights.slice();
    this.momentum = init.momentum.slice();
    this.runningStats = init.runningStats.slice();
    this.step = init.step;
    this.before = {
      weights: new Float32Array(this.weights.length),
      momentum: new Float32Array(this.momentum.length),
      runningStats: new Float32Array(this.runningStats.length),
      step: null,
    };
  }

  /** Keeps a copy of the current state; called right before a step changes it. */
  rememberBeforeStep(): void {
    this.before.weights.set(this.weights);
    this.before.momentum.set(this.momentum);
    this.before.runningStats.set(this.runningStats);
    this.before.step = this.step;
  }

  /**
   * Returns to the committed step: nothing to do if this replica is there,
   * one step back if it is one past it. A rank never applies step s + 1
   * before step s is committed, so a larger gap is a protocol violation.
   */
  rollBackTo(step: number): void {
    if (this.step === step) return;
    if (this.step !== step + 1 || this.before.step !== step) {
      throw new Error(`cannot roll back to step ${step}: this replica is at step ${this.step} and holds step ${this.before.step ?? 'none'}`);
    }
    this.weights.set(this.before.weights);
    this.momentum.set(this.before.momentum);
    this.runningStats.set(this.before.runningStats);
    this.step = step;
  }

  /** Fingerprint of weights and momentum, identical on every replica at every step. */
  optimizerChecksum(): string {
    return stateChecksum(this.concat(this.weights, this.momentum));
  }

  /** Fingerprint of everything that must be identical after the statistics are averaged (snapshots). */
  fullChecksum(): string {
    return stateChecksum(this.concat(this.weights, this.momentum, this.runningStats));
  }

  private concat(...parts: Float32Array[]): Float32Array {
    const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let offset = 0;
    for (const p of parts) {
      all.set(p, offset);
      offset += p.length;
    }
    return all;
  }
}
