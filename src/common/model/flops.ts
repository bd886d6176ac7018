// What a GPU would spend on each layer of a ModelSpec, and when its backward
// pass would hand each parameter's gradient to the all-reduce. This is the
// compute side of the overlap that bucketed all-reduce exploits: benchmarks
// (scripts/bench-step) replace a real backward by this schedule, and the cost
// model (scripts/cost-model) releases its buckets on it. Pure arithmetic on
// the spec; no TensorFlow.js.
//
// The assumptions, each the usual one:
// - A layer's time is proportional to its forward FLOPs (a multiply-add is 2
//   FLOPs). Convolutions: 2·kh·kw·cin·cout·hout·wout per image; the linear
//   layer 2·in·out + out. BatchNorm (with the ReLU after it) and the average
//   pool are elementwise: NORM_FLOPS_PER_ELEMENT and 1 per input element.
//   They are <1% of the total, which understates them on a real GPU, where
//   they are memory-bound; the convolutions dominate either way.
// - Backward costs BACKWARD_TO_FORWARD = 2 times forward, layer by layer (a
//   gradient for the input and one for the weights, each about a forward).
//   So forward takes computeMs/3 and backward 2·computeMs/3. (The stem's
//   input gradient is never needed; we charge it anyway, as the rule does.)
// - Backward visits the layers in the reverse of forward order, which is the
//   order of spec.params: a block's convs, then its shortcut. Each BatchNorm
//   is its own layer: its gamma and beta are released when its backward
//   finishes, which is just before the backward of the conv it follows. A
//   parameter's gradient is released when its layer's backward finishes,
//   which is when PyTorch's autograd hook would fire for it.
// - Residual adds, the loss and kernel launch gaps take no time.

import type { ConvOp, ModelSpec, NormOp } from './spec.js';

/** Backward time over forward time, per layer and in total. */
export const BACKWARD_TO_FORWARD = 2;
/** Normalise (2), scale and shift (2), ReLU (1): FLOPs per output element of a BatchNorm. */
export const NORM_FLOPS_PER_ELEMENT = 5;

export type LayerKind = 'conv' | 'norm' | 'pool' | 'linear';

export interface LayerCost {
  /** The parameter (or BatchNorm prefix) it is named after, e.g. `layer1.0.conv1.weight`, `layer1.0.bn1`. */
  name: string;
  kind: LayerKind;
  /** Indices into spec.params of the parameters whose gradient this layer's backward produces. */
  params: number[];
  /** Forward FLOPs for the whole batch. */
  flops: number;
}

export interface FlopsOptions {
  /** Height and width of the input images (square); 32 for every dataset here (Fashion-MNIST is padded). */
  inputSize?: number;
}

/** Output height (or width) of a convolution, PyTorch's floor rule. */
export const convOutputSize = (size: number, kernel: number, stride: number, pad: number): number =>
  Math.floor((size + 2 * pad - kernel) / stride) + 1;

/** The layers of `spec` in forward order, each with its forward FLOPs for `batch` images. */
export function layerCosts(spec: ModelSpec, batch: number, options: FlopsOptions = {}): LayerCost[] {
  const inputSize = options.inputSize ?? 32;
  if (!Number.isInteger(batch) || batch < 1) throw new Error(`batch must be a positive integer, got ${batch}`);
  if (!Number.isInteger(inputSize) || inputSize < 1) throw new Error(`inputSize must be a positive integer, got ${inputSize}`);
  const index = new Map(spec.params.map((p, i) => [p.name, i]));
  const paramIndex = (name: string): number => {
    const i = index.get(name);
    if (i === undefined) throw new Error(`model spec has no parameter ${name}`);
    return i;
  };
  const layers: LayerCost[] = [];

  /** Appends a conv and its norm; returns the output size and channels. */
  const convNorm = (op: { conv: ConvOp; norm: NormOp }, size: number): { size: number; channels: number } => {
    const w = paramIndex(op.conv.weight);
    const [kh, kw, cin, cout] = spec.params[w].shape;
    const out = convOutputSize(size, kh, op.conv.stride, op.conv.pad);
    if (out < 1) throw new Error(`${op.conv.weight}: a ${size}x${size} input leaves no output`);
    layers.push({ name: op.conv.weight, kind: 'conv', params: [w], flops: 2 * kh * kw * cin * cout * out * out * batch });
    const elements = cout * out * out * batch;
    if (op.norm.bn !== null) {
      layers.push({
        name: op.norm.bn, kind: 'norm', params: [paramIndex(`${op.norm.bn}.weight`), paramIndex(`${op.norm.bn}.bias`)],
        flops: NORM_FLOPS_PER_ELEMENT * elements,
      });
    }
    return { size: out, channels: cout };
  };

  let { size, channels } = convNorm(spec.stem, inputSize);
  for (const block of spec.blocks) {
    let s = size;
    for (const op of block.convs) ({ size: s, channels } = convNorm(op, s));
    if (block.shortcut) convNorm(block.shortcut, size);
    size = s;
  }
  layers.push({ name: 'avgpool', kind: 'pool', params: [], flops: channels * size * size * batch });
  const out = spec.params[paramIndex(spec.linear.bias)].size;
  layers.push({
    name: spec.linear.weight, kind: 'linear', params: [paramIndex(spec.linear.weight), paramIndex(spec.linear.bias)],
    flops: (2 * spec.linear.inFeatures * out + out) * batch,
  });
  return layers;
}

/** Forward FLOPs of `batch` images, every layer counted. */
export function forwardFlops(spec: ModelSpec, batch: number, options: FlopsOptions = {}): number {
  return layerCosts(spec, batch, options).reduce((s, l) => s + l.flops, 0);
}

export interface GradientReleaseSchedule {
  /** Forward FLOPs of the batch (backward is BACKWARD_TO_FORWARD times that). */
  forwardFlops: number;
  /** When forward ends and backward starts, ms after the start of forward: computeMs / 3. */
  forwardMs: number;
  /** Indexed like spec.params: ms after the start of forward at which that parameter's gradient is ready. */
  releaseMs: Float64Array;
  /** The layers in forward order, with when each one's backward finishes. */
  layers: (LayerCost & { backwardEndMs: number })[];
}

/**
 * When a GPU whose forward+backward of `batch` images takes `computeMs` would
 * release each parameter's gradient. The last release (the stem conv) is at
 * computeMs; release times never increase with the parameter index.
 */
export function gradientReleaseSchedule(spec: ModelSpec, batch: number, computeMs: number, options: FlopsOptions = {}): GradientReleaseSchedule {
  if (!Number.isFinite(computeMs) || computeMs <= 0) throw new Error(`computeMs must be a positive number, got ${computeMs}`);
  const layers = layerCosts(spec, batch, options);
  const total = layers.reduce((s, l) => s + l.flops, 0);
  const forwardMs = computeMs / (1 + BACKWARD_TO_FORWARD);
  const backwardMs = computeMs - forwardMs;
  const releaseMs = new Float64Array(spec.params.length).fill(Number.NaN);
  const timed: (LayerCost & { backwardEndMs: number })[] = new Array(layers.length);
  let done = 0;
  for (let i = layers.length - 1; i >= 0; i--) {
    done += layers[i].flops;
    // The stem ends exactly at computeMs, not at a rounding of it.
    const backwardEndMs = i === 0 ? computeMs : forwardMs + (backwardMs * done) / total;
    timed[i] = { ...layers[i], backwardEndMs };
    for (const p of layers[i].params) releaseMs[p] = backwardEndMs;
  }
  const missing = releaseMs.findIndex((t) => Number.isNaN(t));
  if (missing >= 0) throw new Error(`parameter ${spec.params[missing].name} belongs to no layer`);
  return { forwardFlops: total, forwardMs, releaseMs, layers: timed };
}
