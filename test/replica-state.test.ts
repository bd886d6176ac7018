// The one-step undo that makes a group change safe: a replica one step past
// the committed step returns to it exactly; anything further is refused.
import { describe, expect, test } from 'vitest';
import { ReplicaState } from '../src/worker/replica-state.js';
import { initBackend } from '../src/common/backend/backend.js';
import { buildModelSpec, initParams, initRunningStats } from '../src/common/model/spec.js';
import { Replica } from '../src/common/model/replica.js';
import { TrainStep } from '../src/common/training/step.js';

const start = () => new ReplicaState({
  weights: Float32Array.from([1, 2, 3]), momentum: Float32Array.from([0, 0, 0]), runningStats: Float32Array.from([0.5, 1]), step: 7,
});

/** What a step does to the state: the optimizer's pass with gradient `by` everywhere (w -= by, momentum = by). */
function takeStep(s: ReplicaState, by: number): boolean {
  s.rememberBeforeStep();
  s.params.grad.fill(by);
  const applied = s.params.step({ lr: 1, momentum: 0, weightDecay: 0 }, false);
  if (applied) s.runningStats[0] += by;
  s.step++;
  return applied;
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

  test('rolling back a skipped step (non-finite gradient) keeps the state it never left', () => {
    const s = start();
    takeStep(s, 0.5);
    const committed = s.fullChecksum();
    expect(takeStep(s, Number.NaN)).toBe(false);
    expect(s.fullChecksum()).toBe(committed);
    s.rollBackTo(8);
    expect(s.fullChecksum()).toBe(committed);
    expect(Array.from(s.weights)).toEqual([0.5, 1.5, 2.5]);
    // And the step after it rolls back like any other.
    takeStep(s, 0.25);
    s.rollBackTo(8);
    expect(s.fullChecksum()).toBe(committed);
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

test('a real optimizer step that remembered its state before the update is undone to the exact bytes', async () => {
  await initBackend('cpu');
  const spec = buildModelSpec({ name: 'resnet18', width: 2, numClasses: 10, inChannels: 3, norm: 'batch' });
  let seed = 7;
  const rand = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
  const s = new ReplicaState({ weights: initParams(spec, rand), momentum: new Float32Array(spec.paramCount), runningStats: initRunningStats(spec), step: 0 });
  const replica = new Replica(spec, s.weights);
  // As the worker's group session wires it: the undo copy is taken right before the update.
  const step = new TrainStep(replica, s, { hyper: { momentum: 0.9, weightDecay: 5e-4 }, hooks: { beforeUpdate: async () => s.rememberBeforeStep() } });
  const batch = { x: Float32Array.from({ length: 2 * 32 * 32 * 3 }, () => rand() * 2 - 1), y: Int32Array.from([3, 8]), count: 2 };
  await step.run(batch, 2, 0.1);
  const committed = s.fullChecksum();
  await step.run(batch, 2, 0.1);
  expect(s.fullChecksum()).not.toBe(committed);
  s.rollBackTo(1);
  expect(s.step).toBe(1);
  expect(s.fullChecksum()).toBe(committed);
  replica.dispose();
});
