// The ResNet forward pass as plain tfjs-core ops over named parameter tensors,
// so gradients come from tf.valueAndGrads over a tensor list rather than from
// global tf.Variables (whose names must be unique per process, which breaks
// several replicas in one test process).
import * as tf from '@tensorflow/tfjs-core';
import { batchNormEval, batchNormTrain, batchNormTrainSync, type BatchNormSync } from './batchnorm.js';
import { constant } from './constants.js';
import type { ConvOp, ModelSpec, NormOp } from './spec.js';

export type ParamTensors = Map<string, tf.Tensor>;

export type ForwardMode =
  | {
    kind: 'train';
    onBatchStats: (bnName: string, mean: tf.Tensor1D, variance: tf.Tensor1D, count: number) => void;
    /** SyncBatchNorm (--sync-bn): the global batch's statistics; absent or null, this replica's own. */
    sync?: BatchNormSync | null;
  }
  | { kind: 'eval'; runningStats: Map<string, { mean: tf.Tensor1D; variance: tf.Tensor1D }> };

function param(params: ParamTensors, name: string): tf.Tensor {
  const t = params.get(name);
  if (!t) throw new Error(`internal: parameter ${name} missing from the replica`);
  return t;
}

/** Zeros that tf.pad adds before a convolution, [[top, bottom], [left, right]]. */
export type PrePad = [[number, number], [number, number]];

/** A convolution's padding: `prePad` zeros first (tf.pad; null for none), then conv2d with `pad`. */
export interface ConvPadding {
  prePad: PrePad | null;
  pad: 'same' | 'valid';
}

/**
 * How a convolution with PyTorch's symmetric zero padding `op.pad` on an
 * input of `inH` x `inW` is expressed in TensorFlow.js. Never as explicit
 * padding: tfjs-node's Conv2DBackpropInput and Conv2DBackpropFilter accept
 * only 'valid' and 'same', and a GPU run must take the same path as a CPU one
 * (src/common/backend/tfjs-node-kernels.ts, test/tfjs-node-conformance.test.ts).
 *
 *  - no padding: 'valid';
 *  - stride 1, odd square kernel k, pad (k-1)/2: 'same', which then pads
 *    (k-1)/2 on every side, exactly PyTorch's padding;
 *  - anything else (the stride-2 3x3 convolutions): tf.pad, then 'valid'.
 *    TensorFlow's 'same' at stride 2 on an even input pads 0 before and 1
 *    after, which would shift every sample against PyTorch. tf.pad adds
 *    `pad` before and only the zeros after that PyTorch's convolution
 *    actually reads: none on an even input at stride 2, whose last padded
 *    row no output touches. Same outputs, a smaller padded copy, and a
 *    gradient that computes no rows only to discard them.
 */
export function convPadding(
  op: Pick<ConvOp, 'pad' | 'stride'>, kernel: [number, number], input: [number, number],
): ConvPadding {
  const [kH, kW] = kernel;
  if (op.pad === 0) return { prePad: null, pad: 'valid' };
  if (op.stride === 1 && kH === kW && kH === 2 * op.pad + 1) return { prePad: null, pad: 'same' };
  const axis = (size: number, k: number): [number, number] => {
    const out = Math.floor((size + 2 * op.pad - k) / op.stride) + 1;
    return [op.pad, Math.max(0, (out - 1) * op.stride + k - op.pad - size)];
  };
  return { prePad: [axis(input[0], kH), axis(input[1], kW)], pad: 'valid' };
}

function conv(params: ParamTensors, op: ConvOp, x: tf.Tensor4D): tf.Tensor4D {
  const w = param(params, op.weight) as tf.Tensor4D;
  const { prePad, pad } = convPadding(op, [w.shape[0], w.shape[1]], [x.shape[1], x.shape[2]]);
  const input = prePad === null ? x : tf.pad(x, [[0, 0], prePad[0], prePad[1], [0, 0]]);
  return tf.conv2d(input, w, op.stride, pad);
}

function norm(params: ParamTensors, op: NormOp, x: tf.Tensor4D, mode: ForwardMode): tf.Tensor4D {
  if (op.bn === null) return x;
  const gamma = param(params, `${op.bn}.weight`) as tf.Tensor1D;
  const beta = param(params, `${op.bn}.bias`) as tf.Tensor1D;
  const name = op.bn;
  if (mode.kind === 'train') {
    const sink = (mean: tf.Tensor1D, variance: tf.Tensor1D, count: number) => mode.onBatchStats(name, mean, variance, count);
    return mode.sync ? batchNormTrainSync(x, gamma, beta, sink, mode.sync) : batchNormTrain(x, gamma, beta, sink);
  }
  const stats = mode.runningStats.get(name);
  if (!stats) throw new Error(`internal: running statistics for ${name} missing`);
  return batchNormEval(x, gamma, beta, stats.mean, stats.variance);
}

/**
 * How the ReLU's gradient is taken. tfjs-core's is dy * step(x), and Step is
 * one device kernel on wasm and cpu; but tfjs-node's Step builds
 * ones(x.shape) in a JavaScript loop and uploads it, 1.5 GB per ResNet50 step
 * at batch 128. There the mask comes from the ReLU's own output instead,
 * greater(y, 0), all native ops. (Not sign(y): wasm's Sign returns 0 for
 * positive values below about 1e-7, so its gradients would differ.) Both
 * give the same bits: y > 0 exactly where x > 0.
 */
export type ReluGradient = 'step' | 'greater';

export function reluGradientFor(backend: string): ReluGradient {
  return backend === 'tensorflow' ? 'greater' : 'step';
}

const reluFromOutput = tf.customGrad<tf.Tensor4D>((x, save) => {
  const y = tf.relu(x as tf.Tensor4D);
  (save as tf.GradSaveFunc)([y]);
  return {
    value: y,
    gradFunc: (dy: tf.Tensor4D, [saved]: tf.Tensor[]) => tf.mul(dy, tf.cast(tf.greater(saved!, constant(0)), 'float32')),
  };
}) as (x: tf.Tensor4D) => tf.Tensor4D;

const RELU: Record<ReluGradient, (x: tf.Tensor4D) => tf.Tensor4D> = { step: (x) => tf.relu(x), greater: reluFromOutput };

/**
 * The mean over a 4x4 feature map (F.avg_pool2d(out, 4)), with the gradient
 * dy / 16 tiled over the map. tfjs-core's Mean gradient multiplies by
 * ones(x.shape), another host-built upload on tfjs-node; dividing by 16, a
 * power of two, first gives the same bits.
 */
const spatialMean = tf.customGrad<tf.Tensor2D>((x) => {
  const xt = x as tf.Tensor4D;
  const [n, h, w, c] = xt.shape;
  return {
    value: tf.mean(xt, [1, 2]) as tf.Tensor2D,
    gradFunc: (dy: tf.Tensor2D) => tf.tile(tf.reshape(tf.div(dy, constant(h * w)), [n, 1, 1, c]), [1, h, w, 1]),
  };
}) as (x: tf.Tensor4D) => tf.Tensor2D;

/** Logits [n, numClasses] for an NHWC batch. */
export function forward(
  spec: ModelSpec, params: ParamTensors, x: tf.Tensor4D, mode: ForwardMode,
  reluGradient: ReluGradient = reluGradientFor(tf.getBackend()),
): tf.Tensor2D {
  const relu = RELU[reluGradient];
  const unit = (u: { conv: ConvOp; norm: NormOp }, input: tf.Tensor4D) => norm(params, u.norm, conv(params, u.conv, input), mode);

  let out = relu(unit(spec.stem, x));
  for (const block of spec.blocks) {
    let y = out;
    block.convs.forEach((u, i) => {
      y = unit(u, y);
      if (i < block.convs.length - 1) y = relu(y);
    });
    const shortcut = block.shortcut ? unit(block.shortcut, out) : out;
    out = relu(tf.add(y, shortcut) as tf.Tensor4D);
  }
  const [, h, w] = out.shape;
  if (h !== 4 || w !== 4) {
    throw new Error(`the CIFAR ResNet expects 32x32 inputs (final feature map 4x4), got ${h}x${w}`);
  }
  // F.avg_pool2d(out, 4) on a 4x4 map is the spatial mean.
  const pooled = spatialMean(out);
  return tf.add(tf.matMul(pooled, param(params, spec.linear.weight) as tf.Tensor2D), param(params, spec.linear.bias));
}
