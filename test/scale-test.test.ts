// The scale test as users run it (scripts/scale-test), shrunk to seconds:
// real coordinator runs with 1 and 2 worker threads on Fashion-MNIST, two
// seeds each. Its table must agree with the runs' own metrics.jsonl files,
// and its peak RSS with the kernel's count for the process.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect } from 'vitest';
import { makeTempDir } from './helpers/data-fixtures.js';
import { runScriptWithPeakRss } from './helpers/node-process.js';
import { fashionMnist } from './helpers/system-deps.js';

const TRAIN = 128;
const EPOCHS = 2;
const out = makeTempDir('scale-test');
afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

interface Row {
  workers: number; globalBatch: number; finalTestAcc: number[]; maxGapPoints: number; imagesPerS: number; speedup: number; efficiency: number; peakRssMb: number;
}
interface Epoch { test_acc: number; train_images: number; workers: number; seconds: number; images_per_s: number }

const metrics = (workers: number, seed: number): Epoch[] =>
  fs.readFileSync(path.join(out, `n${workers}-seed${seed}`, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => {
    const m = JSON.parse(l) as Epoch;
    expect(m.train_images).toBe(TRAIN);
    expect(m.workers).toBe(workers);
    return m;
  });

describe('scripts/scale-test', () => {
  fashionMnist.test('trains every N with every seed on the same global batches and reports what the runs measured', async () => {
    const { stdout, maxRssMb } = await runScriptWithPeakRss('scale-test.js', ['--workers', '1,2', '--epochs', String(EPOCHS), '--train-limit', String(TRAIN), '--test-limit', '64',
      '--seeds', '2', '--width', '2', '--batch-size', '32', '--wire', 'bf16', '--out', out]);
    // The N=2 runs went over the ring in bf16, and the report says the sums were compressed.
    expect(stdout).toMatch(/2 workers, ring all-reduce, bf16 wire \(compressed: lossy sums\)/);
    expect(stdout).not.toMatch(/all-reduce: shared memory/);

    const report = JSON.parse(fs.readFileSync(path.join(out, 'scale.json'), 'utf8')) as { rows: Row[]; seedSpreadPoints: number };
    expect(report.rows.map((r) => r.workers)).toEqual([1, 2]);
    const runs = [1, 2].map((n) => [0, 1].map((seed) => metrics(n, seed)));
    const accs = runs.map((seeds) => seeds.map((epochs) => epochs.map((m) => m.test_acc)));
    accs.flat().forEach((a) => expect(a).toHaveLength(EPOCHS));
    report.rows.forEach((r, i) => {
      expect(r.globalBatch).toBe(32);
      expect(r.finalTestAcc).toEqual(accs[i].map((a) => a[EPOCHS - 1]));
      // The script samples its own RSS during each run; the kernel's high-water mark for the whole process
      // bounds every sample from above (1 MiB of slack for the units' rounding).
      expect(r.peakRssMb).toBeLessThanOrEqual(maxRssMb + 1);
    });
    // And the runs are where the process's memory goes (threads, each with its own TensorFlow.js and
    // wasm heap): the largest run's peak is most of the process's peak, not some idle baseline.
    expect(Math.max(...report.rows.map((r) => r.peakRssMb))).toBeGreaterThan(0.8 * maxRssMb);
    // Same-seed gap at any epoch, and N=1's own spread across seeds as its yardstick.
    const gap = Math.max(...[0, 1].flatMap((seed) => accs[1][seed].map((a, e) => Math.abs(a - accs[0][seed][e]))));
    expect(report.rows[1].maxGapPoints).toBeCloseTo(100 * gap, 9);
    const spread = Math.max(...accs[0][0].map((a, e) => Math.abs(a - accs[0][1][e])));
    expect(report.seedSpreadPoints).toBeCloseTo(100 * spread, 9);
    // Throughput: every image the seeds' epochs trained on, over the time those epochs took.
    const imagesPerS = runs.map((seeds) => {
      const epochs = seeds.flat();
      return epochs.reduce((n, m) => n + m.images_per_s * m.seconds, 0) / epochs.reduce((t, m) => t + m.seconds, 0);
    });
    report.rows.forEach((r, i) => expect(r.imagesPerS).toBeCloseTo(imagesPerS[i], 6));
    expect(report.rows[1].speedup).toBeCloseTo(imagesPerS[1] / imagesPerS[0], 9);
    expect(report.rows[1].efficiency).toBeCloseTo(report.rows[1].speedup / 2, 9);

    const png = fs.readFileSync(path.join(out, 'scale.png'));
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    const md = fs.readFileSync(path.join(out, 'scale.md'), 'utf8');
    expect(md).toMatch(/\| 2 \| 32 \| [\d.]+% ± [\d.]+ \|/);
    expect(md).toContain(`N=1's own 2 seeds differ by up to ${(100 * spread).toFixed(2)} points`);
    expect(md.split('\n')[0]).toMatch(/, bf16 wire for N > 1 \(compressed\)$/);
    expect(stdout).toContain('wrote');
  }, 120_000);
});
