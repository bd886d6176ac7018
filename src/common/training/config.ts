// The training configuration: one object, its defaults (the seed's recipe),
// validation with messages that name the flag, and the commander options
// that expose it. The coordinator and later the workers share it.
import { Command, InvalidArgumentError, Option } from 'commander';
import type { BackendChoice } from '../backend/names.js';
import type { DatasetName } from '../data/types.js';
import { MODEL_NAMES, type ModelName, type NormKind } from '../model/spec.js';

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
  /** Distributed runs: abort (with a checkpoint) after this many consecutive steps skipped for non-finite gradients. */
  maxBadSteps: number;
  loaderThreads?: number;
  plots: boolean;
  /** Also write the epoch scalars as TensorBoard event files here (needs the native package). */
  tensorboard?: string;
}

/** The seed's recipe: ResNet50 width 64, batch 128, SGD 0.1/0.9/5e-4, cosine T_max 60, 61 epochs. */
export const DEFAULTS: TrainConfig = {
  model: 'resnet50',
  width: 64,
  norm: 'batch',
  dataset: 'synthetic',
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

const int = (min: number) => (value: string, _prev?: unknown): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}, got "${value}"`);
  return n;
};
const num = (min: number, inclusive = true) => (value: string): number => {
  const n = Number(value);
  if (!Number.isFinite(n) || (inclusive ? n < min : n <= min)) {
    throw new InvalidArgumentError(`expected a number ${inclusive ? '>=' : '>'} ${min}, got "${value}"`);
  }
  return n;
};

/** Adds every training flag to a command. */
export function addTrainOptions(cmd: Command): Command {
  const d = DEFAULTS;
  return cmd
    .addOption(new Option('--model <name>', 'network').choices([...MODEL_NAMES]).default(d.model))
    .addOption(new Option('--width <n>', 'base width (64 = the paper; 8-16 for CPU runs)').argParser(int(1)).default(d.width))
    .addOption(new Option('--norm <kind>', "normalisation layers ('none' only for equivalence tests)").choices(['batch', 'none']).default(d.norm))
    .addOption(new Option('--dataset <name>', 'training data').choices(['cifar10', 'fashion-mnist', 'synthetic']).default(d.dataset))
    .option('--data-dir <dir>', 'dataset directory (default: data/cifar10 or /usr/share/datasets/fashion-mnist)')
    .option('--no-download', 'never download CIFAR-10; fail if its files are missing')
    .addOption(new Option('--train-limit <n>', 'class-balanced subset of the training set').argParser(int(1)))
    .addOption(new Option('--test-limit <n>', 'class-balanced subset of the test set').argParser(int(1)))
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend').choices(['auto', 'tensorflow', 'wasm', 'cpu']).default(d.backend))
    .addOption(new Option('--epochs <n>', 'epochs').argParser(int(1)).default(d.epochs))
    .addOption(new Option('--batch-size <n>', 'global batch size').argParser(int(1)).default(d.batchSize))
    .addOption(new Option('--lr <x>', 'peak learning rate').argParser(num(0, false)).default(d.lr))
    .addOption(new Option('--momentum <x>', 'SGD momentum').argParser(num(0)).default(d.momentum))
    .addOption(new Option('--weight-decay <x>', 'L2 weight decay (added to the gradient, as PyTorch)').argParser(num(0)).default(d.weightDecay))
    .addOption(new Option('--t-max <n>', 'CosineAnnealingLR T_max in epochs').argParser(int(1)).default(d.tMax))
    .addOption(new Option('--warmup-epochs <n>', 'linear warmup epochs (per step)').argParser(num(0)).default(d.warmupEpochs))
    .addOption(new Option('--seed <n>', 'seed for weights, shuffling and augmentation').argParser(int(0)).default(d.seed))
    .option('--out <dir>', 'output directory: metrics.jsonl, plots, checkpoints', d.out)
    .addOption(new Option('--checkpoint-every <steps>', 'also checkpoint every N steps (0: epoch ends only)').argParser(int(0)).default(d.checkpointEvery))
    .option('--resume', 'continue from the newest valid checkpoint in --out', d.resume)
    .addOption(new Option('--max-steps <n>', 'stop after N optimizer steps in total (0: no limit)').argParser(int(0)).default(d.maxSteps))
    .addOption(new Option('--max-bad-steps <n>', 'abort after N consecutive steps skipped for NaN/Inf gradients (a checkpoint is written)').argParser(int(1)).default(d.maxBadSteps))
    .addOption(new Option('--loader-threads <n>', 'augmentation threads').argParser(int(1)))
    .option('--no-plots', 'skip curves.png and samples.png')
    .option('--tensorboard <dir>', 'also write TensorBoard event files (needs @tensorflow/tfjs-node[-gpu])');
}

/** Builds a validated TrainConfig from parsed commander options. */
export function configFromOptions(opts: Record<string, unknown>): TrainConfig {
  const cfg: TrainConfig = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS) as (keyof TrainConfig)[]) {
    if (opts[key] !== undefined) (cfg as unknown as Record<string, unknown>)[key] = opts[key];
  }
  for (const key of ['dataDir', 'trainLimit', 'testLimit', 'loaderThreads', 'tensorboard'] as const) {
    if (opts[key] !== undefined) (cfg as unknown as Record<string, unknown>)[key] = opts[key];
  }
  return cfg;
}
