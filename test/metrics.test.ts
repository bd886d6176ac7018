// Console and file output: metrics.jsonl and the epoch summary line (the progress bar: progress.test.ts).
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { appendMetrics, formatEpochLine, readMetrics, type EpochMetrics } from '../src/common/io/metrics.js';

const epoch50: EpochMetrics = {
  epoch: 50,
  lr: 0.0123456,
  train_loss: 0.16134,
  train_acc: 0.94371,
  test_loss: 0.35679,
  test_acc: 0.88862,
  seconds: 73.64,
  images_per_s: 679.27,
  workers: 2,
};

describe('formatEpochLine', () => {
  it("keeps the seed's layout exactly, then appends lr and throughput", () => {
    expect(formatEpochLine(epoch50)).toBe(
      'epoches: 50 train_loss: 0.1613 train_acc: 0.9437  --> test_loss: 0.3568 test_acc: 0.8886  73.6s  lr: 0.01235  img/s: 679.3',
    );
  });

  it('pads to four decimals and keeps tiny learning rates readable', () => {
    const line = formatEpochLine({ ...epoch50, epoch: 1, train_loss: 2.3, train_acc: 0.1, test_loss: 2, test_acc: 1, seconds: 5, lr: 1e-5, images_per_s: 12 });
    expect(line).toBe('epoches: 1 train_loss: 2.3000 train_acc: 0.1000  --> test_loss: 2.0000 test_acc: 1.0000  5.0s  lr: 0.00001  img/s: 12.0');
  });
});

describe('metrics.jsonl', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'tfjs-ddp-metrics-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('appends one snake_case JSON object per line and reads them back', async () => {
    const file = path.join(dir, 'metrics.jsonl');
    const second = { ...epoch50, epoch: 51, test_acc: 0.89 };
    await appendMetrics(file, epoch50);
    await appendMetrics(file, second);
    const lines = (await readFile(file, 'utf8')).split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[2]).toBe('');
    expect(JSON.parse(lines[0])).toEqual(epoch50);
    expect(Object.keys(JSON.parse(lines[1]))).toContain('images_per_s');
    expect(await readMetrics(file)).toEqual([epoch50, second]);
  });

  it('drops a partial last line left by an interrupted append', async () => {
    const file = path.join(dir, 'metrics.jsonl');
    await appendMetrics(file, epoch50);
    await appendFile(file, '{"epoch":51,"lr":0.01,"train_lo');
    expect(await readMetrics(file)).toEqual([epoch50]);
  });

  it('turns diverged (null) values back into NaN', async () => {
    const file = path.join(dir, 'metrics.jsonl');
    await appendMetrics(file, { ...epoch50, train_loss: Number.NaN });
    const [m] = await readMetrics(file);
    expect(m.train_loss).toBeNaN();
    expect(m.test_acc).toBe(epoch50.test_acc);
  });

  it('names the file and line of a malformed record', async () => {
    const file = path.join(dir, 'metrics.jsonl');
    await writeFile(file, `${JSON.stringify(epoch50)}\nnot json\n`);
    await expect(readMetrics(file)).rejects.toThrow(`${file}:2: not valid JSON`);
    await writeFile(file, `${JSON.stringify({ ...epoch50, test_acc: 'high' })}\n`);
    await expect(readMetrics(file)).rejects.toThrow(`${file}:1: field "test_acc" must be a number, got "high"`);
  });
});
