// `tfjs-ddp evaluate <checkpoint>`: test accuracy, per-class accuracy and the
// confusion matrix of a checkpoint, as text and as confusion.png. Batches are
// built and scored as the trainer's evaluate() does, so on the training
// test set it reproduces the test_acc the run reported.
import path from 'node:path';
import { Command, Option } from 'commander';
import { makeBatch, NORMALIZE } from '../../common/data/augment.js';
import { describeBackend, initBackend } from '../../common/backend/backend.js';
import { UsageError } from '../../common/cli/run-main.js';
import { argmaxRows, formatConfusion, summarize, type ConfusionSummary } from '../../common/io/confusion.js';
import { datasetInfo } from '../../common/data/dataset-info.js';
import { loadDataset } from '../../common/data/load-dataset.js';
import { writeConfusionPng } from '../../common/io/plot/confusion.js';
import { Replica, scoreLogits } from '../../common/model/replica.js';
import { globalBatches } from '../../common/data/sampler.js';
import { loadTrainedModel } from '../../common/training/trained-model.js';
import type { BackendChoice } from '../../common/backend/names.js';
import type { DatasetName } from '../../common/data/types.js';
import { backendOption, datasetOption, intFlag } from '../../common/cli/flags.js';

export interface EvaluateOptions {
  dataset?: DatasetName;
  dataDir?: string;
  testLimit?: number;
  backend: BackendChoice;
  /** Where confusion.png goes; default: beside the checkpoint. */
  out?: string;
  batchSize: number;
  download?: boolean;
}

export interface EvaluateResult extends ConfusionSummary {
  accuracy: number;
  loss: number;
  classes: readonly string[];
  png: string;
}

export async function runEvaluate(checkpoint: string, opts: EvaluateOptions, log: (line: string) => void = console.log): Promise<EvaluateResult> {
  const model = await loadTrainedModel(checkpoint, (m) => process.stderr.write(`warning: ${m}\n`));
  const cfg = model.config;
  const dataset = opts.dataset ?? cfg.dataset;
  const info = datasetInfo(dataset);
  if (info.channels !== model.spec.config.inChannels || info.classes.length !== model.spec.config.numClasses) {
    throw new UsageError(
      `the checkpoint was trained on ${cfg.dataset} (${model.spec.config.inChannels}-channel images) and cannot classify ${dataset}; drop --dataset or pass a matching one`,
    );
  }
  const sameData = dataset === cfg.dataset;
  await initBackend(opts.backend);
  const data = await loadDataset({
    name: dataset,
    dataDir: opts.dataDir ?? (sameData ? cfg.dataDir : undefined),
    // Synthetic data is generated, so generating no more training images than needed saves
    // seconds; the test set depends only on the seed. Files are read whole anyway.
    trainLimit: dataset === 'synthetic' ? 1 : undefined,
    // The run's own test subset by default, so the accuracy matches its metrics.
    testLimit: opts.testLimit ?? (sameData ? cfg.testLimit : undefined),
    seed: cfg.seed,
    download: opts.download ?? cfg.download,
  });

  const set = data.test;
  const numClasses = model.spec.config.numClasses;
  const replica = new Replica(model.spec, model.weights, [set.height, set.width, set.channels]);
  const predictions = new Int32Array(set.count);
  const labels = new Int32Array(set.count);
  let lossSum = 0;
  try {
    let done = 0;
    for (const indices of globalBatches(set.count, opts.batchSize, 0, 0, { shuffle: false })) {
      const { x, y } = makeBatch(set, indices, { augment: false, seed: 0, epoch: 0, ...NORMALIZE });
      const logits = replica.logits({ x, y, count: indices.length }, 'eval', model.runningStats);
      lossSum += scoreLogits(logits, { y, count: indices.length }, numClasses).lossSum;
      predictions.set(argmaxRows(logits, numClasses), done);
      labels.set(y, done);
      done += indices.length;
    }
  } finally {
    replica.dispose();
  }
  const summary = summarize(labels, predictions, numClasses);
  const accuracy = summary.correct / summary.total;
  const loss = lossSum / summary.total;

  log(`${model.file}: ${cfg.model} width ${cfg.width}, step ${model.step}`);
  log(`${dataset} test set: ${set.count} images, backend ${describeBackend()}`);
  log(`accuracy ${accuracy.toFixed(4)} (${summary.correct}/${summary.total}), loss ${loss.toFixed(4)}`);
  log(formatConfusion(summary, info.classes));
  const png = path.join(opts.out ?? path.dirname(model.file), 'confusion.png');
  await writeConfusionPng(png, summary.matrix, info.classes, `${cfg.model} on ${dataset}: accuracy ${accuracy.toFixed(4)}`);
  log(`wrote ${png}`);
  return { ...summary, accuracy, loss, classes: info.classes, png };
}

export function registerEvaluate(program: Command): void {
  program
    .command('evaluate')
    .description('accuracy, per-class accuracy and confusion matrix on a test set; writes confusion.png')
    .argument('<checkpoint>', 'checkpoint file, or a run directory (its newest valid checkpoint)')
    .addOption(datasetOption("test data (default: the checkpoint's dataset)"))
    .option('--data-dir <dir>', "dataset directory (default: the checkpoint's, else the dataset's default)")
    .option('--no-download', 'never download CIFAR-10; fail if its files are missing')
    .addOption(new Option('--test-limit <n>', "class-balanced subset of the test set (default: the checkpoint's)").argParser(intFlag(1)))
    .addOption(backendOption())
    .addOption(new Option('--batch-size <n>', 'images per forward pass').argParser(intFlag(1)).default(128))
    .option('--out <dir>', 'directory for confusion.png (default: the checkpoint\'s directory)')
    .action(async (checkpoint: string, opts: EvaluateOptions) => {
      await runEvaluate(checkpoint, opts);
    });
}
