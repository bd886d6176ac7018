// Our ResNet, loss, gradients, BatchNorm and SGD against the PyTorch fixtures
// of the recipe's model (test/fixtures/golden, made by scripts/make-golden.py:
// width 4, batch 8, seed 0).
//
// Error measure: max |ours - torch| / max |torch| per tensor, bound 1e-4.
// ResNet50 is chaotic at lr 0.1 on a batch of 8: a 1e-5 difference in the
// step-1 weights grows into 3e-3 in the step-2 weights (measured), on any
// float32 implementation. So step 2 is checked from the reference's step-1
// state (one step of ours against one step of theirs), and the chained
// two-step run is checked only where it is well conditioned (ResNet18).
//
// The cpu backend is the reference backend and is held to 1e-4 everywhere.
// wasm (XNNPACK) accumulates reductions in float32 (a channel mean differs
// from cpu by ~1e-6, measured), which ResNet50's 53 BatchNorms compound to
// 1.4e-4 in the logits; it is held to 1e-4 on ResNet18 and to the forward
// pass at 1e-3 on ResNet50.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { initBackend } from '../src/common/backend/backend.js';
import { Replica } from '../src/common/model/replica.js';
import { sgdStep, updateRunningStats } from '../src/common/optim/sgd.js';
import { loadGolden, relErr, type Golden } from './helpers/golden.js';
import type { ModelName } from '../src/common/model/spec.js';

const TOL = 1e-4;
const HYPER = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 };

function worstParam(g: Golden, ours: Float32Array, theirs: Float32Array): { err: number; name: string } {
  let worst = { err: 0, name: '' };
  for (const p of g.spec.params) {
    const err = relErr(ours.subarray(p.offset, p.offset + p.size), theirs.subarray(p.offset, p.offset + p.size));
    if (err > worst.err) worst = { err, name: p.name };
  }
  return worst;
}

/** The reference gradients (grad/<name>, PyTorch layouts) as one flat vector in our layout. */
function goldenGrads(g: Golden): Float32Array {
  return g.params('grad');
}

const CASES: { backend: 'cpu' | 'wasm'; model: ModelName; full: boolean; tol: number }[] = [
  { backend: 'cpu', model: 'resnet18', full: true, tol: TOL },
  { backend: 'cpu', model: 'resnet50', full: true, tol: TOL },
  { backend: 'wasm', model: 'resnet18', full: true, tol: TOL },
  { backend: 'wasm', model: 'resnet50', full: false, tol: 1e-3 },
];

describe.each(CASES)('golden fixtures: $model on $backend', ({ backend, model, full, tol }) => {
  beforeAll(async () => {
    await initBackend(backend);
  });

  {
    const g = loadGolden(model);
    const batch = { x: g.inputNhwc, y: g.labels, count: g.batch };
    const init = g.state('init');
    const step1 = g.state('step1');
    const step2 = g.state('step2');
    const replica = new Replica(g.spec, init.weights);
    afterAll(() => replica.dispose());

    test('training-mode forward and loss', () => {
      replica.setWeights(init.weights);
      const logits = replica.logits(batch, 'train');
      const err = relErr(logits, g.f32('train_logits'));
      console.log(`${backend} ${model} train_logits rel err ${err.toExponential(2)}`);
      expect(err).toBeLessThan(tol);
      const grad = new Float32Array(g.spec.paramCount);
      const res = replica.computeGradients(batch, 1 / g.batch, grad);
      expect(Math.abs(res.lossSum / g.batch - g.f32('loss')[0]) / g.f32('loss')[0]).toBeLessThan(tol);
    });

    if (!full) return;

    test('gradients of every parameter', () => {
      replica.setWeights(init.weights);
      const grad = new Float32Array(g.spec.paramCount);
      replica.computeGradients(batch, 1 / g.batch, grad);
      const worst = worstParam(g, grad, goldenGrads(g));
      console.log(`${backend} ${model} worst gradient rel err ${worst.err.toExponential(2)} (${worst.name})`);
      expect(worst.err).toBeLessThan(TOL);
    });

    test('one SGD step: weights, momentum start, BatchNorm running statistics', () => {
      replica.setWeights(init.weights);
      const grad = new Float32Array(g.spec.paramCount);
      const res = replica.computeGradients(batch, 1 / g.batch, grad);
      const weights = init.weights.slice();
      const momentum = new Float32Array(weights.length);
      const running = init.runningStats.slice();
      sgdStep(weights, grad, momentum, HYPER, true);
      updateRunningStats(running, res.batchStats!);
      expect(relErr(weights, step1.weights)).toBeLessThan(TOL);
      expect(worstParam(g, weights, step1.weights).err).toBeLessThan(TOL);
      expect(relErr(running, step1.runningStats)).toBeLessThan(TOL);
      expect(step1.numBatchesTracked).toBe(1);
    });

    test('second SGD step from the reference step-1 state, then eval-mode forward', () => {
      // The reference's momentum after step 1 is its first gradient plus weight decay.
      const momentum = goldenGrads(g);
      for (let i = 0; i < momentum.length; i++) momentum[i] = Math.fround(momentum[i] + Math.fround(HYPER.weightDecay * init.weights[i]));
      const weights = step1.weights.slice();
      const running = step1.runningStats.slice();
      replica.setWeights(weights);
      const grad = new Float32Array(g.spec.paramCount);
      const res = replica.computeGradients(batch, 1 / g.batch, grad);
      sgdStep(weights, grad, momentum, HYPER, false);
      updateRunningStats(running, res.batchStats!);
      const err = relErr(weights, step2.weights);
      console.log(`${backend} ${model} step-2 weights rel err ${err.toExponential(2)}`);
      expect(err).toBeLessThan(TOL);
      expect(relErr(running, step2.runningStats)).toBeLessThan(TOL);
      replica.setWeights(step2.weights);
      expect(relErr(replica.logits(batch, 'eval', step2.runningStats), g.f32('eval_logits'))).toBeLessThan(TOL);
    });

    if (model === 'resnet18') {
      test('two chained SGD steps end at the reference state', () => {
        const weights = init.weights.slice();
        const momentum = new Float32Array(weights.length);
        const running = init.runningStats.slice();
        const grad = new Float32Array(g.spec.paramCount);
        for (let step = 0; step < 2; step++) {
          replica.setWeights(weights);
          const res = replica.computeGradients(batch, 1 / g.batch, grad);
          sgdStep(weights, grad, momentum, HYPER, step === 0);
          updateRunningStats(running, res.batchStats!);
        }
        expect(relErr(weights, step2.weights)).toBeLessThan(TOL);
        expect(relErr(running, step2.runningStats)).toBeLessThan(TOL);
        replica.setWeights(weights);
        expect(relErr(replica.logits(batch, 'eval', running), g.f32('eval_logits'))).toBeLessThan(TOL);
      });
    }
  }
});
