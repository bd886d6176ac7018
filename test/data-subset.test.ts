import { describe, expect, it } from 'vitest';
import { Rng } from '../src/common/data/rng.js';
import { balancedQuotas, balancedSubset } from '../src/common/data/subset.js';
import type { ImageSet } from '../src/common/data/types.js';
import { classCounts } from './helpers/data-fixtures.js';

/** 2x1x1 images whose two bytes encode their original index, so order and identity are checkable. */
function indexedSet(labels: number[]): ImageSet {
  const images = new Uint8Array(labels.length * 2);
  labels.forEach((_, i) => {
    images[2 * i] = i >> 8;
    images[2 * i + 1] = i & 255;
  });
  return { images, labels: Uint8Array.from(labels), count: labels.length, height: 2, width: 1, channels: 1 };
}
function originalIndices(set: ImageSet): number[] {
  return Array.from({ length: set.count }, (_, i) => (set.images[2 * i] << 8) | set.images[2 * i + 1]);
}

// 300 images, 30 per class, labels cycling 0..9.
const even = indexedSet(Array.from({ length: 300 }, (_, i) => i % 10));

describe('balancedSubset', () => {
  it('takes N/10 per class and spreads the remainder one each', () => {
    const subset = balancedSubset(even, 25, 10, 1);
    expect(subset.count).toBe(25);
    const counts = classCounts(subset.labels, 10);
    expect(counts.reduce((a, b) => a + b)).toBe(25);
    expect(counts.filter((c) => c === 3)).toHaveLength(5);
    expect(counts.filter((c) => c === 2)).toHaveLength(5);
  });

  it('keeps the original order and the image that goes with each label', () => {
    const subset = balancedSubset(even, 40, 10, 5);
    const indices = originalIndices(subset);
    expect([...indices].sort((a, b) => a - b)).toEqual(indices);
    expect(new Set(indices).size).toBe(40);
    indices.forEach((original, i) => expect(subset.labels[i]).toBe(original % 10));
  });

  it('is deterministic for a seed and differs between seeds', () => {
    const a = originalIndices(balancedSubset(even, 50, 10, 11));
    const b = originalIndices(balancedSubset(even, 50, 10, 11));
    const c = originalIndices(balancedSubset(even, 50, 10, 12));
    expect(a).toEqual(b);
    expect(c).not.toEqual(a);
  });

  it('gives the share of a scarce class to the others', () => {
    // Class 0 has 2 images, class 1 has 3, classes 2..9 have 20 each.
    const labels = [0, 0, 1, 1, 1, ...Array.from({ length: 160 }, (_, i) => 2 + (i % 8))];
    const subset = balancedSubset(indexedSet(labels), 50, 10, 3);
    const counts = classCounts(subset.labels, 10);
    expect(counts.slice(0, 2)).toEqual([2, 3]);
    // 45 left for 8 classes: five get 6, three get 5.
    expect(counts.slice(2).sort()).toEqual([5, 5, 5, 6, 6, 6, 6, 6]);
  });

  it('returns the set itself when the limit equals its size', () => {
    expect(balancedSubset(even, 300, 10, 1)).toBe(even);
  });

  it('rejects limits that are too large, below 1 or fractional', () => {
    expect(() => balancedSubset(even, 301, 10, 1, '--train-limit')).toThrow(
      '--train-limit is 301 but only 300 images are available; use at most 300.',
    );
    expect(() => balancedSubset(even, 0, 10, 1, '--test-limit')).toThrow('--test-limit must be a whole number of at least 1, got 0.');
    expect(() => balancedSubset(even, 2.5, 10, 1)).toThrow('got 2.5');
  });
});

describe('balancedQuotas', () => {
  it('sums to the total and never exceeds availability', () => {
    const rng = new Rng(9);
    const random = () => rng.nextFloat();
    for (let trial = 0; trial < 200; trial++) {
      const available = Array.from({ length: 10 }, () => Math.floor(random() * 12));
      const sum = available.reduce((a, b) => a + b);
      if (sum === 0) continue;
      const total = 1 + Math.floor(random() * sum);
      const quotas = balancedQuotas(available, total, rng);
      expect(quotas.reduce((a, b) => a + b)).toBe(total);
      quotas.forEach((q, c) => expect(q).toBeLessThanOrEqual(available[c]));
      // Balanced: any class below the largest quota is below it only because it ran out.
      const top = Math.max(...quotas);
      quotas.forEach((q, c) => {
        if (q < top - 1) expect(q).toBe(available[c]);
      });
    }
  });
});
