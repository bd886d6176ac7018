// A dataset as one content-addressed blob, so the coordinator can ship it to
// remote workers (which then need no dataset on their own disk) and a worker
// can keep it in a cache keyed by its SHA-256 and skip the transfer next time.
//
// Blob layout: "TFDDPDS1", uint32 LE header length, the header as JSON
// ({name, classes, height, width, channels, trainCount, testCount}), then the
// train images, train labels, test images and test labels as raw bytes. The
// hash covers all of it, so equal datasets hash equally on every machine.

import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { readFile, unlink } from 'node:fs/promises';
import { writeFileAtomic } from '../fs/atomic-file.js';
import type { Dataset, DatasetName, ImageSet } from './types.js';

const MAGIC = Buffer.from('TFDDPDS1', 'ascii');
export const CACHE_ENV = 'TFJS_DDP_CACHE';

interface BlobHeader {
  name: DatasetName;
  classes: string[];
  height: number;
  width: number;
  channels: number;
  trainCount: number;
  testCount: number;
}

/** The dataset as one blob (see the file comment) and its hex SHA-256. */
export function encodeDataset(ds: Dataset): { bytes: Uint8Array; hash: string } {
  const header: BlobHeader = {
    name: ds.name, classes: ds.classes, height: ds.train.height, width: ds.train.width, channels: ds.train.channels,
    trainCount: ds.train.count, testCount: ds.test.count,
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32LE(json.length);
  const bytes = Buffer.concat([MAGIC, length, json, ds.train.images, ds.train.labels, ds.test.images, ds.test.labels]);
  return { bytes, hash: sha256(bytes) };
}

/** Parses a blob, checking its hash and every size; throws naming what is wrong. */
export function decodeDataset(bytes: Uint8Array, expectedHash: string): Dataset {
  const actual = sha256(bytes);
  if (actual !== expectedHash) throw new Error(`dataset blob hash ${actual.slice(0, 12)} does not match the announced ${expectedHash.slice(0, 12)}`);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < 12 || !buf.subarray(0, 8).equals(MAGIC)) throw new Error('not a tfjs-ddp dataset blob (bad magic)');
  const headerEnd = 12 + buf.readUInt32LE(8);
  if (headerEnd > buf.length) throw new Error('dataset blob is truncated inside its header');
  const h = JSON.parse(buf.subarray(12, headerEnd).toString('utf8')) as BlobHeader;
  const pixels = h.height * h.width * h.channels;
  const sizes = [h.trainCount * pixels, h.trainCount, h.testCount * pixels, h.testCount];
  if (headerEnd + sizes.reduce((a, b) => a + b) !== buf.length) throw new Error('dataset blob size does not match its header');
  let at = headerEnd;
  // Copies, so the sets own aligned buffers that can be transferred to threads.
  const [trainImages, trainLabels, testImages, testLabels] = sizes.map((n) => {
    const part = new Uint8Array(buf.subarray(at, at + n));
    at += n;
    return part;
  });
  const set = (images: Uint8Array, labels: Uint8Array, count: number): ImageSet => ({
    images, labels, count, height: h.height, width: h.width, channels: h.channels,
  });
  return { name: h.name, classes: h.classes, train: set(trainImages, trainLabels, h.trainCount), test: set(testImages, testLabels, h.testCount) };
}

/** $TFJS_DDP_CACHE, else ~/.cache/tfjs-ddp. */
export function defaultCacheDir(): string {
  return process.env[CACHE_ENV] || path.join(os.homedir(), '.cache', 'tfjs-ddp');
}

function cacheFile(dir: string, hash: string): string {
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new Error(`dataset hash must be 64 hex digits, got ${JSON.stringify(hash.slice(0, 80))}`);
  return path.join(dir, 'datasets', `${hash}.bin`);
}

/** The cached dataset with this hash, or null. A damaged cache file is deleted and reported through `warn`. */
export async function loadCachedDataset(dir: string, hash: string, warn: (line: string) => void): Promise<Dataset | null> {
  const file = cacheFile(dir, hash);
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch {
    return null;
  }
  try {
    return decodeDataset(bytes, hash);
  } catch (err) {
    warn(`ignoring damaged dataset cache ${file} (${(err as Error).message}); fetching it again`);
    await unlink(file).catch(() => undefined);
    return null;
  }
}

/** Stores a blob under its hash, atomically. */
export async function storeCachedDataset(dir: string, hash: string, bytes: Uint8Array): Promise<string> {
  const file = cacheFile(dir, hash);
  return writeFileAtomic(path.dirname(file), path.basename(file), [bytes]);
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
