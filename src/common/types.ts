// Shared data types. Kept free of TensorFlow.js imports so that thread-pool
// workers (augmentation) and the network layer can load it cheaply.

export type BackendName = 'tensorflow' | 'wasm' | 'cpu';
export type BackendChoice = BackendName | 'auto';

export type DatasetName = 'cifar10' | 'fashion-mnist' | 'synthetic';

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
