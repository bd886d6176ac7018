// The one entry point the CLIs use: resolve the dataset's directory, fetch or
// generate it, then apply --train-limit / --test-limit as balanced subsets.

import * as path from 'node:path';
import type { Dataset, DatasetName, ImageSet } from './types.js';
import { DEFAULT_CIFAR10_DIR, loadCifar10 } from './cifar10.js';
import { type Cifar10SourceOptions, ensureCifar10 } from './cifar10-download.js';
import { DEFAULT_FASHION_MNIST_DIR, loadFashionMnist } from './fashion-mnist.js';
import { seedFor } from './rng.js';
import { balancedSubset } from './subset.js';
import { generateSynthetic } from './synthetic.js';

export interface LoadDatasetOptions {
  name: DatasetName;
  /** Defaults to defaultDataDir(name); ignored for the synthetic dataset. */
  dataDir?: string;
  trainLimit?: number;
  testLimit?: number;
  /** Chooses subset members and generates the synthetic data. */
  seed: number;
  /** Allow fetching CIFAR-10 from the internet when its files are missing (default true). */
  download?: boolean;
  log?: (line: string) => void;
  /** Where CIFAR-10 is downloaded from; tests point this at a local server. */
  cifar10Source?: Cifar10SourceOptions;
}

/** The data directory each dataset uses when --data-dir is not given (undefined: needs none). */
export function defaultDataDir(name: DatasetName): string | undefined {
  switch (name) {
    case 'cifar10':
      return DEFAULT_CIFAR10_DIR;
    case 'fashion-mnist':
      return DEFAULT_FASHION_MNIST_DIR;
    case 'synthetic':
      return undefined;
  }
}

export async function loadDataset(options: LoadDatasetOptions): Promise<Dataset> {
  const log = options.log ?? (() => {});
  const started = Date.now();
  let dataset: Dataset;
  let source: string;
  switch (options.name) {
    case 'cifar10': {
      const dataDir = path.resolve(options.dataDir ?? DEFAULT_CIFAR10_DIR);
      source = await ensureCifar10({ dataDir, download: options.download ?? true, log, ...options.cifar10Source });
      dataset = await loadCifar10(dataDir);
      break;
    }
    case 'fashion-mnist': {
      source = path.resolve(options.dataDir ?? DEFAULT_FASHION_MNIST_DIR);
      dataset = await loadFashionMnist(source);
      break;
    }
    case 'synthetic': {
      // Generating only what the limits ask for is cheaper than generating the
      // default sizes and subsetting; the generator is already balanced.
      validateLimit(options.trainLimit, 'train');
      validateLimit(options.testLimit, 'test');
      source = `generated from seed ${options.seed}`;
      dataset = generateSynthetic({ seed: options.seed, trainCount: options.trainLimit, testCount: options.testLimit });
      break;
    }
    default:
      throw new Error(`Unknown dataset "${String(options.name)}"; expected cifar10, fashion-mnist or synthetic.`);
  }

  if (options.name !== 'synthetic') {
    dataset = {
      ...dataset,
      train: limit(dataset.train, options.trainLimit, dataset.classes.length, seedFor(options.seed, 'train-subset'), '--train-limit'),
      test: limit(dataset.test, options.testLimit, dataset.classes.length, seedFor(options.seed, 'test-subset'), '--test-limit'),
    };
  }
  log(
    `dataset ${dataset.name}: ${dataset.train.count} train / ${dataset.test.count} test images, ` +
      `${dataset.train.height}x${dataset.train.width}x${dataset.train.channels}, ${source}, ` +
      `loaded in ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );
  return dataset;
}

function limit(set: ImageSet, count: number | undefined, classCount: number, seed: number, limitName: string): ImageSet {
  return count === undefined ? set : balancedSubset(set, count, classCount, seed, limitName);
}

function validateLimit(count: number | undefined, split: string): void {
  if (count !== undefined && (!Number.isInteger(count) || count < 1)) {
    throw new RangeError(`--${split}-limit must be a whole number of at least 1, got ${count}.`);
  }
}
