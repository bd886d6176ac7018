// The training configuration: one object and its defaults (the seed's
// recipe). The coordinator and the workers share it; the flags that set it
// are in common/cli/train-options.ts.
import type { BackendChoice } from '../backend/names.js';
import type { DatasetName } from '../data/types.js';
import type { ModelName, NormKind } from '../model/spec.js';

export interface TrainConfig {
  model: ModelName;
  width: number;
  norm: NormKind;
  dataset: DatasetName;
  dataDir?: string;
  trainLimit?: number;
  testLimit?: number;
  download: boolean;
  backend: BackendChoice;
  epochs: number;
  batchSize: number;
  lr: number;
  momentum: number;
  weightDecay: number;
  tMax: number;
  warmupEpochs: number;
  seed: number;
  out: string;
  /** Mid-epoch checkpoint interval in optimizer steps (0: only at epoch ends). */
  checkpointEvery: number;
  resume: boolean;
  /** Stop after this many optimizer steps in total (tests and benchmarks); 0 = run all epochs. */
  maxSteps: number;
  /** Abort (with a checkpoint) after this many consecutive steps skipped for non-finite gradients, in every kind of run. */
  maxBadSteps: number;
  loaderThreads?: number;
  plots: boolean;
  /** Also write the epoch scalars as TensorBoard event files here. */
  tensorboard?: string;
  /** Also write a Chrome trace of every step here (io/timeline.ts): each rank's compute and communication spans. */
  timeline?: string;
  /**
   * Distributed runs: the gradient buckets' cap in MB (the first bucket is
   * 1 MB, as PyTorch's); absent: 25. Every rank cuts the same buckets.
   */
  bucketMb?: number;
  /**
   * Distributed runs: true reduces gradient buckets during backward in a
   * communication thread (allreduce/comm-thread.ts); false, the whole
   * gradient once after backward, in the worker's own thread. Absent (auto):
   * the coordinator picks true for the tensorflow backend and false for
   * wasm/cpu, and sends its choice to every worker in the config.
   */
  overlap?: boolean;
  /**
   * Gradient accumulation: micro-batches per optimizer step, absent: 1. Each
   * rank cuts its part of the global batch into this many (step.ts), sums
   * their gradients and then makes the step's one exchange, so a small GPU
   * trains the same global batch. BatchNorm normalises each micro-batch with
   * its own statistics and updates the running ones once per micro-batch.
   */
  accumulate?: number;
  /**
   * SyncBatchNorm (torch.nn.SyncBatchNorm): in training, every BatchNorm
   * normalises with the whole global batch's statistics, summed over the
   * ranks inside forward and backward (model/batchnorm.ts); absent or false,
   * each replica uses its own shard's, as PyTorch DDP does by default.
   */
  syncBn?: boolean;
}

/** The seed's recipe: ResNet50 width 64, batch 128, SGD 0.1/0.9/5e-4, cosine T_max 60, 61 epochs. */
export const DEFAULTS: TrainConfig = {
  model: 'resnet50',
  width: 64,
  norm: 'batch',
  dataset: 'cifar10',
  download: true,
  backend: 'auto',
  epochs: 61,
  batchSize: 128,
  lr: 0.1,
  momentum: 0.9,
  weightDecay: 5e-4,
  tMax: 60,
  warmupEpochs: 0,
  seed: 0,
  out: 'runs/latest',
  checkpointEvery: 0,
  resume: false,
  maxSteps: 0,
  maxBadSteps: 5,
  plots: true,
};
