import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { FASHION_MNIST_CLASSES, loadFashionMnist } from '../src/common/data/fashion-mnist.js';
import { loadDataset } from '../src/common/data/load-dataset.js';
import {
  buildFashionImages,
  buildIdx,
  classCounts,
  fashionLabel,
  fashionPixel,
  tempDirsRemovedAfterEach,
  writeFashionMnistFiles,
} from './helpers/data-fixtures.js';
import { fashionMnist } from './helpers/system-deps.js';

const tempDir = tempDirsRemovedAfterEach('fmnist');

describe('Fashion-MNIST loader', () => {
  it('loads gzipped IDX files and centres each 28x28 image in a zero 32x32 frame', async () => {
    const dir = tempDir();
    writeFashionMnistFiles(dir, 12, 5);
    const dataset = await loadFashionMnist(dir);

    expect(dataset.name).toBe('fashion-mnist');
    expect(dataset.classes).toEqual(FASHION_MNIST_CLASSES);
    expect(dataset.classes[9]).toBe('Ankle boot');
    expect(dataset.train.count).toBe(12);
    expect(dataset.test.count).toBe(5);
    for (const set of [dataset.train, dataset.test]) {
      expect([set.height, set.width, set.channels]).toEqual([32, 32, 1]);
      expect(set.images.length).toBe(set.count * 1024);
      for (let n = 0; n < set.count; n++) {
        expect(set.labels[n]).toBe(fashionLabel(n));
        for (let y = 0; y < 32; y++) {
          for (let x = 0; x < 32; x++) {
            const inside = y >= 2 && y < 30 && x >= 2 && x < 30;
            const expected = inside ? fashionPixel(n, y - 2, x - 2) : 0;
            if (set.images[n * 1024 + y * 32 + x] !== expected) {
              throw new Error(`image ${n} pixel (${y}, ${x}) is ${set.images[n * 1024 + y * 32 + x]}, expected ${expected}`);
            }
          }
        }
      }
    }
  });

  it('accepts uncompressed IDX files', async () => {
    const dir = tempDir();
    writeFashionMnistFiles(dir, 3, 2, false);
    const dataset = await loadFashionMnist(dir);
    expect(dataset.train.count).toBe(3);
    expect(dataset.test.images[1 * 1024 + 2 * 32 + 2]).toBe(fashionPixel(1, 0, 0));
  });

  it('rejects a wrong magic number, naming the file and both numbers', async () => {
    const dir = tempDir();
    writeFashionMnistFiles(dir, 3, 2);
    const file = path.join(dir, 'train-images-idx3-ubyte.gz');
    fs.writeFileSync(file, zlib.gzipSync(buildIdx(2049, [3, 28, 28], buildFashionImages(3))));
    await expect(loadFashionMnist(dir)).rejects.toThrow(`${file} has IDX magic number 2049 (0x00000801), expected 2051 (0x00000803)`);
  });

  it('rejects truncated files and image/label count mismatches', async () => {
    const dir = tempDir();
    writeFashionMnistFiles(dir, 3, 2);
    const images = path.join(dir, 't10k-images-idx3-ubyte.gz');
    fs.writeFileSync(images, zlib.gzipSync(buildIdx(2051, [2, 28, 28], buildFashionImages(2)).subarray(0, 1000)));
    await expect(loadFashionMnist(dir)).rejects.toThrow(`${images} has 1000 bytes but its header (dims 2x28x28) implies 1584: the file is truncated`);

    fs.writeFileSync(images, zlib.gzipSync(buildIdx(2051, [4, 28, 28], buildFashionImages(4))));
    await expect(loadFashionMnist(dir)).rejects.toThrow('has 4 images but');
  });

  it('rejects a corrupt gzip stream', async () => {
    const dir = tempDir();
    writeFashionMnistFiles(dir, 3, 2);
    const labels = path.join(dir, 'train-labels-idx1-ubyte.gz');
    fs.writeFileSync(labels, fs.readFileSync(labels).subarray(0, 12));
    await expect(loadFashionMnist(dir)).rejects.toThrow(`Cannot decompress ${labels}`);
  });

  it('explains how to install the data when the directory or a file is missing', async () => {
    const missingDir = path.join(tempDir(), 'nope');
    await expect(loadFashionMnist(missingDir)).rejects.toThrow(
      `Fashion-MNIST directory ${missingDir} does not exist. Install it with \`apt-get install dataset-fashion-mnist\``,
    );

    const dir = tempDir();
    writeFashionMnistFiles(dir, 3, 2);
    fs.rmSync(path.join(dir, 't10k-labels-idx1-ubyte.gz'));
    await expect(loadFashionMnist(dir)).rejects.toThrow(
      new RegExp(`missing from ${dir}: t10k-labels-idx1-ubyte\\.gz .*apt-get install dataset-fashion-mnist.*--data-dir`),
    );
  });

  fashionMnist.test('loads the real dataset from the Debian package with 60000/10000 balanced images', async () => {
    const dataset = await loadDataset({ name: 'fashion-mnist', seed: 3 });
    expect(dataset.train.count).toBe(60000);
    expect(dataset.test.count).toBe(10000);
    expect(classCounts(dataset.train.labels, 10)).toEqual(new Array(10).fill(6000));
    expect(classCounts(dataset.test.labels, 10)).toEqual(new Array(10).fill(1000));
    expect(dataset.train.images.length).toBe(60000 * 32 * 32);
    // The 2-pixel frame is zero in every image, every image has content, and the mean pixel of the
    // 28x28 content is Fashion-MNIST's published one (the 0.2860 / 0.2868 of its usual normalisation).
    for (const [set, publishedMean] of [[dataset.train, 0.2860], [dataset.test, 0.2868]] as const) {
      let frame = 0;
      let empty = 0;
      let sum = 0;
      for (let n = 0; n < set.count; n++) {
        let content = 0;
        for (let y = 0; y < 32; y++) {
          for (let x = 0; x < 32; x++) {
            const v = set.images[n * 1024 + y * 32 + x];
            if (y >= 2 && y < 30 && x >= 2 && x < 30) content += v;
            else frame += v;
          }
        }
        if (content === 0) empty++;
        sum += content;
      }
      expect({ frame, empty }).toEqual({ frame: 0, empty: 0 });
      expect(sum / (set.count * 784 * 255)).toBeCloseTo(publishedMean, 3);
    }
  });
});
