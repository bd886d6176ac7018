// Checks our wasm Conv2DBackpropFilter / Conv2DBackpropInput kernels against
// the cpu backend's, through tf.grads of sum(conv2d(x, w) * r) with a random
// upstream gradient r.
//
// Error measure: maxRelErr = max_i |wasm_i - cpu_i| / max_i |cpu_i|, i.e. the
// worst absolute difference relative to the gradient's scale. (Elementwise
// relative error is meaningless for entries that are near zero by
// cancellation.)

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/common/backend/backend.js';
import { Rng } from '../src/common/data/rng.js';

type Pad = tf.Conv2DAttrs['pad'];
type Shape4 = [number, number, number, number];

interface ConvCase {
  name: string;
  x: Shape4; // NHWC
  w: Shape4; // [kH, kW, Ci, Co]
  strides: number | [number, number];
  pad: Pad;
}

const pad1: Pad = [[0, 0], [1, 1], [1, 1], [0, 0]];
const pad0: Pad = [[0, 0], [0, 0], [0, 0], [0, 0]];

const CASES: ConvCase[] = [
  { name: '3x3 s1 pad1 8x8', x: [2, 8, 8, 3], w: [3, 3, 3, 5], strides: 1, pad: pad1 },
  { name: '3x3 s1 pad1 7x7', x: [3, 7, 7, 4], w: [3, 3, 4, 2], strides: 1, pad: pad1 },
  { name: '3x3 s2 pad1 8x8', x: [2, 8, 8, 4], w: [3, 3, 4, 6], strides: 2, pad: pad1 },
  { name: '3x3 s2 pad1 7x7', x: [2, 7, 7, 4], w: [3, 3, 4, 6], strides: 2, pad: pad1 },
  { name: '3x3 s2 pad1 32x32', x: [2, 32, 32, 8], w: [3, 3, 8, 16], strides: 2, pad: pad1 },
  { name: '3x3 s1 pad1 32x32', x: [2, 32, 32, 8], w: [3, 3, 8, 8], strides: 1, pad: pad1 },
  { name: '1x1 s1 pad0 7x7', x: [2, 7, 7, 6], w: [1, 1, 6, 4], strides: 1, pad: pad0 },
  { name: '1x1 s2 pad0 8x8', x: [2, 8, 8, 4], w: [1, 1, 4, 8], strides: 2, pad: pad0 },
  { name: '1x1 s2 pad0 7x7', x: [2, 7, 7, 4], w: [1, 1, 4, 8], strides: 2, pad: pad0 },
  { name: '3x3 s1 same 7x7', x: [2, 7, 7, 3], w: [3, 3, 3, 4], strides: 1, pad: 'same' },
  { name: '3x3 s2 same 8x8', x: [2, 8, 8, 3], w: [3, 3, 3, 4], strides: 2, pad: 'same' },
  { name: '3x3 s2 same 7x7', x: [2, 7, 7, 3], w: [3, 3, 3, 4], strides: 2, pad: 'same' },
  { name: '3x3 s1 valid 7x7', x: [2, 7, 7, 3], w: [3, 3, 3, 4], strides: 1, pad: 'valid' },
  { name: '3x3 s2 valid 8x8', x: [2, 8, 8, 3], w: [3, 3, 3, 4], strides: 2, pad: 'valid' },
  // 1x1 with padding: the padded border samples only zeros.
  { name: '1x1 s2 pad1 7x7', x: [2, 7, 7, 3], w: [1, 1, 3, 4], strides: 2, pad: pad1 },
  { name: '1x1 s2 valid 8x8', x: [2, 8, 8, 3], w: [1, 1, 3, 4], strides: 2, pad: 'valid' },
  { name: '3x3 s2 numeric pad 1', x: [2, 8, 8, 3], w: [3, 3, 3, 4], strides: 2, pad: 1 },
  // Padding wider than the kernel reach, so some outputs see only padding.
  { name: '3x3 s2 numeric pad 3', x: [2, 6, 6, 3], w: [3, 3, 3, 4], strides: 2, pad: 3 },
  { name: '2x2 s2 valid 8x8 (kernel = stride)', x: [2, 8, 8, 3], w: [2, 2, 3, 4], strides: 2, pad: 'valid' },
  { name: '3x3 s3 pad1 10x10', x: [2, 10, 10, 3], w: [3, 3, 3, 4], strides: 3, pad: pad1 },
  {
    name: 'non-square 3x2 strides [2,1] asymmetric pad 9x6',
    x: [2, 9, 6, 3], w: [3, 2, 3, 4], strides: [2, 1], pad: [[0, 0], [2, 0], [0, 1], [0, 0]],
  },
  // What the forward pass (model/forward.ts: convPadding) now calls: 'same' at
  // stride 1; at stride 2 tf.pad (1 before, and 1 after only on an odd side) then 'valid'; 'valid' for 1x1.
  { name: 'forward: 3x3 s1 same 32x32', x: [2, 32, 32, 8], w: [3, 3, 8, 8], strides: 1, pad: 'same' },
  { name: 'forward: 3x3 s2 valid 33x33 (32x32 pre-padded)', x: [2, 33, 33, 8], w: [3, 3, 8, 16], strides: 2, pad: 'valid' },
  { name: 'forward: 3x3 s2 valid 9x9 (8x8 pre-padded)', x: [2, 9, 9, 4], w: [3, 3, 4, 6], strides: 2, pad: 'valid' },
  { name: 'forward: 3x3 s2 valid 17x17 (16x16 pre-padded)', x: [2, 17, 17, 6], w: [3, 3, 6, 8], strides: 2, pad: 'valid' },
  { name: 'forward: 3x3 s2 valid 9x9 (7x7 pre-padded)', x: [3, 9, 9, 4], w: [3, 3, 4, 5], strides: 2, pad: 'valid' },
  { name: 'forward: 1x1 s2 valid 32x32', x: [2, 32, 32, 8], w: [1, 1, 8, 16], strides: 2, pad: 'valid' },
  { name: 'forward: 1x1 s1 valid 8x8', x: [2, 8, 8, 8], w: [1, 1, 8, 16], strides: 1, pad: 'valid' },
  // A side the forward conv never reads to the end of (crop in dW, zero rows in dX).
  { name: '3x3 s2 valid 10x10 (last row unread)', x: [2, 10, 10, 4], w: [3, 3, 4, 6], strides: 2, pad: 'valid' },
];

function randomValues(rng: Rng, size: number): Float32Array {
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) out[i] = rng.nextFloat() * 2 - 1;
  return out;
}

interface CaseData {
  x: Float32Array;
  w: Float32Array;
  r: Float32Array;
  yShape: Shape4;
}

function caseData(c: ConvCase, seed: number): CaseData {
  const rng = Rng.seeded(seed);
  const yShape = tf.backend_util.computeConv2DInfo(c.x, c.w, c.strides, 1, c.pad).outShape as Shape4;
  return {
    x: randomValues(rng, tf.util.sizeFromShape(c.x)),
    w: randomValues(rng, tf.util.sizeFromShape(c.w)),
    r: randomValues(rng, tf.util.sizeFromShape(yShape)),
    yShape,
  };
}

/** [dx, dw] of sum(conv2d(x, w) * r) on the active backend. */
function convGrads(c: ConvCase, d: CaseData): [Float32Array, Float32Array] {
  return tf.tidy(() => {
    const x = tf.tensor4d(d.x, c.x);
    const w = tf.tensor4d(d.w, c.w);
    const r = tf.tensor4d(d.r, d.yShape);
    const loss = (a: tf.Tensor, b: tf.Tensor): tf.Tensor =>
      tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.strides, c.pad), r));
    const [dx, dw] = tf.grads(loss)([x, w]);
    return [dx!.dataSync() as Float32Array, dw!.dataSync() as Float32Array];
  });
}

function maxRelErr(actual: Float32Array, expected: Float32Array): number {
  expect(actual.length).toBe(expected.length);
  let maxDiff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(actual[i]! - expected[i]!));
    scale = Math.max(scale, Math.abs(expected[i]!));
  }
  return scale === 0 ? maxDiff : maxDiff / scale;
}

function nonZero(a: Float32Array): boolean {
  return a.some((v) => v !== 0);
}

beforeAll(async () => {
  await initBackend('wasm');
});

afterAll(async () => {
  await initBackend('wasm');
});

describe('wasm conv gradient kernels', () => {
  it('replace the stock wasm kernels', () => {
    const filterKernel = tf.getKernel('Conv2DBackpropFilter', 'wasm');
    const inputKernel = tf.getKernel('Conv2DBackpropInput', 'wasm');
    expect(filterKernel).toBeDefined();
    // Ours are plain JS functions named after what they compute.
    expect(filterKernel!.kernelFunc.name).toBe('conv2DBackpropFilter');
    expect(inputKernel!.kernelFunc.name).toBe('conv2DBackpropInput');
  });

  it.each(CASES.map((c, i) => [c.name, c, i] as const))('match cpu: %s', async (_name, c, i) => {
    const data = caseData(c, 1000 + i);
    await initBackend('cpu');
    const [dxCpu, dwCpu] = convGrads(c, data);
    await initBackend('wasm');
    const [dxWasm, dwWasm] = convGrads(c, data);
    const dxErr = maxRelErr(dxWasm, dxCpu);
    const dwErr = maxRelErr(dwWasm, dwCpu);
    console.log(`${c.name.padEnd(50)} dX maxRelErr ${dxErr.toExponential(2)}  dW maxRelErr ${dwErr.toExponential(2)}`);
    expect(nonZero(dxCpu) && nonZero(dwCpu)).toBe(true);
    expect(dxErr).toBeLessThanOrEqual(1e-4);
    expect(dwErr).toBeLessThanOrEqual(1e-4);
  });

  it('match cpu when called directly with dimRoundingMode "ceil"', async () => {
    // Gradients never pass dimRoundingMode, but the kernels can be called directly.
    // x 8x8, 3x3, stride 2, pad 0: (8 - 3)/2 + 1 = 3.5, rounded up to 4 outputs,
    // so the last output row reads past the input.
    const xShape: Shape4 = [2, 8, 8, 3];
    const wShape: Shape4 = [3, 3, 3, 4];
    const dyShape: Shape4 = [2, 4, 4, 4];
    const rng = Rng.seeded(77);
    const xv = randomValues(rng, tf.util.sizeFromShape(xShape));
    const wv = randomValues(rng, tf.util.sizeFromShape(wShape));
    const dyv = randomValues(rng, tf.util.sizeFromShape(dyShape));
    const common = { strides: 2, pad: 0, dataFormat: 'NHWC', dimRoundingMode: 'ceil' };
    const run = (): [Float32Array, Float32Array] => tf.tidy(() => {
      const x = tf.tensor4d(xv, xShape);
      const w = tf.tensor4d(wv, wShape);
      const dy = tf.tensor4d(dyv, dyShape);
      const dw = tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...common, filterShape: wShape }) as tf.Tensor;
      const dx = tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: w }, { ...common, inputShape: xShape }) as tf.Tensor;
      return [dx.dataSync() as Float32Array, dw.dataSync() as Float32Array];
    });
    await initBackend('cpu');
    const [dxCpu, dwCpu] = run();
    await initBackend('wasm');
    const [dxWasm, dwWasm] = run();
    const dxErr = maxRelErr(dxWasm, dxCpu);
    const dwErr = maxRelErr(dwWasm, dwCpu);
    console.log(`${'direct call, dimRoundingMode ceil'.padEnd(50)} dX maxRelErr ${dxErr.toExponential(2)}  dW maxRelErr ${dwErr.toExponential(2)}`);
    expect(dxErr).toBeLessThanOrEqual(1e-4);
    expect(dwErr).toBeLessThanOrEqual(1e-4);
  });

  it('fall back to the stock wasm kernel for NCHW input gradients', async () => {
    const xShape: Shape4 = [2, 3, 7, 7]; // NCHW
    const wShape: Shape4 = [3, 3, 3, 4];
    const dyShape: Shape4 = [2, 4, 4, 4];
    const rng = Rng.seeded(78);
    const wv = randomValues(rng, tf.util.sizeFromShape(wShape));
    const dyv = randomValues(rng, tf.util.sizeFromShape(dyShape));
    const attrs = { strides: 2, pad: 'same', dataFormat: 'NCHW', inputShape: xShape };
    const run = (): Float32Array => tf.tidy(() => {
      const dy = tf.tensor4d(dyv, dyShape);
      const w = tf.tensor4d(wv, wShape);
      return (tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: w }, attrs) as tf.Tensor).dataSync() as Float32Array;
    });
    await initBackend('cpu');
    const dxCpu = run();
    await initBackend('wasm');
    const dxErr = maxRelErr(run(), dxCpu);
    console.log(`${'NCHW dX via stock kernel'.padEnd(50)} dX maxRelErr ${dxErr.toExponential(2)}`);
    expect(dxErr).toBeLessThanOrEqual(1e-4);
  });

  it('do not leak tensors or wasm heap allocations over repeated gradients', async () => {
    await initBackend('wasm');
    // IS_TEST makes the engine throw if a kernel leaves data ids behind.
    const wasTest = tf.env().getBool('IS_TEST');
    tf.env().set('IS_TEST', true);
    try {
      // stride-2 3x3, 1x1 s2 (crop + zero fill), 'same', and a 3x3 whose last row is unread (crop)
      const cases = [CASES[2]!, CASES[7]!, CASES[10]!, CASES.find((c) => c.name.startsWith('3x3 s2 valid 10x10'))!];
      const data = cases.map((c, i) => caseData(c, 2000 + i));
      const step = (): void => cases.forEach((c, i) => convGrads(c, data[i]!));
      step(); // warm-up: lazily created constants, kernel setup
      const before = { ...tf.memory(), dataIds: tf.backend().numDataIds() };
      for (let i = 0; i < 20; i++) step();
      const after = { ...tf.memory(), dataIds: tf.backend().numDataIds() };
      expect(after.numTensors).toBe(before.numTensors);
      expect(after.numBytes).toBe(before.numBytes);
      // Our intermediates are raw backend buffers the engine does not count;
      // the backend's own data-id table does.
      expect(after.dataIds).toBe(before.dataIds);
    } finally {
      tf.env().set('IS_TEST', wasTest);
    }
  });
});
