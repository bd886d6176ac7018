import { describe, expect, it } from 'vitest';
import { epochPermutation, globalBatches, shardRange } from '../src/common/data/sampler.js';

function sorted(values: Iterable<number>): number[] {
  return [...values].sort((a, b) => a - b);
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

describe('epochPermutation', () => {
  it('contains every index exactly once', () => {
    for (const n of [0, 1, 2, 7, 1000]) {
      expect(sorted(epochPermutation(n, 5, 0))).toEqual(range(n));
    }
  });

  it('is reproducible for (seed, epoch) and differs across epochs and seeds', () => {
    const a = epochPermutation(500, 1, 3);
    expect([...epochPermutation(500, 1, 3)]).toEqual([...a]);
    expect([...epochPermutation(500, 1, 4)]).not.toEqual([...a]);
    expect([...epochPermutation(500, 2, 3)]).not.toEqual([...a]);
  });

  it('actually shuffles: each position is roughly uniform over many epochs', () => {
    const n = 5;
    const epochs = 5000;
    const counts = Array.from({ length: n }, () => new Array<number>(n).fill(0));
    for (let e = 0; e < epochs; e++) {
      const p = epochPermutation(n, 9, e);
      for (let pos = 0; pos < n; pos++) counts[pos][p[pos]]++;
    }
    // Each count is Binomial(5000, 0.2): mean 1000, sd ~28; allow 5 sd.
    for (const row of counts) for (const c of row) expect(Math.abs(c - epochs / n)).toBeLessThan(5 * 28.3);
  });

  it('rejects a bad size', () => {
    expect(() => epochPermutation(-1, 0, 0)).toThrow(/n is -1/);
    expect(() => epochPermutation(2.5, 0, 0)).toThrow(/integer/);
  });
});

describe('globalBatches', () => {
  it('covers the epoch exactly once with full batches and a smaller last one', () => {
    const batches = globalBatches(103, 10, 1, 0, { shuffle: true });
    expect(batches.map((b) => b.length)).toEqual([10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 3]);
    expect(sorted(batches.flatMap((b) => [...b]))).toEqual(range(103));
    expect(batches.flatMap((b) => [...b])).toEqual([...epochPermutation(103, 1, 0)]);
  });

  it('keeps 0..n-1 order when not shuffling, for any epoch', () => {
    const batches = globalBatches(25, 8, 1, 7, { shuffle: false });
    expect(batches.map((b) => [...b])).toEqual([range(8), range(8).map((i) => i + 8), range(8).map((i) => i + 16), [24]]);
  });

  it('differs between epochs when shuffling', () => {
    const e0 = globalBatches(64, 16, 3, 0, { shuffle: true }).map((b) => [...b]);
    const e1 = globalBatches(64, 16, 3, 1, { shuffle: true }).map((b) => [...b]);
    expect(e1).not.toEqual(e0);
  });

  it('gives each batch its own buffer', () => {
    const [a, b] = globalBatches(20, 10, 0, 0, { shuffle: true });
    expect(a.buffer).not.toBe(b.buffer);
    expect(a.byteOffset).toBe(0);
  });

  it('handles an empty set and a batch larger than the set', () => {
    expect(globalBatches(0, 4, 0, 0, { shuffle: true })).toEqual([]);
    const one = globalBatches(3, 100, 0, 0, { shuffle: false });
    expect(one.map((b) => [...b])).toEqual([[0, 1, 2]]);
  });

  it('rejects a bad batch size', () => {
    expect(() => globalBatches(10, 0, 0, 0, { shuffle: true })).toThrow(/batchSize is 0/);
    expect(() => globalBatches(10, 1.5, 0, 0, { shuffle: true })).toThrow(/positive integer/);
  });
});

describe('shardRange', () => {
  it('splits contiguously and as evenly as possible, extra items to the first ranks', () => {
    const shards = [0, 1, 2].map((r) => shardRange(10, r, 3));
    expect(shards).toEqual([
      { start: 0, end: 4 },
      { start: 4, end: 7 },
      { start: 7, end: 10 },
    ]);
  });

  it('covers [0, total) exactly for many sizes', () => {
    for (let total = 0; total <= 40; total++) {
      for (let worldSize = 1; worldSize <= 9; worldSize++) {
        let expectedStart = 0;
        const sizes: number[] = [];
        for (let rank = 0; rank < worldSize; rank++) {
          const { start, end } = shardRange(total, rank, worldSize);
          expect(start).toBe(expectedStart);
          expectedStart = end;
          sizes.push(end - start);
        }
        expect(expectedStart).toBe(total);
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
        // Non-increasing: the bigger shards come first.
        for (let i = 1; i < sizes.length; i++) expect(sizes[i]).toBeLessThanOrEqual(sizes[i - 1]);
      }
    }
  });

  it('gives empty shards to ranks beyond a small total', () => {
    expect([0, 1, 2, 3].map((r) => shardRange(2, r, 4))).toEqual([
      { start: 0, end: 1 },
      { start: 1, end: 2 },
      { start: 2, end: 2 },
      { start: 2, end: 2 },
    ]);
  });

  it('rejects bad arguments with clear messages', () => {
    expect(() => shardRange(10, 3, 3)).toThrow(/rank is 3; it must be an integer in \[0, 2\]/);
    expect(() => shardRange(10, -1, 3)).toThrow(/rank is -1/);
    expect(() => shardRange(10, 0, 0)).toThrow(/worldSize is 0/);
    expect(() => shardRange(-1, 0, 1)).toThrow(/total is -1/);
    expect(() => shardRange(1.5, 0, 1)).toThrow(/total is 1.5/);
  });
});
