// The optimizer's SIMD kernel (src/common/optim/sgd-kernel.wat) against the
// JavaScript reference, bit for bit: every case of the step (first step,
// momentum, weight decay, either off), lengths that leave a tail after the
// 4-lane loop, and non-finite gradients anywhere, which must change nothing.
// Also: the spare buffers are the undo (the committed bytes: test/wasm-kernels.test.ts).
import { describe, expect, test } from 'vitest';
import { sgdInto, sgdStep, type SgdHyper } from '../src/common/optim/sgd.js';
import { SgdBuffers, sgdKernelAvailable } from '../src/common/optim/sgd-buffers.js';

const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

function lcg(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 16807) % 2147483647) / 2147483647;
}

function randomArray(n: number, rand: () => number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => (rand() * 2 - 1) * scale);
}

const HYPERS: SgdHyper[] = [
  { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 },
  { lr: 0.037, momentum: 0, weightDecay: 5e-4 },
  { lr: 0.5, momentum: 0.9, weightDecay: 0 },
  { lr: 1e-3, momentum: 0, weightDecay: 0 },
];

test('this Node runs the SIMD kernel', () => {
  expect(sgdKernelAvailable()).toBe(true);
  expect(new SgdBuffers(new Float32Array(3), new Float32Array(3)).kernel).toBe('wasm');
});

describe.each([1, 3, 4, 5, 17, 1001])('%i parameters', (n) => {
  test.each(HYPERS)('the kernel gives the reference bits (lr $lr, momentum $momentum, weight decay $weightDecay), three steps', (hyper) => {
    const rand = lcg(n * 31 + 7);
    const weights = randomArray(n, rand);
    const momentum = randomArray(n, rand, 0.1);
    const wasm = new SgdBuffers(weights, momentum, 'wasm');
    const js = new SgdBuffers(weights, momentum, 'js');
    const ref = { weights: weights.slice(), momentum: momentum.slice() };
    for (let s = 0; s < 3; s++) {
      const grad = randomArray(n, rand, 0.01);
      wasm.grad.set(grad);
      js.grad.set(grad);
      expect(wasm.step(hyper, s === 0)).toBe(true);
      expect(js.step(hyper, s === 0)).toBe(true);
      sgdStep(ref.weights, grad, ref.momentum, hyper, s === 0);
      for (const b of [wasm, js]) {
        expect(bytesOf(b.weights).equals(bytesOf(ref.weights))).toBe(true);
        expect(bytesOf(b.momentum).equals(bytesOf(ref.momentum))).toBe(true);
      }
    }
  });

  test.each([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])('a %d anywhere in the gradient fails the check and changes nothing', (bad) => {
    for (const at of new Set([0, n >> 1, n - 1])) {
      for (const kernel of ['wasm', 'js'] as const) {
        const rand = lcg(at + 3);
        const b = new SgdBuffers(randomArray(n, rand), randomArray(n, rand), kernel);
        const before = { w: b.weights.slice(), m: b.momentum.slice() };
        b.grad.set(randomArray(n, rand));
        expect(b.gradFinite()).toBe(true);
        b.grad[at] = bad;
        expect(b.gradFinite()).toBe(false);
        expect(b.step(HYPERS[0], false)).toBe(false);
        expect(bytesOf(b.weights).equals(bytesOf(before.w))).toBe(true);
        expect(bytesOf(b.momentum).equals(bytesOf(before.m))).toBe(true);
      }
    }
  });
});

test('sgdInto writes into other buffers and reports a non-finite gradient', () => {
  const from = { weights: Float32Array.from([1, 2]), momentum: Float32Array.from([0.5, 0.5]) };
  const to = { weights: new Float32Array(2), momentum: new Float32Array(2) };
  expect(sgdInto(from, Float32Array.from([0.5, 0.25]), to, { lr: 0.1, momentum: 0.9, weightDecay: 0 }, false)).toBe(true);
  expect(Array.from(from.weights)).toEqual([1, 2]);
  expect(Array.from(to.momentum)).toEqual([Math.fround(Math.fround(Math.fround(0.9) * 0.5) + 0.5), Math.fround(Math.fround(Math.fround(0.9) * 0.5) + 0.25)]);
  expect(sgdInto(from, Float32Array.from([Number.NaN, 0]), to, { lr: 0.1, momentum: 0.9, weightDecay: 0 }, false)).toBe(false);
  expect(() => sgdInto(from, new Float32Array(3), to, { lr: 0.1, momentum: 0, weightDecay: 0 }, false)).toThrow(/lengths differ \(weights 2, grads 3\)/);
});

describe('the spare pair is the one-step undo', () => {
  test('undo returns to the bytes before an applied step, keeps a skipped one, and happens once', () => {
    const b = new SgdBuffers(Float32Array.from([1, 2, 3, 4, 5]), new Float32Array(5));
    const hyper = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 };
    expect(b.canUndo).toBe(false);
    b.grad.fill(0.5);
    b.step(hyper, true);
    const afterFirst = { w: b.weights.slice(), m: b.momentum.slice() };
    b.grad.fill(0.25);
    b.step(hyper, false);
    expect(bytesOf(b.weights).equals(bytesOf(afterFirst.w))).toBe(false);
    b.undo();
    expect(bytesOf(b.weights).equals(bytesOf(afterFirst.w))).toBe(true);
    expect(bytesOf(b.momentum).equals(bytesOf(afterFirst.m))).toBe(true);
    expect(b.canUndo).toBe(false);
    expect(() => b.undo()).toThrow(/no optimizer step to undo/);

    b.grad[2] = Number.NaN;
    expect(b.step(hyper, false)).toBe(false);
    b.undo();
    expect(bytesOf(b.weights).equals(bytesOf(afterFirst.w))).toBe(true);
  });

  test('load copies a state in and forgets the undo; lengths are checked', () => {
    const b = new SgdBuffers(new Float32Array(4), new Float32Array(4));
    b.grad.fill(1);
    b.step({ lr: 1, momentum: 0, weightDecay: 0 }, false);
    b.load(Float32Array.from([9, 8, 7, 6]), Float32Array.from([1, 1, 1, 1]));
    expect(Array.from(b.weights)).toEqual([9, 8, 7, 6]);
    expect(b.canUndo).toBe(false);
    expect(() => b.load(new Float32Array(3), new Float32Array(4))).toThrow(/3 weights and 4 momentum values; the model has 4/);
    expect(() => new SgdBuffers(new Float32Array(2), new Float32Array(3))).toThrow(/momentum has 3 values, the weights 2/);
  });
});
