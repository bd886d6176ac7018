// The training flags of the coordinator (and of anything else that trains):
// one commander option per TrainConfig field, parsed and checked by flags.ts,
// and the TrainConfig they make.
import { Command, Option } from 'commander';
import { DEFAULTS, type TrainConfig } from '../training/config.js';
import { DEFAULT_BUCKET_CAP_MB } from '../allreduce/buckets.js';
import { backendOption, datasetOption, intFlag, modelOption, numberFlag } from './flags.js';

/** Adds every training flag to a command. */
export function addTrainOptions(cmd: Command): Command {
  const d = DEFAULTS;
  return cmd
    .addOption(modelOption(d.model))
    .addOption(new Option('--width <n>', 'base width (64 = the paper; 8-16 for CPU runs)').argParser(intFlag(1)).default(d.width))
    .addOption(new Option('--norm <kind>', "normalisation layers ('none' only for equivalence tests)").choices(['batch', 'none']).default(d.norm))
    .addOption(datasetOption('training data', d.dataset))
    .option('--data-dir <dir>', 'dataset directory (default: data/cifar10 or /usr/share/datasets/fashion-mnist)')
    .option('--no-download', 'never download CIFAR-10; fail if its files are missing')
    .addOption(new Option('--train-limit <n>', 'class-balanced subset of the training set').argParser(intFlag(1)))
    .addOption(new Option('--test-limit <n>', 'class-balanced subset of the test set').argParser(intFlag(1)))
    .addOption(backendOption(d.backend))
    .addOption(new Option('--epochs <n>', 'epochs').argParser(intFlag(1)).default(d.epochs))
    .addOption(new Option('--batch-size <n>', 'global batch size').argParser(intFlag(1)).default(d.batchSize))
    .addOption(new Option('--lr <x>', 'peak learning rate').argParser(numberFlag(0, true)).default(d.lr))
    .addOption(new Option('--momentum <x>', 'SGD momentum').argParser(numberFlag(0)).default(d.momentum))
    .addOption(new Option('--weight-decay <x>', 'L2 weight decay (added to the gradient, as PyTorch)').argParser(numberFlag(0)).default(d.weightDecay))
    .addOption(new Option('--t-max <n>', 'CosineAnnealingLR T_max in epochs').argParser(intFlag(1)).default(d.tMax))
    .addOption(new Option('--warmup-epochs <n>', 'linear warmup epochs (per step)').argParser(numberFlag(0)).default(d.warmupEpochs))
    .addOption(new Option('--seed <n>', 'seed for weights, shuffling and augmentation').argParser(intFlag(0)).default(d.seed))
    .option('--out <dir>', 'output directory: metrics.jsonl, plots, checkpoints', d.out)
    .addOption(new Option('--checkpoint-every <steps>', 'also checkpoint every N steps (0: epoch ends only)').argParser(intFlag(0)).default(d.checkpointEvery))
    .option('--resume', 'continue from the newest valid checkpoint in --out', d.resume)
    .addOption(new Option('--max-steps <n>', 'stop after N optimizer steps in total (0: no limit)').argParser(intFlag(0)).default(d.maxSteps))
    .addOption(new Option('--max-bad-steps <n>', 'abort after N consecutive steps skipped for NaN/Inf gradients (a checkpoint is written)').argParser(intFlag(1)).default(d.maxBadSteps))
    .addOption(new Option('--loader-threads <n>', 'augmentation threads').argParser(intFlag(1)))
    .option('--no-plots', 'skip curves.png and samples.png')
    .option('--tensorboard <dir>', 'also write TensorBoard event files (train/test loss and accuracy, lr, img/s per epoch) here')
    .option('--timeline <file>', 'also write a Chrome trace (Perfetto, chrome://tracing) of every step: data wait, forward, backward, each bucket\'s all-reduce, optimizer')
    .addOption(new Option('--bucket-mb <mb>', 'distributed runs: gradient bucket cap in MB (the first bucket is 1 MB), reduced during backward')
      .argParser(numberFlag(0, true)).default(DEFAULT_BUCKET_CAP_MB))
    .addOption(new Option('--overlap <mode>', 'distributed runs: on: gradient buckets all-reduced during backward by a communication thread; ' +
      'off: one all-reduce after backward; auto: on with the tensorflow backend, off on wasm/cpu, where compute and communication share the cores')
      .choices(['auto', 'on', 'off']).default('auto'))
    .addOption(new Option('--accumulate <k>', 'gradient accumulation: micro-batches per optimizer step, one all-reduce per step ' +
      '(each worker cuts its share of the global batch into k; more than its images leaves some empty, which compute nothing) (default: 1)')
      .argParser(intFlag(1)))
    .option('--sync-bn', 'distributed runs: BatchNorm normalises with the global batch\'s statistics (SyncBatchNorm: two small blocking ' +
      'all-reduces per BatchNorm layer per step), not each worker\'s own shard\'s; for small per-worker batches');
}

/** Builds a validated TrainConfig from parsed commander options. */
export function configFromOptions(opts: Record<string, unknown>): TrainConfig {
  const cfg: TrainConfig = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS) as (keyof TrainConfig)[]) {
    if (opts[key] !== undefined) (cfg as unknown as Record<string, unknown>)[key] = opts[key];
  }
  for (const key of ['dataDir', 'trainLimit', 'testLimit', 'loaderThreads', 'tensorboard', 'timeline', 'bucketMb', 'accumulate', 'syncBn'] as const) {
    if (opts[key] !== undefined) (cfg as unknown as Record<string, unknown>)[key] = opts[key];
  }
  // auto stays absent: the coordinator decides from the backend.
  if (opts.overlap === 'on' || opts.overlap === 'off') cfg.overlap = opts.overlap === 'on';
  return cfg;
}
