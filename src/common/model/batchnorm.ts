// BatchNorm with PyTorch semantics (eps 1e-5, biased batch variance for
// normalisation). Training mode is written with tf.customGrad because the
// autodiff of the plain-op formula (and of tf.batchNorm) materialises
// full-size Tile/ones tensors for every broadcast: about 40% of a wasm step.
// The closed-form gradient below needs only broadcasts and channel sums.
import * as tf from '@tensorflow/tfjs-core';
import { constant } from './constants.js';

export const BN_EPS = 1e-5;
const AXES = [0, 1, 2];

/**
 * Receives the batch mean and (biased) variance of one layer and the number of
 * values per channel they were taken over; the tensors are kept and owned by the sink.
 */
export type BatchStatsSink = (mean: tf.Tensor1D, variance: tf.Tensor1D, count: number) => void;

export function batchNormTrain(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  sink: BatchStatsSink,
): tf.Tensor4D {
  const [n, h, w] = x.shape;
  const count = n * h * w;
  const op = tf.customGrad((xIn, gammaIn, betaIn, save) => {
    const xt = xIn as tf.Tensor4D;
    const mean = tf.mean(xt, AXES) as tf.Tensor1D;
    const centered = tf.sub(xt, mean);
    const variance = tf.mean(tf.square(centered), AXES) as tf.Tensor1D;
    const invStd = tf.rsqrt(tf.add(variance, constant(BN_EPS)));
    const xhat = tf.mul(centered, invStd);
    const y = tf.add(tf.mul(xhat, gammaIn as tf.Tensor), betaIn as tf.Tensor);
    (save as tf.GradSaveFunc)([xhat, invStd, gammaIn as tf.Tensor]);
    // The statistics leave the forward pass for the running-average update; keep
    // them past the tidy that customGrad runs the forward in.
    sink(tf.keep(mean), tf.keep(variance), count);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const g = dy as tf.Tensor;
        const [xh, inv, gm] = saved;
        const dBeta = tf.sum(g, AXES);
        const dGamma = tf.sum(tf.mul(g, xh), AXES);
        // dx = gamma * invStd / M * (M * dy - dBeta - xhat * dGamma)
        const scale = tf.div(tf.mul(gm, inv), constant(count));
        const inner = tf.sub(tf.sub(tf.mul(g, constant(count)), dBeta), tf.mul(xh, dGamma));
        return [tf.mul(inner, scale), dGamma, dBeta];
      },
    };
  });
  return op(x, gamma, beta) as tf.Tensor4D;
}

/** Eval mode: a per-channel affine map from the running statistics. */
export function batchNormEval(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  runningMean: tf.Tensor1D,
  runningVar: tf.Tensor1D,
): tf.Tensor4D {
  const scale = tf.mul(gamma, tf.rsqrt(tf.add(runningVar, constant(BN_EPS))));
  const shift = tf.sub(beta, tf.mul(runningMean, scale));
  return tf.add(tf.mul(x, scale), shift);
}
