import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CIFAR10_DIR } from '../src/common/data/cifar10.js';
import { DEFAULT_FASHION_MNIST_DIR } from '../src/common/data/fashion-mnist.js';
import { defaultDataDir, loadDataset } from '../src/common/data/load-dataset.js';
import { classCounts, tempDirsRemovedAfterEach, writeCifarFiles, writeFashionMnistFiles } from './helpers/data-fixtures.js';

const tempDir = tempDirsRemovedAfterEach('load');

describe('loadDataset', () => {
  it('knows each dataset\'s default directory', () => {
    expect(defaultDataDir('cifar10')).toBe(DEFAULT_CIFAR10_DIR);
    expect(DEFAULT_CIFAR10_DIR).toBe('data/cifar10');
    expect(defaultDataDir('fashion-mnist')).toBe(DEFAULT_FASHION_MNIST_DIR);
    expect(defaultDataDir('synthetic')).toBeUndefined();
  });

  it('picks the same subset for the same seed and another for a different seed', async () => {
    const dir = tempDir();
    writeCifarFiles(dir, 20);
    const load = (seed: number) => loadDataset({ name: 'cifar10', dataDir: dir, trainLimit: 30, testLimit: 10, seed, download: false });
    const [a, b, c] = await Promise.all([load(1), load(1), load(2)]);
    expect(Buffer.from(a.train.images).equals(Buffer.from(b.train.images))).toBe(true);
    expect(Buffer.from(a.test.images).equals(Buffer.from(b.test.images))).toBe(true);
    expect(Buffer.from(a.train.images).equals(Buffer.from(c.train.images))).toBe(false);
    expect(classCounts(a.train.labels, 10)).toEqual(new Array(10).fill(3));
    expect(classCounts(a.test.labels, 10)).toEqual(new Array(10).fill(1));
  });

  it('loads Fashion-MNIST from --data-dir with limits and logs a summary', async () => {
    const dir = tempDir();
    writeFashionMnistFiles(dir, 40, 20);
    const lines: string[] = [];
    const dataset = await loadDataset({ name: 'fashion-mnist', dataDir: dir, trainLimit: 20, seed: 4, log: (l) => lines.push(l) });
    expect(dataset.train.count).toBe(20);
    expect(dataset.test.count).toBe(20);
    expect(classCounts(dataset.train.labels, 10)).toEqual(new Array(10).fill(2));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`dataset fashion-mnist: 20 train / 20 test images, 32x32x1, ${path.resolve(dir)}`);
  });

  it('rejects a test limit larger than the test set, naming the flag', async () => {
    const dir = tempDir();
    writeFashionMnistFiles(dir, 10, 10);
    await expect(loadDataset({ name: 'fashion-mnist', dataDir: dir, testLimit: 11, seed: 1 })).rejects.toThrow(
      '--test-limit is 11 but only 10 images are available; use at most 10.',
    );
  });
});
