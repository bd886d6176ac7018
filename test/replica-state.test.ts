// The one-step undo that makes a group change safe: a replica one step past
// the committed step returns to it exactly; anything further is refused.
import { describe, expect, test } from 'vitest';
import { ReplicaState } from '../src/worker/replica-state.js';

const start = () => new ReplicaState({
  weights: Float32Array.from([1, 2, 3]), momentum: Float32Array.from([0, 0, 0]), runningStats: Float32Array.from([0.5, 1]), step: 7,
});

/** What a step does to the state, in place. */
function takeStep(s: ReplicaState, by: number): void {
  s.rememberBeforeStep();
  s.weights.forEach((w, i) => (s.weights[i] = w - by));
  s.momentum.fill(by);
  s.runningStats[0] += by;
  s.step++;
}

describe('ReplicaState', () => {
  test('rolls back one step to the exact bytes, and does nothing at the committed step', () => {
    const s = start();
    const committed = { sum: s.fullChecksum(), optimizer: s.optimizerChecksum() };
    s.rollBackTo(7);
    expect(s.fullChecksum()).toBe(committed.sum);
    takeStep(s, 0.1);
    expect(s.fullChecksum()).not.toBe(committed.sum);
    s.rollBackTo(7);
    expect(s.step).toBe(7);
    expect(Array.from(s.weights)).toEqual([1, 2, 3]);
    expect(s.fullChecksum()).toBe(committed.sum);
    expect(s.optimizerChecksum()).toBe(committed.optimizer);
  });

  test('refuses to go back two steps or forward, naming the steps', () => {
    const s = start();
    takeStep(s, 0.1);
    takeStep(s, 0.2);
    expect(() => s.rollBackTo(7)).toThrow(/cannot roll back to step 7: this replica is at step 9 and holds step 8/);
    expect(() => start().rollBackTo(8)).toThrow(/cannot roll back to step 8: this replica is at step 7 and holds step none/);
  });

  test('the optimizer checksum ignores the running statistics, which differ per replica until averaged', () => {
    const a = start();
    const b = start();
    b.runningStats[1] = 2;
    expect(a.optimizerChecksum()).toBe(b.optimizerChecksum());
    expect(a.fullChecksum()).not.toBe(b.fullChecksum());
  });
});
