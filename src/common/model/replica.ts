// One model replica on the current TensorFlow.js backend. It owns the device
// copy of the weights and turns a batch into a flat gradient vector; everything
// that must be identical across replicas (optimizer, schedule, running
// statistics) happens on the host over flat Float32Arrays, outside this class.
import * as tf from '@tensorflow/tfjs-core';
import { forward, reluGradientFor, type ForwardMode, type ParamTensors, type ReluGradient } from './forward.js';
import type { BatchNormSync } from './batchnorm.js';
import { constant } from './constants.js';
import { readGradients, readTensorInto, transferModeFor, uploadParams, type TransferMode } from './device-transfer.js';
import type { ModelSpec } from './spec.js';

export interface Batch {
  /** NHWC, normalised. */
  x: Float32Array;
  y: Int32Array;
  count: number;
}

export interface BatchResult {
  /** Sum over the batch of the per-sample cross-entropy (not normalised). */
  lossSum: number;
  correct: number;
  count: number;
}

export interface GradientResult extends BatchResult {
  /**
   * Batch statistics in the running-statistics layout: per BatchNorm, the mean
   * then the *unbiased* variance (what PyTorch feeds its running average).
   * Null when the model has no BatchNorm or the replica had no samples.
   */
  batchStats: Float32Array | null;
  /** Milliseconds in forward and backward alone, before any value is read back (benchmarks separate the host's share). */
  backwardMs: number;
  /** Milliseconds of that in the forward pass (the rest is backward). */
  forwardMs: number;
}

interface LayerStats { mean: tf.Tensor1D; variance: tf.Tensor1D; count: number }

/**
 * Where a replica's work differs per backend, for what each costs there:
 * how parameters cross (device-transfer.ts) and how the ReLU's gradient is
 * taken (forward.ts). The arithmetic is the same bits either way.
 */
export interface DevicePath {
  transfer: TransferMode;
  reluGradient: ReluGradient;
}

export function devicePathFor(backend: string): DevicePath {
  return { transfer: transferModeFor(backend), reluGradient: reluGradientFor(backend) };
}

export class Replica {
  private params: tf.Tensor[] = [];
  /**
   * SyncBatchNorm (--sync-bn): training-mode BatchNorm uses the global
   * batch's statistics through this link to the other ranks; null: this
   * replica's own (the default, as PyTorch DDP).
   */
  batchNormSync: BatchNormSync | null = null;
  /** The active backend's way by default; test/tfjs-node-conformance forces tfjs-node's on a CPU. */
  readonly path: DevicePath;

  constructor(
    readonly spec: ModelSpec,
    weights: Float32Array,
    private readonly imageShape: [number, number, number] = [32, 32, spec.config.inChannels],
    path?: DevicePath,
  ) {
    this.path = path ?? devicePathFor(tf.getBackend());
    this.setWeights(weights);
  }

  /** Replaces the device weights with a copy of the flat vector. */
  setWeights(weights: Float32Array): void {
    if (weights.length !== this.spec.paramCount) {
      throw new Error(`weights have ${weights.length} values, the model needs ${this.spec.paramCount}`);
    }
    const fresh = uploadParams(this.spec, weights, this.path.transfer);
    tf.dispose(this.params);
    this.params = fresh;
  }

  /** Reads the device weights back into one flat vector. */
  getWeights(): Float32Array {
    const flat = new Float32Array(this.spec.paramCount);
    this.spec.params.forEach((p, i) => flat.set(this.params[i].dataSync() as Float32Array, p.offset));
    return flat;
  }

  /**
   * Gradient of `lossScale * sum(cross-entropy)` over the batch, written into
   * `gradOut`. With lossScale = 1 / globalBatch, the sum of the replicas'
   * gradients is the gradient of the mean loss over the global batch.
   *
   * With `onGradient`, each parameter's gradient is written into `gradOut`
   * the moment backward produces it, and `onGradient(p)` is called then,
   * from inside backward (see GradientTaps); a bucketed exchange starts
   * reducing while backward goes on.
   *
   * With `accumulate`, the gradient is added to what `gradOut` holds (float32
   * additions, by the read or the taps alike) instead of replacing it: the
   * micro-batches of gradient accumulation (--accumulate). An empty batch
   * then adds nothing.
   */
  computeGradients(
    batch: Batch, lossScale: number, gradOut: Float32Array, onGradient?: (param: number) => void, accumulate = false,
  ): GradientResult {
    if (gradOut.length !== this.spec.paramCount) throw new Error('gradient buffer has the wrong length');
    // With SyncBatchNorm an empty shard still takes part in every layer's sums, in order: a stand-in image that counts for nothing.
    const ghost = batch.count === 0 && this.batchNormSync !== null && this.spec.batchNorms.length > 0;
    if (batch.count === 0 && !ghost) {
      if (!accumulate) gradOut.fill(0);
      if (onGradient) this.spec.params.forEach((_, i) => onGradient(i));
      return { lossSum: 0, correct: 0, count: 0, batchStats: null, backwardMs: 0, forwardMs: 0 };
    }
    if (ghost) batch = this.standIn();
    const sync = ghost ? { ...this.batchNormSync!, ghost: true } : this.batchNormSync;
    const stats = new Map<string, LayerStats>();
    const kept: tf.Tensor[] = [];
    const x = this.input(batch);
    const labels = tf.tidy(() => tf.oneHot(tf.tensor1d(batch.y, 'int32'), this.spec.config.numClasses));
    try {
      const start = performance.now();
      let forwardEnd = start;
      const { value, grads } = tf.valueAndGrads((...ps: tf.Tensor[]) => {
        const named = onGradient ? new GradientTaps(this.spec, ps, gradOut, onGradient, accumulate, ghost) : this.named(ps);
        const logits = forward(this.spec, named, x, {
          kind: 'train',
          onBatchStats: (name, mean, variance, count) => {
            stats.set(name, { mean, variance, count });
            kept.push(mean, variance);
          },
          sync,
        }, this.path.reluGradient);
        kept.push(tf.keep(logits));
        const loss = tf.mul(tf.neg(tf.sum(tf.mul(labels, tf.logSoftmax(logits)))), constant(lossScale)) as tf.Scalar;
        forwardEnd = performance.now();
        return loss;
      })(this.params);
      const backwardMs = performance.now() - start;
      // A stand-in's gradient is nothing: zeros, or nothing added.
      if (ghost && !onGradient && !accumulate) gradOut.fill(0);
      else if (!onGradient && !ghost) readGradients(this.spec, grads, gradOut, this.path.transfer, accumulate);
      tf.dispose([value, ...grads]);
      const logits = kept[kept.length - 1] as tf.Tensor2D;
      // Synced statistics are the global batch's, the same on every rank, a stand-in's included (none if no rank had images).
      const batchStats = [...stats.values()].some((s) => s.count === 0) ? null : this.readBatchStats(stats);
      if (ghost) return { lossSum: 0, correct: 0, count: 0, batchStats, backwardMs, forwardMs: forwardEnd - start };
      return { ...scoreLogits(logits.dataSync() as Float32Array, batch, this.spec.config.numClasses), batchStats, backwardMs, forwardMs: forwardEnd - start };
    } finally {
      tf.dispose([x, labels, ...kept]);
    }
  }

  /** One zero image: what a rank without images runs so that SyncBatchNorm's sums go on in step. */
  private standIn(): Batch {
    const [h, w, c] = this.imageShape;
    return { x: new Float32Array(h * w * c), y: new Int32Array(1), count: 1 };
  }

  /** Eval-mode loss sum and correct count, normalising with the given running statistics. */
  evaluate(batch: Batch, runningStats: Float32Array): BatchResult {
    if (batch.count === 0) return { lossSum: 0, correct: 0, count: 0 };
    return scoreLogits(this.logits(batch, 'eval', runningStats), batch, this.spec.config.numClasses);
  }

  /** Logits without gradients: eval mode uses `runningStats`, train mode the batch's own. */
  logits(batch: Batch, mode: 'train' | 'eval', runningStats?: Float32Array): Float32Array {
    const kept: tf.Tensor[] = [];
    try {
      return tf.tidy(() => {
        const forwardMode: ForwardMode =
          mode === 'train'
            ? { kind: 'train', onBatchStats: (_name, mean, variance) => kept.push(mean, variance) }
            : { kind: 'eval', runningStats: this.runningStatTensors(runningStats) };
        return forward(this.spec, this.named(this.params), this.input(batch), forwardMode, this.path.reluGradient).dataSync() as Float32Array;
      });
    } finally {
      tf.dispose(kept);
    }
  }

  dispose(): void {
    tf.dispose(this.params);
    this.params = [];
  }

  private named(tensors: tf.Tensor[]): ParamTensors {
    return new Map(this.spec.params.map((p, i) => [p.name, tensors[i]]));
  }

  /** Must be called inside a tidy: the tensors are not tracked otherwise. */
  private runningStatTensors(runningStats: Float32Array | undefined): Map<string, { mean: tf.Tensor1D; variance: tf.Tensor1D }> {
    if (this.spec.batchNorms.length > 0 && runningStats?.length !== this.spec.runningStatsSize) {
      throw new Error(`running statistics must have ${this.spec.runningStatsSize} values`);
    }
    return new Map(
      this.spec.batchNorms.map((bn) => [
        bn.name,
        {
          mean: tf.tensor1d(runningStats!.slice(bn.offset, bn.offset + bn.channels)),
          variance: tf.tensor1d(runningStats!.slice(bn.offset + bn.channels, bn.offset + 2 * bn.channels)),
        },
      ]),
    );
  }

  private input(batch: Batch): tf.Tensor4D {
    const [h, w, c] = this.imageShape;
    if (batch.x.length !== batch.count * h * w * c || batch.y.length !== batch.count) {
      throw new Error(
        `batch of ${batch.count} does not match its arrays (x ${batch.x.length}, y ${batch.y.length}) for ${h}x${w}x${c} images`,
      );
    }
    return tf.tensor4d(batch.x, [batch.count, h, w, c]);
  }

  private readBatchStats(stats: Map<string, LayerStats>): Float32Array | null {
    if (this.spec.batchNorms.length === 0) return null;
    const layers = this.spec.batchNorms.map((bn) => {
      const s = stats.get(bn.name);
      if (!s) throw new Error(`internal: no batch statistics from ${bn.name}`);
      return { bn, s };
    });
    // One read for every layer's mean and variance, already in the running-statistics layout.
    const flat = tf.concat(layers.flatMap(({ s }) => [s.mean, s.variance]));
    let out: Float32Array;
    try {
      out = (flat.dataSync() as Float32Array).slice();
    } finally {
      flat.dispose();
    }
    for (const { bn, s } of layers) {
      const unbias = s.count > 1 ? s.count / (s.count - 1) : 1;
      for (let c = bn.offset + bn.channels; c < bn.offset + 2 * bn.channels; c++) out[c] = out[c] * unbias;
    }
    return out;
  }
}

/**
 * The parameters as the forward pass reads them, each behind an identity
 * whose gradient function sees that parameter's complete gradient. tfjs-core
 * runs backward as one synchronous pass over the tape in reverse recording
 * order (tfjs-core/src/tape.ts), and a node's gradient is complete when it
 * is visited: every op that used its output was recorded after it. So the
 * identity is recorded lazily, where the forward pass first reads the
 * parameter (a Map whose get wraps on first use), not up front: recorded
 * before the whole network, every tap would run only at the very end.
 */
class GradientTaps extends Map<string, tf.Tensor> {
  private readonly index = new Map<string, number>();

  constructor(
    private readonly spec: ModelSpec,
    private readonly raw: tf.Tensor[],
    private readonly gradOut: Float32Array,
    private readonly onGradient: (param: number) => void,
    /** Add into gradOut (gradient accumulation's last micro-batch) instead of writing. */
    private readonly accumulate: boolean,
    /** A stand-in batch (SyncBatchNorm on an empty shard): its gradient counts as zero. */
    private readonly ghost = false,
  ) {
    super();
    spec.params.forEach((p, i) => this.index.set(p.name, i));
  }

  override get(name: string): tf.Tensor | undefined {
    const tapped = super.get(name);
    if (tapped !== undefined) return tapped;
    const i = this.index.get(name);
    if (i === undefined) return undefined;
    const { offset } = this.spec.params[i];
    const tap = tf.customGrad<tf.Tensor>((x) => ({
      value: tf.clone(x as tf.Tensor),
      gradFunc: (dy: tf.Tensor) => {
        if (!this.ghost) readTensorInto(dy, this.gradOut, offset, this.accumulate);
        else if (!this.accumulate) this.gradOut.fill(0, offset, offset + this.spec.params[i].size);
        this.onGradient(i);
        return dy;
      },
    })) as (x: tf.Tensor) => tf.Tensor;
    const t = tap(this.raw[i]);
    super.set(name, t);
    return t;
  }
}

/** Cross-entropy sum and top-1 hits, in float64 on the host. */
export function scoreLogits(logits: Float32Array, batch: { y: Int32Array; count: number }, numClasses: number): BatchResult {
  let lossSum = 0;
  let correct = 0;
  for (let i = 0; i < batch.count; i++) {
    const row = logits.subarray(i * numClasses, (i + 1) * numClasses);
    let max = -Infinity;
    let arg = 0;
    for (let j = 0; j < numClasses; j++) {
      if (row[j] > max) {
        max = row[j];
        arg = j;
      }
    }
    let sumExp = 0;
    for (let j = 0; j < numClasses; j++) sumExp += Math.exp(row[j] - max);
    lossSum += Math.log(sumExp) + max - row[batch.y[i]];
    if (arg === batch.y[i]) correct++;
  }
  return { lossSum, correct, count: batch.count };
}
