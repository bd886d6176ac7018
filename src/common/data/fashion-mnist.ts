// Loader for Fashion-MNIST (IDX files, as shipped by the Debian package
// dataset-fashion-mnist). The 28x28 greyscale images are zero-padded to 32x32
// so the CIFAR ResNets run on them unchanged; they keep a single channel.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Dataset, ImageSet } from './types.js';
import { DatasetError, DatasetMissingError } from './errors.js';
import { readIdxFile } from './idx.js';

export const FASHION_MNIST_CLASSES = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
];

/** Where the Debian package dataset-fashion-mnist installs the files. */
export const DEFAULT_FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

/** File names without the optional .gz suffix. */
export const FASHION_MNIST_FILES = {
  trainImages: 'train-images-idx3-ubyte',
  trainLabels: 'train-labels-idx1-ubyte',
  testImages: 't10k-images-idx3-ubyte',
  testLabels: 't10k-labels-idx1-ubyte',
} as const;

export const IDX_IMAGES_MAGIC = 2051;
export const IDX_LABELS_MAGIC = 2049;

const SOURCE_SIDE = 28;
const SIDE = 32;
const PAD = (SIDE - SOURCE_SIDE) / 2;

export async function loadFashionMnist(dataDir: string): Promise<Dataset> {
  const dir = path.resolve(dataDir);
  const files = locateFiles(dir);
  const train = await readSplit(files.trainImages, files.trainLabels);
  const test = await readSplit(files.testImages, files.testLabels);
  return { name: 'fashion-mnist', classes: [...FASHION_MNIST_CLASSES], train, test };
}

/** Finds each file as `<name>.gz` or `<name>`, or throws naming every missing one. */
function locateFiles(dir: string): Record<keyof typeof FASHION_MNIST_FILES, string> {
  const fix = `Install it with \`apt-get install dataset-fashion-mnist\` (files go to ${DEFAULT_FASHION_MNIST_DIR}) or pass --data-dir <dir> pointing at the IDX files.`;
  if (!fs.existsSync(dir)) {
    throw new DatasetMissingError(`Fashion-MNIST directory ${dir} does not exist. ${fix}`, Object.values(FASHION_MNIST_FILES), [dir]);
  }
  const found: Partial<Record<keyof typeof FASHION_MNIST_FILES, string>> = {};
  const missing: string[] = [];
  for (const [key, name] of Object.entries(FASHION_MNIST_FILES) as [keyof typeof FASHION_MNIST_FILES, string][]) {
    const candidate = [`${name}.gz`, name].map((file) => path.join(dir, file)).find((file) => fs.existsSync(file));
    if (candidate) found[key] = candidate;
    else missing.push(`${name}.gz`);
  }
  if (missing.length > 0) {
    throw new DatasetMissingError(
      `Fashion-MNIST files missing from ${dir}: ${missing.join(', ')} (plain, uncompressed files are accepted too). ${fix}`,
      missing,
      [dir],
    );
  }
  return found as Record<keyof typeof FASHION_MNIST_FILES, string>;
}

async function readSplit(imagesFile: string, labelsFile: string): Promise<ImageSet> {
  const images = await readIdxFile(imagesFile, IDX_IMAGES_MAGIC);
  const labels = await readIdxFile(labelsFile, IDX_LABELS_MAGIC);
  if (images.dims.length !== 3 || images.dims[1] !== SOURCE_SIDE || images.dims[2] !== SOURCE_SIDE) {
    throw new DatasetError(`${imagesFile} holds images of shape ${images.dims.join('x')}, expected Nx28x28.`);
  }
  if (labels.dims.length !== 1) {
    throw new DatasetError(`${labelsFile} holds labels of shape ${labels.dims.join('x')}, expected a 1-D array.`);
  }
  const count = images.dims[0];
  if (labels.dims[0] !== count) {
    throw new DatasetError(
      `${imagesFile} has ${count} images but ${labelsFile} has ${labels.dims[0]} labels; the two files do not belong together.`,
    );
  }
  const badLabel = labels.data.findIndex((label) => label >= FASHION_MNIST_CLASSES.length);
  if (badLabel >= 0) {
    throw new DatasetError(
      `${labelsFile} is corrupt: label ${badLabel} is ${labels.data[badLabel]}, but labels must be 0..${FASHION_MNIST_CLASSES.length - 1}.`,
    );
  }
  return {
    images: padImages(images.data, count),
    labels: Uint8Array.from(labels.data), // copy so the decompressed file buffer can be freed
    count,
    height: SIDE,
    width: SIDE,
    channels: 1,
  };
}

/** Centres each 28x28 image in a zero-filled 32x32 frame. */
function padImages(source: Uint8Array, count: number): Uint8Array {
  const out = new Uint8Array(count * SIDE * SIDE);
  for (let n = 0; n < count; n++) {
    for (let row = 0; row < SOURCE_SIDE; row++) {
      const src = (n * SOURCE_SIDE + row) * SOURCE_SIDE;
      const dst = (n * SIDE + row + PAD) * SIDE + PAD;
      out.set(source.subarray(src, src + SOURCE_SIDE), dst);
    }
  }
  return out;
}
