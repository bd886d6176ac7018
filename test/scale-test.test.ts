// The scale test as users run it (scripts/scale-test), shrunk to seconds:
// real coordinator runs with 1 and 2 worker threads on Fashion-MNIST, two
// seeds each. Its table must agree with the runs' own metrics.jsonl files.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir } from './helpers/data-fixtures.js';
import { runScript } from './helpers/node-process.js';

const TRAIN = 256;
const EPOCHS = 2;
const out = makeTempDir('scale-test');
afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

interface Row { workers: number; globalBatch: number; finalTestAcc: number[]; maxGapPoints: number; speedup: number; efficiency: number; peakRssMb: number }

const testAccs = (workers: number, seed: number): number[] =>
  fs.readFileSync(path.join(out, `n${workers}-seed${seed}`, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => {
    const m = JSON.parse(l) as { test_acc: number; train_images: number; workers: number };
    expect(m.train_images).toBe(TRAIN);
    expect(m.workers).toBe(workers);
    return m.test_acc;
  });

describe('scripts/scale-test', () => {
  it('trains every N with every seed on the same global batches and reports what the runs measured', async () => {
    const stdout = await runScript('scale-test.js', ['--workers', '1,2', '--epochs', String(EPOCHS), '--train-limit', String(TRAIN), '--test-limit', '64',
      '--seeds', '2', '--width', '4', '--batch-size', '32', '--out', out]);

    const report = JSON.parse(fs.readFileSync(path.join(out, 'scale.json'), 'utf8')) as { rows: Row[]; seedSpreadPoints: number };
    expect(report.rows.map((r) => r.workers)).toEqual([1, 2]);
    const accs = [1, 2].map((n) => [0, 1].map((seed) => testAccs(n, seed)));
    accs.flat().forEach((a) => expect(a).toHaveLength(EPOCHS));
    report.rows.forEach((r, i) => {
      expect(r.globalBatch).toBe(32);
      expect(r.finalTestAcc).toEqual(accs[i].map((a) => a[EPOCHS - 1]));
      expect(r.peakRssMb).toBeGreaterThan(50);
    });
    // Same-seed gap at any epoch, and N=1's own spread across seeds as its yardstick.
    const gap = Math.max(...[0, 1].flatMap((seed) => accs[1][seed].map((a, e) => Math.abs(a - accs[0][seed][e]))));
    expect(report.rows[1].maxGapPoints).toBeCloseTo(100 * gap, 9);
    const spread = Math.max(...accs[0][0].map((a, e) => Math.abs(a - accs[0][1][e])));
    expect(report.seedSpreadPoints).toBeCloseTo(100 * spread, 9);
    expect(report.rows[1].efficiency).toBeCloseTo(report.rows[1].speedup / 2, 9);

    const png = fs.readFileSync(path.join(out, 'scale.png'));
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    const md = fs.readFileSync(path.join(out, 'scale.md'), 'utf8');
    expect(md).toMatch(/\| 2 \| 32 \| [\d.]+% ± [\d.]+ \|/);
    expect(md).toContain(`N=1's own 2 seeds differ by up to ${(100 * spread).toFixed(2)} points`);
    expect(stdout).toContain('wrote');
  }, 120_000);
});
