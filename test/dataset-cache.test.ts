// The dataset blob that the coordinator ships to workers, and the workers'
// content-addressed cache of it: real files in a temp directory.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { generateSynthetic } from '../src/common/data/synthetic.js';
import { decodeDataset, encodeDataset, loadCachedDataset, storeCachedDataset } from '../src/common/data/dataset-cache.js';

const dataset = generateSynthetic({ seed: 4, trainCount: 30, testCount: 10 });

describe('dataset blob and cache', () => {
  test('round-trips every byte, and equal datasets hash equally', () => {
    const { bytes, hash } = encodeDataset(dataset);
    expect(hash).toMatch(/^[0-9a-f]{64}$/);
    expect(encodeDataset(generateSynthetic({ seed: 4, trainCount: 30, testCount: 10 })).hash).toBe(hash);
    expect(encodeDataset(generateSynthetic({ seed: 5, trainCount: 30, testCount: 10 })).hash).not.toBe(hash);
    const back = decodeDataset(bytes, hash);
    expect(back.name).toBe('synthetic');
    expect(back.classes).toEqual(dataset.classes);
    for (const part of ['train', 'test'] as const) {
      expect(Buffer.from(back[part].images).equals(Buffer.from(dataset[part].images))).toBe(true);
      expect(Buffer.from(back[part].labels).equals(Buffer.from(dataset[part].labels))).toBe(true);
      expect([back[part].count, back[part].height, back[part].width, back[part].channels]).toEqual([dataset[part].count, 32, 32, 3]);
    }
  });

  test('a damaged or foreign blob is refused, naming the problem', () => {
    const { bytes, hash } = encodeDataset(dataset);
    const flipped = Uint8Array.from(bytes);
    flipped[flipped.length - 1] ^= 1;
    expect(() => decodeDataset(flipped, hash)).toThrow(/does not match the announced/);
    const { hash: truncatedHash } = encodeDataset(dataset);
    expect(() => decodeDataset(bytes.subarray(0, 100), truncatedHash)).toThrow(/does not match/);
  });

  test('the cache stores by hash, finds it again, and drops a damaged file with a warning', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-cache-'));
    const { bytes, hash } = encodeDataset(dataset);
    const warnings: string[] = [];
    expect(await loadCachedDataset(dir, hash, (w) => warnings.push(w))).toBeNull();
    const file = await storeCachedDataset(dir, hash, bytes);
    expect(file).toBe(path.join(dir, 'datasets', `${hash}.bin`));
    expect((await loadCachedDataset(dir, hash, (w) => warnings.push(w)))?.train.count).toBe(30);
    fs.truncateSync(file, 50);
    expect(await loadCachedDataset(dir, hash, (w) => warnings.push(w))).toBeNull();
    expect(warnings).toEqual([expect.stringMatching(/ignoring damaged dataset cache .* fetching it again/)]);
    expect(fs.existsSync(file)).toBe(false);
    await expect(loadCachedDataset(dir, '../../etc/passwd', () => {})).rejects.toThrow(/64 hex digits/);
  });
});
