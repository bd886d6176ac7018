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

/**
 * SyncBatchNorm's link to the other ranks (torch.nn.SyncBatchNorm): a
 * blocking sum of a small vector over every rank, called from inside forward
 * and backward in the same order on every rank.
 */
export interface BatchNormSync {
  rank: number;
  worldSize: number;
  /** Replaces `v` (the same length on every rank) with its sum over the ranks; bit-identical on every rank. */
  sum(v: Float32Array): void;
  /**
   * This rank has no images this step but must still take part in every
   * sum, in the same order: it runs a stand-in batch that contributes
   * nothing (count 0, zero sums); its gradient is discarded.
   */
  ghost?: boolean;
}

/**
 * The global batch's mean and biased variance per channel from every rank's
 * (count, mean, variance): each rank fills its slot of a zero vector, the
 * ranks sum it (so every rank holds every slot's exact bits), and every rank
 * combines the slots in rank order in float64 (Chan et al.'s pairwise
 * update), so they all get the same float32 result. A rank with no images
 * fills zeros. One rank gives back its own statistics exactly.
 */
export function globalMoments(sync: BatchNormSync, count: number, mean: Float32Array, variance: Float32Array): { count: number; mean: Float32Array; variance: Float32Array } {
  const c = mean.length;
  const stride = 1 + 2 * c;
  const slots = new Float32Array(stride * sync.worldSize);
  const mine = sync.rank * stride;
  slots[mine] = count;
  slots.set(mean, mine + 1);
  slots.set(variance, mine + 1 + c);
  sync.sum(slots);
  const n = new Float64Array(c);
  const m = new Float64Array(c);
  const m2 = new Float64Array(c);
  let total = 0;
  for (let r = 0; r < sync.worldSize; r++) {
    const nb = slots[r * stride];
    if (nb === 0) continue;
    total += nb;
    for (let j = 0; j < c; j++) {
      const mb = slots[r * stride + 1 + j];
      const delta = mb - m[j];
      const na = n[j];
      const nab = na + nb;
      m[j] += (delta * nb) / nab;
      m2[j] += slots[r * stride + 1 + c + j] * nb + (delta * delta * na * nb) / nab;
      n[j] = nab;
    }
  }
  return {
    count: total,
    mean: Float32Array.from(m),
    variance: Float32Array.from(m2, (v, j) => (n[j] > 0 ? v / n[j] : 0)),
  };
}

/**
 * Training-mode SyncBatchNorm: normalises with the global batch's statistics
 * (globalMoments) and, in backward, sums the two per-channel sums dx needs
 * over the ranks, so dx is the global batch's; gamma's and beta's gradients
 * stay this rank's (the exchange sums them with every other gradient).
 */
export function batchNormTrainSync(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  sink: BatchStatsSink,
  sync: BatchNormSync,
): tf.Tensor4D {
  const [n, h, w] = x.shape;
  const local = n * h * w;
  const op = tf.customGrad((xIn, gammaIn, betaIn, save) => {
    const xt = xIn as tf.Tensor4D;
    const { mean: lm, variance: lv } = tf.moments(xt, AXES);
    const c = lm.shape[0]!;
    const g = sync.ghost
      ? globalMoments(sync, 0, new Float32Array(c), new Float32Array(c))
      : globalMoments(sync, local, lm.dataSync() as Float32Array, lv.dataSync() as Float32Array);
    const count = g.count;
    const mean = tf.tensor1d(g.mean);
    const variance = tf.tensor1d(g.variance);
    const { y, xhat, invStd } = normalize(tf.sub(xt, mean), variance, gammaIn as tf.Tensor, betaIn as tf.Tensor);
    (save as tf.GradSaveFunc)([xhat, invStd, gammaIn as tf.Tensor]);
    sink(tf.keep(mean), tf.keep(variance), count);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const gy = dy as tf.Tensor;
        const [xh, inv, gm] = saved;
        const dBeta = tf.sum(gy, AXES);
        const dGamma = tf.sum(tf.mul(gy, xh), AXES);
        // The two sums over the global batch, in one blocking all-reduce.
        const sums = new Float32Array(2 * c);
        if (!sync.ghost) {
          sums.set(dBeta.dataSync() as Float32Array);
          sums.set(dGamma.dataSync() as Float32Array, c);
        }
        sync.sum(sums);
        const dx = inputGradient(gy, xh, inv, gm, count, tf.tensor1d(sums.subarray(0, c)), tf.tensor1d(sums.subarray(c)));
        return [dx, dGamma, dBeta];
      },
    };
  });
  return op(x, gamma, beta) as tf.Tensor4D;
}

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
    const { y, xhat, invStd } = normalize(centered, variance, gammaIn as tf.Tensor, betaIn as tf.Tensor);
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
        return [inputGradient(g, xh, inv, gm, count, dBeta, dGamma), dGamma, dBeta];
      },
    };
  });
  return op(x, gamma, beta) as tf.Tensor4D;
}

/** x̂ = centered / sqrt(variance + eps) and y = gamma x̂ + beta, the forward both kinds of BatchNorm share. */
function normalize(centered: tf.Tensor, variance: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor): { y: tf.Tensor; xhat: tf.Tensor; invStd: tf.Tensor } {
  const invStd = tf.rsqrt(tf.add(variance, constant(BN_EPS)));
  const xhat = tf.mul(centered, invStd);
  return { y: tf.add(tf.mul(xhat, gamma), beta), xhat, invStd };
}

/**
 * dx = gamma * invStd / M * (M * dy - sum(dy) - x̂ * sum(dy * x̂)), with M and
 * the two sums over the batch the statistics came from (this replica's, or
 * the global batch's for SyncBatchNorm).
 */
function inputGradient(dy: tf.Tensor, xhat: tf.Tensor, invStd: tf.Tensor, gamma: tf.Tensor, count: number, sumDy: tf.Tensor, sumDyXhat: tf.Tensor): tf.Tensor {
  const scale = tf.div(tf.mul(gamma, invStd), constant(count));
  const inner = tf.sub(tf.sub(tf.mul(dy, constant(count)), sumDy), tf.mul(xhat, sumDyXhat));
  return tf.mul(inner, scale);
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
