// What one replica must agree on with every other: weights, momentum,
// BatchNorm running statistics and the step count, plus what it takes to go
// back one step, so that an uncommitted step can be undone when the group
// changes (see `halt` in docs/PROTOCOL.md). The weights and momentum of the
// step before are the optimizer's spare buffers (sgd-buffers.ts), so the undo
// costs no copy of them; only the small running statistics are copied.

import { stateChecksum, type InitMessage } from '../common/protocol/index.js';
import { SgdBuffers } from '../common/optim/sgd-buffers.js';
import type { OptimizerState } from '../common/training/step.js';

export class ReplicaState implements OptimizerState {
  readonly params: SgdBuffers;
  readonly runningStats: Float32Array;
  step: number;
  private readonly before: { runningStats: Float32Array; step: number | null };

  constructor(init: Pick<InitMessage, 'weights' | 'momentum' | 'runningStats' | 'step'>) {
    this.params = new SgdBuffers(init.weights, init.momentum);
    this.runningStats = init.runningStats.slice();
    this.step = init.step;
    this.before = { runningStats: new Float32Array(this.runningStats.length), step: null };
  }

  get weights(): Float32Array {
    return this.params.weights;
  }

  get momentum(): Float32Array {
    return this.params.momentum;
  }

  /** Marks the state the next step may be undone to; called right before a step changes it. */
  rememberBeforeStep(): void {
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
    if (this.step !== step + 1 || this.before.step !== step || !this.params.canUndo) {
      throw new Error(`cannot roll back to step ${step}: this replica is at step ${this.step} and holds step ${this.before.step ?? 'none'}`);
    }
    this.params.undo();
    this.runningStats.set(this.before.runningStats);
    this.step = step;
    this.before.step = null;
  }

  /** Fingerprint of weights and momentum, identical on every replica at every step. */
  optimizerChecksum(): string {
    return stateChecksum(this.weights, this.momentum);
  }

  /** Fingerprint of everything that must be identical after the statistics are averaged (snapshots). */
  fullChecksum(): string {
    return stateChecksum(this.weights, this.momentum, this.runningStats);
  }
}
