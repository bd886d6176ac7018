// Fast convolution gradients for the TF.js wasm backend.
//
// TF.js 4.22's wasm backend has no Conv2DBackpropFilter kernel at all (the
// engine would move every weight gradient to the cpu backend) and its
// Conv2DBackpropInput is a naive loop running at ~2 GFLOP/s, while its forward
// Conv2D (XNNPACK) runs at ~20 GFLOP/s. Both gradients are convolutions, so we
// express them as forward Conv2D calls on rearranged data:
//
//  - dW: conv2d(transpose(x) -> [Ci, H, W, N], transpose(dy) -> [OH, OW, N, Co])
//        with stride 1 and dilation = the forward stride. The batch becomes the
//        contraction ("input channel") axis and Ci becomes the batch axis, so
//        the output is [Ci, kH, kW, Co], transposed back to [kH, kW, Ci, Co].
//  - dX: split by stride phase. Input row ih receives gradient only from the
//        filter taps kh with (ih + padTop - kh) divisible by the stride, so for
//        each phase (ih + padTop) mod stride there is a stride-1 conv of dy with
//        the flipped, channel-swapped sub-filter of those taps. Its rows are then
//        interleaved into dX. Unlike convolving a zero-stuffed dy, this does no
//        multiplications by inserted zeros (4x less work at stride 2). At stride
//        1 there is a single phase whose conv output already is dX.
//
// Everything is NHWC float32, which is all the wasm Conv2D kernel supports.
// Intermediates are raw backend TensorInfos (the engine does not track them),
// so every one is freed with backend.disposeData before the kernel returns.

import * as tf from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

type Info = tf.TensorInfo;
type Shape4 = [number, number, number, number];
type ConvPad = tf.Conv2DAttrs['pad'];
type RoundingMode = tf.Conv2DAttrs['dimRoundingMode'];

const BACKEND = 'wasm';

/** Geometry of the forward convolution whose gradient is being computed. */
interface ConvGeometry {
  batch: number;
  inH: number;
  inW: number;
  inC: number;
  outH: number;
  outW: number;
  outC: number;
  kH: number;
  kW: number;
  strideH: number;
  strideW: number;
  padTop: number;
  padLeft: number;
}

function convGeometry(
  inShape: Shape4,
  filterShape: Shape4,
  strides: [number, number] | number,
  pad: ConvPad,
  dimRoundingMode: RoundingMode,
): ConvGeometry {
  // Same function the forward kernels use, so 'same'/'valid'/number/explicit
  // padding and rounding modes resolve exactly as in the forward pass.
  const info = tf.backend_util.computeConv2DInfo(
    inShape, filterShape, strides, 1, pad, dimRoundingMode, false, 'channelsLast');
  return {
    batch: info.batchSize,
    inH: info.inHeight,
    inW: info.inWidth,
    inC: info.inChannels,
    outH: info.outHeight,
    outW: info.outWidth,
    outC: info.outChannels,
    kH: info.filterHeight,
    kW: info.filterWidth,
    strideH: info.strideHeight,
    strideW: info.strideWidth,
    padTop: info.padInfo.top,
    padLeft: info.padInfo.left,
  };
}

function assertShape(what: string, actual: readonly number[], expected: readonly number[]): void {
  if (actual.length !== expected.length || actual.some((d, i) => d !== expected[i])) {
    throw new Error(
      `wasm conv gradient: ${what} has shape [${actual.join(', ')}] but the forward ` +
        `convolution implies [${expected.join(', ')}]; check the strides/pad passed to the gradient`);
  }
}

// ---------------------------------------------------------------------------
// Calling the wasm backend's own kernels directly.

function wasmKernel(name: string): tf.KernelConfig {
  const config = tf.getKernel(name, BACKEND);
  if (config === undefined) {
    throw new Error(
      `wasm kernel "${name}" is not registered: import @tensorflow/tfjs-backend-wasm ` +
        `(initBackend('wasm') does) before using the wasm conv gradient kernels`);
  }
  return config;
}

function runKernel(backend: BackendWasm, name: string, inputs: tf.NamedTensorInfoMap, attrs: object): Info {
  return wasmKernel(name).kernelFunc({ inputs, backend, attrs: attrs as tf.NamedAttrMap }) as Info;
}

function conv2d(
  backend: BackendWasm,
  x: Info,
  filter: Info,
  dilations: [number, number],
  pad: [[number, number], [number, number]],
): Info {
  const attrs: tf.Conv2DAttrs = {
    strides: 1,
    dilations,
    pad: [[0, 0], pad[0], pad[1], [0, 0]],
    dataFormat: 'NHWC',
  };
  return runKernel(backend, 'Conv2D', { x, filter }, attrs);
}

function transpose(backend: BackendWasm, x: Info, perm: number[]): Info {
  return runKernel(backend, 'Transpose', { x }, { perm });
}

/**
 * Tracks intermediate TensorInfos of one kernel call and frees them at the end,
 * including when the call throws, so repeated gradients do not grow the heap.
 */
class Scratch {
  private readonly infos: Info[] = [];
  constructor(private readonly backend: BackendWasm) {}

  keep(info: Info): Info {
    this.infos.push(info);
    return info;
  }

  /** Hands `info` over to the caller: it will not be freed by dispose(). */
  release(info: Info): Info {
    this.infos.splice(this.infos.indexOf(info), 1);
    return info;
  }

  dispose(): void {
    for (const info of this.infos) this.backend.disposeData(info.dataId);
    this.infos.length = 0;
  }
}

/**
 * A float32 view of a tensor's memory. Views must be taken after the last
 * allocation of a step: malloc can grow (and so detach) the wasm heap.
 */
function f32(backend: BackendWasm, info: Info): Float32Array {
  return backend.typedArrayFromHeap(info) as Float32Array;
}

// ---------------------------------------------------------------------------
// dW

/**
 * Along one spatial axis: the input rows the forward conv actually reads, and
 * the zero padding needed around them so that a stride-1 conv dilated by the
 * forward stride yields exactly `kernel` outputs.
 */
interface FilterGradAxis {
  first: number; // first input row read
  count: number; // number of input rows read
  padBefore: number;
  padAfter: number;
}

function filterGradAxis(inSize: number, kernel: number, outSize: number, stride: number, padBefore: number): FilterGradAxis {
  // Forward output o reads padded rows o*stride + k, i.e. input rows
  // o*stride + k - padBefore; over all o, k that is the span [start, end].
  const start = -padBefore;
  const end = (outSize - 1) * stride + kernel - 1 - padBefore;
  const first = Math.max(0, start);
  const last = Math.min(inSize - 1, end);
  return { first, count: last - first + 1, padBefore: first - start, padAfter: end - last };
}

/** Copies x[:, rows, cols, :] into a new tensor (rows the gradient never reads are dropped). */
function cropSpatial(backend: BackendWasm, x: Info, rows: FilterGradAxis, cols: FilterGradAxis): Info {
  const [n, h, w, c] = x.shape as Shape4;
  const out = backend.makeOutput([n, rows.count, cols.count, c], 'float32');
  const src = f32(backend, x);
  const dst = f32(backend, out);
  const rowLen = cols.count * c;
  let o = 0;
  for (let b = 0; b < n; b++) {
    for (let r = 0; r < rows.count; r++) {
      const s = ((b * h + rows.first + r) * w + cols.first) * c;
      dst.set(src.subarray(s, s + rowLen), o);
      o += rowLen;
    }
  }
  return out;
}

/**
 * dW of a 1x1 conv is one matrix product, dW[ci, co] = sum_p xs[p, ci] * dy[p, co]
 * over the M = N*OH*OW sampled input pixels p. It runs as a 1x1 Conv2D (a
 * GEMM in XNNPACK) whose "image" is xs transposed to [1, 1, Ci, M] and whose
 * filter is dy itself, read in place as [1, 1, M, Co]. This avoids the big
 * dilated filter of the general path, which is slow for 1x1 stride-2 shortcuts.
 */
function pointwiseFilterGrad(backend: BackendWasm, x: Info, dy: Info, g: ConvGeometry): Info {
  const m = g.batch * g.outH * g.outW;
  const scratch = new Scratch(backend);
  try {
    const xsT = scratch.keep(backend.makeOutput([1, 1, g.inC, m], 'float32'));
    const src = f32(backend, x);
    const dst = f32(backend, xsT);
    let p = 0;
    for (let n = 0; n < g.batch; n++) {
      for (let oh = 0; oh < g.outH; oh++) {
        const ih = oh * g.strideH - g.padTop;
        for (let ow = 0; ow < g.outW; ow++, p++) {
          const iw = ow * g.strideW - g.padLeft;
          const inside = ih >= 0 && ih < g.inH && iw >= 0 && iw < g.inW;
          const base = ((n * g.inH + ih) * g.inW + iw) * g.inC;
          for (let c = 0; c < g.inC; c++) dst[c * m + p] = inside ? src[base + c]! : 0;
        }
      }
    }
    const dyAsFilter: Info = { dataId: dy.dataId, shape: [1, 1, m, g.outC], dtype: 'float32' };
    return conv2d(backend, xsT, dyAsFilter, [1, 1], [[0, 0], [0, 0]]); // [1, 1, Ci, Co]
  } finally {
    scratch.dispose();
  }
}

function conv2DBackpropFilter({ inputs, backend, attrs }: {
  inputs: tf.NamedTensorInfoMap;
  backend: BackendWasm;
  attrs: tf.Conv2DBackpropFilterAttrs;
}): Info {
  const { x, dy } = inputs as { x: Info; dy: Info };
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs;
  if (dataFormat !== 'NHWC' || x.dtype !== 'float32' || dy.dtype !== 'float32') {
    throw new Error(
      `wasm Conv2DBackpropFilter supports NHWC float32 only (got ${dataFormat}, ` +
        `${x.dtype}/${dy.dtype}); the wasm forward Conv2D has the same limit`);
  }
  const g = convGeometry(x.shape as Shape4, filterShape, strides, pad, dimRoundingMode);
  assertShape('dy', dy.shape, [g.batch, g.outH, g.outW, g.outC]);
  const rows = filterGradAxis(g.inH, g.kH, g.outH, g.strideH, g.padTop);
  const cols = filterGradAxis(g.inW, g.kW, g.outW, g.strideW, g.padLeft);

  if (rows.count <= 0 || cols.count <= 0) {
    // Every tap only ever saw padding: the gradient is exactly zero.
    const zeros = backend.makeOutput(filterShape, 'float32');
    f32(backend, zeros).fill(0);
    return zeros;
  }

  if (g.kH === 1 && g.kW === 1) return pointwiseFilterGrad(backend, x, dy, g);

  const scratch = new Scratch(backend);
  try {
    const needsCrop = rows.first !== 0 || rows.count !== g.inH || cols.first !== 0 || cols.count !== g.inW;
    const xUsed = needsCrop ? scratch.keep(cropSpatial(backend, x, rows, cols)) : x;
    const xT = scratch.keep(transpose(backend, xUsed, [3, 1, 2, 0])); // [Ci, h, w, N]
    const dyT = scratch.keep(transpose(backend, dy, [1, 2, 0, 3])); // [OH, OW, N, Co]
    const dwT = scratch.keep(conv2d(backend, xT, dyT, [g.strideH, g.strideW], [
      [rows.padBefore, rows.padAfter],
      [cols.padBefore, cols.padAfter],
    ])); // [Ci, kH, kW, Co]
    assertShape('internal dW', dwT.shape, [g.inC, g.kH, g.kW, g.outC]);
    return transpose(backend, dwT, [1, 2, 0, 3]);
  } finally {
    scratch.dispose();
  }
}

// ---------------------------------------------------------------------------
// dX

/**
 * One stride phase along one spatial axis: the input rows
 * ih = first + i*stride (i < count) get gradient from the filter taps `taps`
 * only. `taps` is in convolution order (flipped), and the stride-1 conv of dy
 * with padding [padBefore, padAfter] produces input row `first` at output row
 * `outOffset`, the next phase row at outOffset + 1, and so on.
 */
interface InputGradPhase {
  taps: number[];
  first: number;
  count: number;
  padBefore: number;
  padAfter: number;
  outOffset: number;
  convOutSize: number;
}

function inputGradPhases(inSize: number, kernel: number, outSize: number, stride: number, padBefore: number): InputGradPhase[] {
  const phases: InputGradPhase[] = [];
  for (let phase = 0; phase < Math.min(stride, kernel); phase++) {
    // Taps kh = phase + m*stride; padded row r = q*stride + phase receives
    // dy[q - m] * w[phase + m*stride].
    const numTaps = Math.ceil((kernel - phase) / stride);
    const taps: number[] = [];
    for (let m = numTaps - 1; m >= 0; m--) taps.push(phase + m * stride);
    // Input row ih = q*stride + phase - padBefore must lie in [0, inSize).
    const qFirst = Math.ceil((padBefore - phase) / stride);
    const qLast = Math.floor((inSize - 1 + padBefore - phase) / stride);
    const count = qLast - qFirst + 1;
    if (count <= 0) continue;
    // As a stride-1 conv, output q reads dy[q - (numTaps-1) .. q]; pad dy so
    // every q in [qFirst, qLast] is computed (negative pads become extra
    // output rows that are simply not copied).
    const padB = Math.max(0, numTaps - 1 - qFirst);
    const padA = Math.max(0, qLast - (outSize - 1));
    phases.push({
      taps,
      first: qFirst * stride + phase - padBefore,
      count,
      padBefore: padB,
      padAfter: padA,
      outOffset: qFirst + padB - (numTaps - 1),
      convOutSize: outSize + padB + padA - numTaps + 1,
    });
  }
  return phases;
}

/** w[kh, kw, ci, co] -> sub[a, b, co, ci] = w[rowTaps[a], colTaps[b], ci, co]. */
function flippedSubFilter(backend: BackendWasm, filter: Info, rowTaps: number[], colTaps: number[]): Info {
  const [, kW, ci, co] = filter.shape as Shape4;
  const out = backend.makeOutput([rowTaps.length, colTaps.length, co, ci], 'float32');
  const src = f32(backend, filter);
  const dst = f32(backend, out);
  let o = 0;
  for (const kh of rowTaps) {
    for (const kw of colTaps) {
      const base = (kh * kW + kw) * ci * co;
      for (let c = 0; c < co; c++) {
        for (let i = 0; i < ci; i++) dst[o++] = src[base + i * co + c];
      }
    }
  }
  return out;
}

/** Copies the rows/cols of one phase's conv output into their places in dX. */
function scatterPhase(backend: BackendWasm, part: Info, dx: Info, rows: InputGradPhase, cols: InputGradPhase, strideH: number, strideW: number): void {
  const [n, ph, pw, c] = part.shape as Shape4;
  const [, h, w] = dx.shape as Shape4;
  const src = f32(backend, part);
  const dst = f32(backend, dx);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < rows.count; i++) {
      const srcRow = (b * ph + rows.outOffset + i) * pw;
      const dstRow = (b * h + rows.first + i * strideH) * w;
      for (let j = 0; j < cols.count; j++) {
        const s = (srcRow + cols.outOffset + j) * c;
        const d = (dstRow + cols.first + j * strideW) * c;
        for (let k = 0; k < c; k++) dst[d + k] = src[s + k];
      }
    }
  }
}

let stockConv2DBackpropInput: tf.KernelConfig | undefined;

function conv2DBackpropInput({ inputs, backend, attrs }: {
  inputs: tf.NamedTensorInfoMap;
  backend: BackendWasm;
  attrs: tf.Conv2DBackpropInputAttrs;
}): Info {
  const { dy, filter } = inputs as { dy: Info; filter: Info };
  const { strides, pad, dataFormat, dimRoundingMode, inputShape } = attrs;
  if (dataFormat !== 'NHWC' || dy.dtype !== 'float32' || filter.dtype !== 'float32') {
    // The stock kernel also handles NCHW; keep it for anything we don't.
    if (stockConv2DBackpropInput === undefined) {
      throw new Error(`wasm Conv2DBackpropInput: ${dataFormat} ${dy.dtype} is unsupported and no stock kernel was found`);
    }
    return stockConv2DBackpropInput.kernelFunc({ inputs, backend, attrs: attrs as unknown as tf.NamedAttrMap }) as Info;
  }
  const g = convGeometry(inputShape, filter.shape as Shape4, strides, pad, dimRoundingMode);
  assertShape('dy', dy.shape, [g.batch, g.outH, g.outW, g.outC]);
  const rowPhases = inputGradPhases(g.inH, g.kH, g.outH, g.strideH, g.padTop);
  const colPhases = inputGradPhases(g.inW, g.kW, g.outW, g.strideW, g.padLeft);

  const scratch = new Scratch(backend);
  try {
    const parts: { part: Info; rows: InputGradPhase; cols: InputGradPhase }[] = [];
    for (const rows of rowPhases) {
      for (const cols of colPhases) {
        const sub = scratch.keep(flippedSubFilter(backend, filter, rows.taps, cols.taps));
        const part = scratch.keep(conv2d(backend, dy, sub, [1, 1], [
          [rows.padBefore, rows.padAfter],
          [cols.padBefore, cols.padAfter],
        ]));
        parts.push({ part, rows, cols });
      }
    }
    // Stride 1 with ordinary padding: the single phase conv already is dX.
    if (parts.length === 1) {
      const { part, rows, cols } = parts[0]!;
      if (rows.first === 0 && rows.outOffset === 0 && rows.count === g.inH && rows.convOutSize === g.inH &&
          cols.first === 0 && cols.outOffset === 0 && cols.count === g.inW && cols.convOutSize === g.inW) {
        return scratch.release(part);
      }
    }

    const dx = backend.makeOutput([g.batch, g.inH, g.inW, g.inC], 'float32');
    const rowsCovered = rowPhases.reduce((sum, p) => sum + p.count, 0);
    const colsCovered = colPhases.reduce((sum, p) => sum + p.count, 0);
    if (rowsCovered < g.inH || colsCovered < g.inW) {
      // Some input rows/cols are never read by the forward conv (e.g. odd rows
      // of a 1x1 stride-2 conv): their gradient is zero.
      f32(backend, dx).fill(0);
    }
    for (const { part, rows, cols } of parts) scatterPhase(backend, part, dx, rows, cols, g.strideH, g.strideW);
    return dx;
  } finally {
    scratch.dispose();
  }
}

// ---------------------------------------------------------------------------
// Registration

const filterGradConfig: tf.KernelConfig = {
  kernelName: tf.Conv2DBackpropFilter,
  backendName: BACKEND,
  kernelFunc: conv2DBackpropFilter as unknown as tf.KernelFunc,
};

const inputGradConfig: tf.KernelConfig = {
  kernelName: tf.Conv2DBackpropInput,
  backendName: BACKEND,
  kernelFunc: conv2DBackpropInput as unknown as tf.KernelFunc,
  // The engine runs setup functions of registered kernels only, so once the
  // stock kernel is unregistered its wasm bindings must be set up from here
  // for the fallback (and benchmarks) to be callable.
  setupFunc: (backend) => stockConv2DBackpropInput?.setupFunc?.(backend),
};

function replaceKernel(config: tf.KernelConfig): void {
  if (tf.getKernel(config.kernelName, BACKEND) !== undefined) {
    tf.unregisterKernel(config.kernelName, BACKEND);
  }
  tf.registerKernel(config);
}

/**
 * Installs the Conv2DBackpropFilter / Conv2DBackpropInput kernels above for
 * the wasm backend. Idempotent. The wasm backend package must already be
 * imported (its kernels are what these are built from).
 */
export function registerWasmConvGradKernels(): void {
  wasmKernel('Conv2D'); // fails with a clear message if wasm is not loaded
  const currentInput = tf.getKernel(tf.Conv2DBackpropInput, BACKEND);
  if (currentInput !== inputGradConfig) {
    stockConv2DBackpropInput = currentInput;
    replaceKernel(inputGradConfig);
  }
  if (tf.getKernel(tf.Conv2DBackpropFilter, BACKEND) !== filterGradConfig) {
    replaceKernel(filterGradConfig);
  }
}

/**
 * The wasm backend's own (naive) Conv2DBackpropInput kernel that
 * registerWasmConvGradKernels replaced, for benchmarks and as a fallback.
 */
export function stockWasmConv2DBackpropInput(): tf.KernelConfig | undefined {
  return stockConv2DBackpropInput ?? tf.getKernel(tf.Conv2DBackpropInput, BACKEND);
}
