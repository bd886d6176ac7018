// What a model trained on each dataset takes in and predicts, known without
// loading any data: predict, export and import only have a checkpoint's
// config, and must not read (or download) a dataset to name its classes.
import { DATASET_NAMES, type DatasetName } from './types.js';
import { CIFAR10_CLASSES } from './cifar10.js';
import { FASHION_MNIST_CLASSES } from './fashion-mnist.js';
import { SYNTHETIC_CLASSES } from './synthetic.js';

export { DATASET_NAMES };

export interface DatasetInfo {
  name: DatasetName;
  classes: readonly string[];
  /** The model input, HWC. */
  height: number;
  width: number;
  channels: number;
  /**
   * The part of the input that holds the picture, centred in a zero frame:
   * Fashion-MNIST's 28x28 images are padded to 32x32 by its loader, so an
   * outside image must be scaled to 28x28 and framed the same way.
   */
  content: { height: number; width: number };
}

const INFO: Record<DatasetName, DatasetInfo> = {
  cifar10: { name: 'cifar10', classes: CIFAR10_CLASSES, height: 32, width: 32, channels: 3, content: { height: 32, width: 32 } },
  'fashion-mnist': {
    name: 'fashion-mnist', classes: FASHION_MNIST_CLASSES, height: 32, width: 32, channels: 1, content: { height: 28, width: 28 },
  },
  synthetic: { name: 'synthetic', classes: SYNTHETIC_CLASSES, height: 32, width: 32, channels: 3, content: { height: 32, width: 32 } },
};

export function isDatasetName(name: unknown): name is DatasetName {
  return typeof name === 'string' && (DATASET_NAMES as readonly string[]).includes(name);
}

export function datasetInfo(name: DatasetName): DatasetInfo {
  if (!isDatasetName(name)) throw new Error(`unknown dataset "${String(name)}": use one of ${DATASET_NAMES.join(', ')}`);
  return INFO[name];
}
