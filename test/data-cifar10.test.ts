import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CIFAR10_CLASSES, findCifar10Dir, loadCifar10 } from '../src/common/data/cifar10.js';
import { ensureCifar10 } from '../src/common/data/cifar10-download.js';
import { DatasetMissingError } from '../src/common/data/errors.js';
import { loadDataset } from '../src/common/data/load-dataset.js';
import type { ImageSet } from '../src/common/data/types.js';
import {
  CIFAR_RECORD,
  CIFAR_TEST_FILE,
  cifarLabel,
  cifarPixel,
  classCounts,
  tempDirsRemovedAfterEach,
  writeCifarFiles,
} from './helpers/data-fixtures.js';

const RECORDS = 20;
const tempDir = tempDirsRemovedAfterEach('cifar');

/** Checks every byte of `set` against the generator, image by image (NHWC). */
function expectMatchesFixture(set: ImageSet, files: number[]): void {
  let n = 0;
  for (const file of files) {
    for (let r = 0; r < RECORDS; r++, n++) {
      expect(set.labels[n]).toBe(cifarLabel(file, r));
      const expected = new Uint8Array(3072);
      for (let y = 0; y < 32; y++) {
        for (let x = 0; x < 32; x++) {
          for (let c = 0; c < 3; c++) expected[(y * 32 + x) * 3 + c] = cifarPixel(file, r, c, y * 32 + x);
        }
      }
      expect(Buffer.from(set.images.subarray(n * 3072, (n + 1) * 3072)).equals(expected)).toBe(true);
    }
  }
  expect(n).toBe(set.count);
}

describe('CIFAR-10 binary reader', () => {
  it('loads all batches and transposes CHW planes to NHWC pixel-exactly', async () => {
    const dir = tempDir();
    writeCifarFiles(dir, RECORDS);
    const dataset = await loadCifar10(dir);

    expect(dataset.name).toBe('cifar10');
    expect(dataset.classes).toEqual(CIFAR10_CLASSES);
    expect(dataset.classes[0]).toBe('airplane');
    expect(dataset.classes[9]).toBe('truck');
    for (const set of [dataset.train, dataset.test]) {
      expect([set.height, set.width, set.channels]).toEqual([32, 32, 3]);
      expect(set.images.length).toBe(set.count * 3072);
      expect(set.labels.length).toBe(set.count);
    }
    expect(dataset.train.count).toBe(5 * RECORDS);
    expect(dataset.test.count).toBe(RECORDS);
    expectMatchesFixture(dataset.train, [0, 1, 2, 3, 4]);
    expectMatchesFixture(dataset.test, [5]);

    // Spot-check one pixel by hand: train image 21 is file 1 record 1; pixel (y=2, x=3) green.
    expect(dataset.train.images[21 * 3072 + (2 * 32 + 3) * 3 + 1]).toBe(cifarPixel(1, 1, 1, 67));
  });

  it('accepts the files inside the tarball folder cifar-10-batches-bin/', async () => {
    const dir = tempDir();
    writeCifarFiles(path.join(dir, 'cifar-10-batches-bin'), RECORDS);
    expect(findCifar10Dir(dir)).toBe(path.join(dir, 'cifar-10-batches-bin'));
    const dataset = await loadCifar10(dir);
    expect(dataset.train.count).toBe(5 * RECORDS);
  });

  it('rejects a truncated file, naming it, its size and the record size', async () => {
    const dir = tempDir();
    writeCifarFiles(dir, RECORDS);
    const file = path.join(dir, 'data_batch_4.bin');
    const size = RECORDS * CIFAR_RECORD - 100;
    fs.truncateSync(file, size);

    const error = await loadCifar10(dir).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    const message = (error as Error).message;
    expect(message).toContain(file);
    expect(message).toContain(`truncated`);
    expect(message).toContain(`${size} bytes is not a multiple of 3073`);
    expect(message).toContain('10000 records');
  });

  it('rejects an empty file', async () => {
    const dir = tempDir();
    writeCifarFiles(dir, RECORDS);
    fs.writeFileSync(path.join(dir, CIFAR_TEST_FILE), Buffer.alloc(0));
    await expect(loadCifar10(dir)).rejects.toThrow(/test_batch\.bin is empty \(0 bytes\).*3073-byte records/);
  });

  it('rejects a label outside 0..9, naming the file and record', async () => {
    const dir = tempDir();
    writeCifarFiles(dir, RECORDS);
    const file = path.join(dir, 'data_batch_2.bin');
    const bytes = fs.readFileSync(file);
    bytes[7 * CIFAR_RECORD] = 10;
    fs.writeFileSync(file, bytes);

    const error = (await loadCifar10(dir).catch((e: Error) => e)) as Error;
    expect(error.message).toContain(file);
    expect(error.message).toContain('record 7');
    expect(error.message).toContain('has label 10');
    expect(error.message).toContain('0..9');
  });

  it('names the missing file and the directories searched', async () => {
    const dir = tempDir();
    writeCifarFiles(dir, RECORDS);
    fs.rmSync(path.join(dir, 'data_batch_3.bin'));

    const error = await loadCifar10(dir).catch((e: Error) => e);
    expect(error).toBeInstanceOf(DatasetMissingError);
    expect((error as DatasetMissingError).message).toContain(`missing from ${dir}: data_batch_3.bin.`);
    expect((error as DatasetMissingError).missing).toEqual(['data_batch_3.bin']);
    expect((error as DatasetMissingError).searched).toEqual([dir, path.join(dir, 'cifar-10-batches-bin')]);
  });

  it('with downloading disabled, explains what to fetch, from where, into which directory', async () => {
    const dir = tempDir();
    const error = (await ensureCifar10({ dataDir: dir, download: false }).catch((e: Error) => e)) as Error;
    const message = error.message;
    for (const file of ['data_batch_1.bin', 'data_batch_5.bin', 'test_batch.bin']) expect(message).toContain(file);
    expect(message).toContain(dir);
    expect(message).toContain(path.join(dir, 'cifar-10-batches-bin'));
    expect(message).toContain('https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz');
    expect(message).toContain('--dataset fashion-mnist');
    expect(message).toContain('--dataset synthetic');
    expect(message).toContain('npm run demo');
    expect(message).toContain('downloading is disabled (--no-download)');
    expect(fs.readdirSync(dir)).toEqual([]); // nothing was created
  });

  it('loadDataset applies class-balanced limits to the real files', async () => {
    const dir = tempDir();
    writeCifarFiles(dir, RECORDS);
    const dataset = await loadDataset({ name: 'cifar10', dataDir: dir, trainLimit: 40, testLimit: 13, seed: 7, download: false });
    expect(dataset.train.count).toBe(40);
    expect(classCounts(dataset.train.labels, 10)).toEqual(new Array(10).fill(4));
    expect(dataset.test.count).toBe(13);
    const testCounts = classCounts(dataset.test.labels, 10);
    expect(Math.max(...testCounts) - Math.min(...testCounts)).toBe(1);
    expect(testCounts.reduce((a, b) => a + b)).toBe(13);

    await expect(
      loadDataset({ name: 'cifar10', dataDir: dir, trainLimit: 101, seed: 7, download: false }),
    ).rejects.toThrow('--train-limit is 101 but only 100 images are available');
  });
});
