// The ResNet forward pass as plain tfjs-core ops over named parameter tensors,
// so gradients come from tf.valueAndGrads over a tensor list rather than from
// global tf.Variables (whose names must be unique per process, which breaks
// several replicas in one test process).
import * as tf from '@tensorflow/tfjs-core';
import { batchNormEval, batchNormTrain } from './batchnorm.js';
import type { ConvOp, ModelSpec, NormOp } from './spec.js';

export type ParamTensors = Map<string, tf.Tensor>;

export type ForwardMode =
  | { kind: 'train'; onBatchStats: (bnName: string, mean: tf.Tensor1D, variance: tf.Tensor1D, count: number) => void }
  | { kind: 'eval'; runningStats: Map<string, { mean: tf.Tensor1D; variance: tf.Tensor1D }> };

function param(params: ParamTensors, name: string): tf.Tensor {
  const t = params.get(name);
  if (!t) throw new Error(`internal: parameter ${name} missing from the replica`);
  return t;
}

function conv(params: ParamTensors, op: ConvOp, x: tf.Tensor4D): tf.Tensor4D {
  // Explicit symmetric padding: PyTorch pads 1 on every side even at stride 2,
  // where TensorFlow's 'same' would pad only bottom/right.
  const pad: 'valid' | [[number, number], [number, number], [number, number], [number, number]] =
    op.pad === 0 ? 'valid' : [[0, 0], [op.pad, op.pad], [op.pad, op.pad], [0, 0]];
  return tf.conv2d(x, param(params, op.weight) as tf.Tensor4D, op.stride, pad);
}

function norm(params: ParamTensors, op: NormOp, x: tf.Tensor4D, mode: ForwardMode): tf.Tensor4D {
  if (op.bn === null) return x;
  const gamma = param(params, `${op.bn}.weight`) as tf.Tensor1D;
  const beta = param(params, `${op.bn}.bias`) as tf.Tensor1D;
  const name = op.bn;
  if (mode.kind === 'train') {
    return batchNormTrain(x, gamma, beta, (mean, variance, count) => mode.onBatchStats(name, mean, variance, count));
  }
  const stats = mode.runningStats.get(name);
  if (!stats) throw new Error(`internal: running statistics for ${name} missing`);
  return batchNormEval(x, gamma, beta, stats.mean, stats.variance);
}

/** Logits [n, numClasses] for an NHWC batch. */
export function forward(spec: ModelSpec, params: ParamTensors, x: tf.Tensor4D, mode: ForwardMode): tf.Tensor2D {
  const unit = (u: { conv: ConvOp; norm: NormOp }, input: tf.Tensor4D) => norm(params, u.norm, conv(params, u.conv, input), mode);

  let out = tf.relu(unit(spec.stem, x));
  for (const block of spec.blocks) {
    let y = out;
    block.convs.forEach((u, i) => {
      y = unit(u, y);
      if (i < block.convs.length - 1) y = tf.relu(y) as tf.Tensor4D;
    });
    const shortcut = block.shortcut ? unit(block.shortcut, out) : out;
    out = tf.relu(tf.add(y, shortcut)) as tf.Tensor4D;
  }
  const [, h, w] = out.shape;
  if (h !== 4 || w !== 4) {
    throw new Error(`the CIFAR ResNet expects 32x32 inputs (final feature map 4x4), got ${h}x${w}`);
  }
  // F.avg_pool2d(out, 4) on a 4x4 map is the spatial mean.
  const pooled = tf.mean(out, [1, 2]) as tf.Tensor2D;
  return tf.add(tf.matMul(pooled, param(params, spec.linear.weight) as tf.Tensor2D), param(params, spec.linear.bias));
}
