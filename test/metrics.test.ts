// Console and file output: metrics.jsonl, the epoch summary line and the progress bar.
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { appendMetrics, formatEpochLine, readMetrics, type EpochMetrics } from '../src/common/io/metrics.js';
import { formatDuration, formatProgressLine, ProgressBar } from '../src/common/io/progress.js';

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

/** Records writes like a terminal would receive them. */
class FakeTty {
  isTTY = true;
  columns = 200;
  writes: string[] = [];
  write(text: string): boolean {
    this.writes.push(text);
    return true;
  }
}

describe('progress bar', () => {
  it('formats durations compactly', () => {
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(59.4)).toBe('59s');
    expect(formatDuration(92)).toBe('1m32s');
    expect(formatDuration(7500)).toBe('2h05m');
    expect(formatDuration(Number.POSITIVE_INFINITY)).toBe('?');
  });

  it('formats the line in the documented layout', () => {
    const line = formatProgressLine({ epoch: 3, epochs: 61, done: 1234, total: 50000, elapsedSeconds: 1234 / 512.3, loss: 1.23454, barWidth: 12 });
    // 1234/50000 of 12 characters rounds to 0 filled; ETA = 48766 img / 512.3 img/s = 95 s.
    expect(line).toBe('epoch 3/61 [............] 1234/50000 img  512.3 img/s  ETA 1m35s  loss 1.2345');
    const half = formatProgressLine({ epoch: 1, epochs: 2, done: 500, total: 1000, elapsedSeconds: 2, barWidth: 10 });
    expect(half).toBe('epoch 1/2 [#####.....] 500/1000 img  250.0 img/s  ETA 2s');
  });

  it('redraws with \\r at most once per interval, always at the end, and clears on finish', () => {
    const tty = new FakeTty();
    let clock = 1000;
    const bar = new ProgressBar({ epoch: 3, epochs: 61, total: 1000, stream: tty, now: () => clock, barWidth: 10 });

    clock += 1000;
    bar.update(250, 1.5);
    expect(tty.writes).toEqual(['\repoch 3/61 [###.......] 250/1000 img  250.0 img/s  ETA 3s  loss 1.5000\x1b[K']);

    clock += 50; // within 100 ms of the last draw: recorded, not drawn
    bar.update(260, 1.4);
    expect(tty.writes).toHaveLength(1);

    clock += 950;
    bar.update(500);
    expect(tty.writes[1]).toBe('\repoch 3/61 [#####.....] 500/1000 img  250.0 img/s  ETA 2s  loss 1.4000\x1b[K');

    clock += 10; // the last image is drawn even within the interval
    bar.update(1000, 1.0);
    expect(tty.writes[2]).toMatch(/^\repoch 3\/61 \[##########\] 1000\/1000 img .* ETA 0s {2}loss 1\.0000\x1b\[K$/);

    bar.finish();
    expect(tty.writes[3]).toBe('\r\x1b[K');
    bar.finish(); // nothing drawn since: nothing to clear
    expect(tty.writes).toHaveLength(4);
  });

  it('log() prints a line without tearing the bar', () => {
    const tty = new FakeTty();
    const bar = new ProgressBar({ epoch: 1, epochs: 1, total: 10, stream: tty, now: () => 0, barWidth: 4 });
    bar.update(5);
    bar.log('worker 2 joined');
    expect(tty.writes.slice(1)).toEqual(['\r\x1b[K', 'worker 2 joined\n', '\repoch 1/1 [##..] 5/10 img  0.0 img/s  ETA ?\x1b[K']);
  });

  it('truncates to the terminal width so the line never wraps', () => {
    const tty = new FakeTty();
    tty.columns = 30;
    const bar = new ProgressBar({ epoch: 1, epochs: 1, total: 10, stream: tty, now: () => 0 });
    bar.update(10, 0.5);
    expect(tty.writes[0]).toBe(`\r${'epoch 1/1 [####################] 10/10 img'.slice(0, 29)}\x1b[K`);
  });

  it('is silent when the stream is not a terminal', () => {
    const pipe = new FakeTty();
    pipe.isTTY = false;
    const bar = new ProgressBar({ epoch: 1, epochs: 1, total: 10, stream: pipe, now: () => 0 });
    bar.update(5, 1);
    bar.update(10, 1);
    bar.finish();
    expect(pipe.writes).toEqual([]);
    bar.log('plain line');
    expect(pipe.writes).toEqual(['plain line\n']);
  });
});
