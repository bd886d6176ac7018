// The dataset types and the one list of dataset names. Free of TensorFlow.js,
// so that augmentation threads and the network layer load it cheaply.

/** Every dataset the CLIs accept; the flags' choices come from here. */
export const DATASET_NAMES = ['cifar10', 'fashion-mnist', 'synthetic'] as const;
export type DatasetName = (typeof DATASET_NAMES)[number];

/** A set of images stored NHWC as bytes (0..255), with one label byte each. */
export interface ImageSet {
  images: Uint8Array; // length = count * height * width * channels
  labels: Uint8Array; // length = count, values in [0, classes.length)
  count: number;
  height: number;
  width: number;
  channels: number;
}

export interface Dataset {
  name: DatasetName;
  classes: string[];
  train: ImageSet;
  test: ImageSet;
}
