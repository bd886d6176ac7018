// Builders for tiny but format-exact dataset files (CIFAR-10 binary batches,
// ustar archives, IDX files) so the data tests exercise the real readers.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { afterEach } from 'vitest';
import { Rng } from '../../src/common/data/rng.js';
import type { ImageSet } from '../../src/common/data/types.js';

export const CIFAR_RECORD = 3073;
export const CIFAR_TRAIN_FILES = ['data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin', 'data_batch_4.bin', 'data_batch_5.bin'];
export const CIFAR_TEST_FILE = 'test_batch.bin';

/**
 * A maker of temporary directories that are all removed after each test of
 * the calling file (registers the afterEach hook once).
 */
export function tempDirsRemovedAfterEach(label: string): () => string {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });
  return () => {
    const dir = makeTempDir(label);
    dirs.push(dir);
    return dir;
  };
}

export function makeTempDir(label: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `tfjs-ddp-${label}-`));
}

/**
 * The byte stored for (file, record, channel, pixel) in generated CIFAR
 * files. Distinct per channel and position so a wrong transpose is visible.
 */
export function cifarPixel(file: number, record: number, channel: number, pixel: number): number {
  return (file * 53 + record * 29 + channel * 101 + pixel * 7 + (pixel >> 5) * 3) & 255;
}

/** The label of record `record` in file `file` (file 5 is test_batch). */
export function cifarLabel(file: number, record: number): number {
  return (file * 3 + record) % 10;
}

/** One CIFAR-10 batch in the official layout: label byte, then R, G, B planes. */
export function buildCifarBatch(file: number, records: number): Buffer {
  const bytes = Buffer.alloc(records * CIFAR_RECORD);
  for (let r = 0; r < records; r++) {
    const base = r * CIFAR_RECORD;
    bytes[base] = cifarLabel(file, r);
    for (let c = 0; c < 3; c++) {
      for (let p = 0; p < 1024; p++) bytes[base + 1 + c * 1024 + p] = cifarPixel(file, r, c, p);
    }
  }
  return bytes;
}

/** Writes data_batch_1..5.bin and test_batch.bin with `records` records each. */
export function writeCifarFiles(dir: string, records: number): void {
  fs.mkdirSync(dir, { recursive: true });
  CIFAR_TRAIN_FILES.forEach((name, i) => fs.writeFileSync(path.join(dir, name), buildCifarBatch(i, records)));
  fs.writeFileSync(path.join(dir, CIFAR_TEST_FILE), buildCifarBatch(5, records));
}

export interface TarFixtureEntry {
  name: string;
  data?: Uint8Array;
  directory?: boolean;
  /** Put this in the ustar prefix field and `name` in the name field. */
  prefix?: string;
}

/** Builds a POSIX ustar archive (with the two zero blocks that close it). */
export function buildTar(entries: TarFixtureEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const data = entry.data ?? new Uint8Array(0);
    const header = Buffer.alloc(512);
    header.write(entry.name, 0, 100, 'utf8');
    header.write(entry.directory ? '0000755\0' : '0000644\0', 100, 'ascii');
    header.write('0000000\0', 108, 'ascii');
    header.write('0000000\0', 116, 'ascii');
    header.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124, 'ascii');
    header.write('14707000000\0', 136, 'ascii');
    header.write(entry.directory ? '5' : '0', 156, 'ascii');
    header.write('ustar\0', 257, 'ascii');
    header.write('00', 263, 'ascii');
    if (entry.prefix) header.write(entry.prefix, 345, 155, 'utf8');
    header.fill(0x20, 148, 156);
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
    blocks.push(header, Buffer.from(data), Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/**
 * A .tar.gz laid out like cifar-10-binary.tar.gz, with `records` records per
 * batch. `paddingBytes` adds an incompressible readme.html so the archive can
 * be made large enough to arrive over a socket in many chunks.
 */
export function buildCifarTarGz(records: number, paddingBytes = 0): Buffer {
  const folder = 'cifar-10-batches-bin';
  const entries: TarFixtureEntry[] = [{ name: `${folder}/`, directory: true }];
  CIFAR_TRAIN_FILES.forEach((name, i) => entries.push({ name: `${folder}/${name}`, data: buildCifarBatch(i, records) }));
  entries.push({ name: `${folder}/${CIFAR_TEST_FILE}`, data: buildCifarBatch(5, records) });
  entries.push({ name: `${folder}/batches.meta.txt`, data: Buffer.from('airplane\nautomobile\n') });
  if (paddingBytes > 0) entries.push({ name: `${folder}/readme.html`, data: crypto.randomBytes(paddingBytes) });
  return zlib.gzipSync(buildTar(entries));
}

/** An IDX file: magic (big-endian uint32), dims (uint32 each), then the bytes. */
export function buildIdx(magic: number, dims: number[], data: Uint8Array): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt32BE(magic, 0);
  dims.forEach((dim, i) => header.writeUInt32BE(dim, 4 + 4 * i));
  return Buffer.concat([header, Buffer.from(data)]);
}

/** The byte stored at (image, row, col) in generated Fashion-MNIST files; never 0. */
export function fashionPixel(image: number, row: number, col: number): number {
  return 1 + ((image * 37 + row * 11 + col * 5) % 255);
}

export function buildFashionImages(count: number): Uint8Array {
  const data = new Uint8Array(count * 28 * 28);
  for (let n = 0; n < count; n++) {
    for (let row = 0; row < 28; row++) {
      for (let col = 0; col < 28; col++) data[(n * 28 + row) * 28 + col] = fashionPixel(n, row, col);
    }
  }
  return data;
}

export function fashionLabel(image: number): number {
  return (image * 7) % 10;
}

/** Writes the four Fashion-MNIST IDX files (gzipped unless `gzip` is false). */
export function writeFashionMnistFiles(dir: string, trainCount: number, testCount: number, gzip = true): void {
  fs.mkdirSync(dir, { recursive: true });
  const write = (name: string, content: Buffer) =>
    fs.writeFileSync(path.join(dir, gzip ? `${name}.gz` : name), gzip ? zlib.gzipSync(content) : content);
  for (const [prefix, count] of [['train', trainCount], ['t10k', testCount]] as const) {
    write(`${prefix}-images-idx3-ubyte`, buildIdx(2051, [count, 28, 28], buildFashionImages(count)));
    write(`${prefix}-labels-idx1-ubyte`, buildIdx(2049, [count], Uint8Array.from({ length: count }, (_, i) => fashionLabel(i))));
  }
}

/** Counts how many of `labels` fall in each of `classes` classes. */
export function classCounts(labels: Uint8Array, classes: number): number[] {
  const counts = new Array<number>(classes).fill(0);
  for (const label of labels) counts[label]++;
  return counts;
}

/** `count` images of random bytes with random labels 0..9, seeded. */
export function randomSet(count: number, height: number, width: number, channels: number, seed = 1): ImageSet {
  const rng = Rng.seeded(seed);
  const images = new Uint8Array(count * height * width * channels);
  for (let i = 0; i < images.length; i++) images[i] = rng.nextInt(256);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) labels[i] = rng.nextInt(10);
  return { images, labels, count, height, width, channels };
}
