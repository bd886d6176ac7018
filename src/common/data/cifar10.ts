// Reader for the CIFAR-10 "binary version" files. Each record is one label
// byte followed by 3072 pixel bytes stored as three 32x32 planes (R, G, B),
// which we transpose into the NHWC layout every other module expects.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Dataset, ImageSet } from './types.js';
import { DatasetError, DatasetMissingError } from './errors.js';

export const CIFAR10_CLASSES = [
  'airplane',
  'automobile',
  'bird',
  'cat',
  'deer',
  'dog',
  'frog',
  'horse',
  'ship',
  'truck',
];

/** Where `--dataset cifar10` looks when no --data-dir is given (relative to the cwd). */
export const DEFAULT_CIFAR10_DIR = 'data/cifar10';

/** The folder the official tarball extracts to; accepted inside the data dir. */
export const CIFAR10_TARBALL_FOLDER = 'cifar-10-batches-bin';

export const CIFAR10_TRAIN_FILES = [
  'data_batch_1.bin',
  'data_batch_2.bin',
  'data_batch_3.bin',
  'data_batch_4.bin',
  'data_batch_5.bin',
];
export const CIFAR10_TEST_FILE = 'test_batch.bin';
export const CIFAR10_ALL_FILES = [...CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE];

const SIDE = 32;
const CHANNELS = 3;
const PLANE_BYTES = SIDE * SIDE; // 1024
const IMAGE_BYTES = PLANE_BYTES * CHANNELS; // 3072
/** One label byte plus one CHW image. */
export const CIFAR10_RECORD_BYTES = 1 + IMAGE_BYTES; // 3073
/** Records per file in the official release (test fixtures may use fewer). */
export const CIFAR10_RECORDS_PER_FILE = 10000;

/** The directories searched for the batch files, in order of preference. */
export function cifar10SearchDirs(dataDir: string): string[] {
  const root = path.resolve(dataDir);
  return [root, path.join(root, CIFAR10_TARBALL_FOLDER)];
}

/**
 * Returns the directory holding all six batch files, or throws
 * DatasetMissingError listing what is missing where.
 */
export function findCifar10Dir(dataDir: string): string {
  const dirs = cifar10SearchDirs(dataDir);
  const missingByDir = dirs.map((dir) =>
    CIFAR10_ALL_FILES.filter((file) => !isFile(path.join(dir, file))),
  );
  const complete = missingByDir.findIndex((missing) => missing.length === 0);
  if (complete >= 0) return dirs[complete];

  // Report against the directory that came closest, so a half-extracted
  // folder gets a precise list rather than "everything is missing".
  let best = 0;
  for (let i = 1; i < dirs.length; i++) {
    if (missingByDir[i].length < missingByDir[best].length) best = i;
  }
  const missing = missingByDir[best];
  const where =
    missing.length === CIFAR10_ALL_FILES.length
      ? `none of them were found in ${dirs.join(' or ')}`
      : `missing from ${dirs[best]}: ${missing.join(', ')}`;
  throw new DatasetMissingError(
    `CIFAR-10 binary files not found. Expected ${CIFAR10_ALL_FILES.join(', ')}; ${where}.`,
    missing,
    dirs,
  );
}

/** Loads the six batch files from `dataDir` (or its cifar-10-batches-bin folder). */
export async function loadCifar10(dataDir: string): Promise<Dataset> {
  const dir = findCifar10Dir(dataDir);
  const train = await readCifar10Batches(CIFAR10_TRAIN_FILES.map((file) => path.join(dir, file)));
  const test = await readCifar10Batches([path.join(dir, CIFAR10_TEST_FILE)]);
  return { name: 'cifar10', classes: [...CIFAR10_CLASSES], train, test };
}

/** Reads and concatenates CIFAR-10 batch files into one NHWC image set. */
export async function readCifar10Batches(files: string[]): Promise<ImageSet> {
  // Size everything first so a truncated last file fails before we spend
  // seconds decoding the others, and so the output is allocated once.
  const counts = files.map(recordCountOf);
  const total = counts.reduce((a, b) => a + b, 0);
  const images = new Uint8Array(total * IMAGE_BYTES);
  const labels = new Uint8Array(total);
  let offset = 0;
  for (let i = 0; i < files.length; i++) {
    const bytes = await fs.promises.readFile(files[i]);
    if (bytes.length !== counts[i] * CIFAR10_RECORD_BYTES) {
      throw new DatasetError(`CIFAR-10 file ${files[i]} changed size while it was being read.`);
    }
    decodeRecords(bytes, files[i], images, labels, offset);
    offset += counts[i];
  }
  return { images, labels, count: total, height: SIDE, width: SIDE, channels: CHANNELS };
}

function recordCountOf(file: string): number {
  const size = fs.statSync(file).size;
  const expected =
    `expected a whole number of ${CIFAR10_RECORD_BYTES}-byte records ` +
    `(1 label byte + 3072 pixel bytes; ${CIFAR10_RECORDS_PER_FILE} records = ` +
    `${CIFAR10_RECORDS_PER_FILE * CIFAR10_RECORD_BYTES} bytes in the official release)`;
  if (size === 0) {
    throw new DatasetError(`CIFAR-10 file ${file} is empty (0 bytes); ${expected}. Re-download or re-extract it.`);
  }
  if (size % CIFAR10_RECORD_BYTES !== 0) {
    throw new DatasetError(
      `CIFAR-10 file ${file} is truncated or corrupt: ${size} bytes is not a multiple of ` +
        `${CIFAR10_RECORD_BYTES}; ${expected}. Re-download or re-extract it.`,
    );
  }
  return size / CIFAR10_RECORD_BYTES;
}

/** Transposes CHW records into NHWC and copies the labels, validating each label. */
function decodeRecords(
  bytes: Uint8Array,
  file: string,
  images: Uint8Array,
  labels: Uint8Array,
  firstIndex: number,
): void {
  const count = bytes.length / CIFAR10_RECORD_BYTES;
  for (let r = 0; r < count; r++) {
    const src = r * CIFAR10_RECORD_BYTES;
    const label = bytes[src];
    if (label >= CIFAR10_CLASSES.length) {
      throw new DatasetError(
        `CIFAR-10 file ${file} is corrupt: record ${r} (byte offset ${src}) has label ${label}, ` +
          `but labels must be 0..${CIFAR10_CLASSES.length - 1}. Re-download or re-extract it.`,
      );
    }
    labels[firstIndex + r] = label;
    const red = src + 1;
    const green = red + PLANE_BYTES;
    const blue = green + PLANE_BYTES;
    let dst = (firstIndex + r) * IMAGE_BYTES;
    for (let p = 0; p < PLANE_BYTES; p++) {
      images[dst] = bytes[red + p];
      images[dst + 1] = bytes[green + p];
      images[dst + 2] = bytes[blue + p];
      dst += 3;
    }
  }
}

function isFile(file: string): boolean {
  try {
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}
