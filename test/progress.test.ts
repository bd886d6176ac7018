// The epoch progress bar (cli-progress underneath), driven with a fake terminal and a fake clock.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { formatDuration, ProgressBar } from '../src/common/io/progress.js';

class FakeTty {
  isTTY = true;
  columns: number | undefined = 200;
  readonly writes: string[] = [];
  write(text: string): boolean {
    this.writes.push(text);
    return true;
  }
  /** The bar lines drawn (the writes that are not cursor or erase sequences). */
  lines(): string[] {
    return this.writes.filter((w) => !/^\x1b\[[0-9;]*[A-Za-z]$/.test(w));
  }
  /** What the terminal shows on its current line, replaying carriage returns and erases. */
  screen(): string {
    let line = '';
    let col = 0;
    for (const w of this.writes) {
      for (const part of w.split(/(\x1b\[[0-9;]*[A-Za-z]|\n)/)) {
        if (part === '\n') [line, col] = ['', 0];
        else if (/^\x1b\[(\d*)G$/.test(part)) col = Number(/\d+/.exec(part)?.[0] ?? 1) - 1;
        else if (/^\x1b\[[02]?K$/.test(part)) line = part === '\x1b[2K' ? '' : line.slice(0, col);
        else if (part) {
          line = line.slice(0, col) + part + line.slice(col + part.length);
          col += part.length;
        }
      }
    }
    return line;
  }
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(1_000_000);
});
afterEach(() => {
  vi.useRealTimers();
});

describe('formatDuration', () => {
  it('formats durations compactly, and unknown ones as ?', () => {
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(59.4)).toBe('59s');
    expect(formatDuration(92)).toBe('1m32s');
    expect(formatDuration(7500)).toBe('2h05m');
    expect(formatDuration(Number.POSITIVE_INFINITY)).toBe('?');
    expect(formatDuration('INF')).toBe('?');
  });
});

describe('ProgressBar', () => {
  it('shows epoch, bar, images, rate, ETA and loss, redrawing at most once per interval and always at the end', () => {
    const tty = new FakeTty();
    const bar = new ProgressBar({ epoch: 3, epochs: 61, total: 1000, stream: tty, barWidth: 10 });
    expect(tty.writes).toEqual([]); // nothing drawn before the first image

    vi.advanceTimersByTime(1000);
    bar.update(250, 1.5);
    expect(tty.lines()).toEqual(['epoch 3/61 [###.......] 250/1000 img  250.0 img/s  ETA 3s  loss 1.5000']);
    expect(tty.screen()).toBe(tty.lines()[0]);

    vi.advanceTimersByTime(50); // within 100 ms of the last draw: recorded, not drawn
    bar.update(260, 1.4);
    expect(tty.lines()).toHaveLength(1);

    vi.advanceTimersByTime(950);
    bar.update(500);
    // The loss is kept from the last update that had one.
    expect(tty.lines()[1]).toBe('epoch 3/61 [#####.....] 500/1000 img  250.0 img/s  ETA 2s  loss 1.4000');
    expect(tty.screen()).toBe(tty.lines()[1]);

    vi.advanceTimersByTime(10); // the last image is drawn even within the interval
    bar.update(1000, 1.0);
    expect(tty.lines()[2]).toMatch(/^epoch 3\/61 \[##########\] 1000\/1000 img  497\.5 img\/s  ETA 0s {2}loss 1\.0000$/);

    bar.finish();
    expect(tty.screen()).toBe('');
    const count = tty.writes.length;
    bar.finish(); // nothing drawn since: nothing to clear
    expect(tty.writes).toHaveLength(count);
  });

  it('log() prints a whole line above the bar, then redraws the bar', () => {
    const tty = new FakeTty();
    const bar = new ProgressBar({ epoch: 1, epochs: 1, total: 10, stream: tty, barWidth: 4 });
    vi.advanceTimersByTime(1000);
    bar.update(5);
    bar.log('worker 2 joined');
    expect(tty.writes.join('')).toContain('worker 2 joined\n');
    expect(tty.screen()).toBe('epoch 1/1 [##..] 5/10 img  5.0 img/s  ETA 1s');
    bar.finish();
    expect(tty.screen()).toBe('');
  });

  it('cuts the line at the terminal width so it never wraps', () => {
    const tty = new FakeTty();
    tty.columns = 30;
    const bar = new ProgressBar({ epoch: 1, epochs: 1, total: 10, stream: tty });
    bar.update(10, 0.5);
    expect(tty.lines()).toEqual(['epoch 1/1 [####################] 10/10 img'.slice(0, 30)]);
  });

  it('is silent when the stream is not a terminal, and keeps no timer alive', () => {
    vi.useRealTimers();
    const pipe = new FakeTty();
    pipe.isTTY = false;
    const bar = new ProgressBar({ epoch: 1, epochs: 1, total: 10, stream: pipe });
    bar.update(5, 1);
    bar.update(10, 1);
    bar.finish();
    expect(pipe.writes).toEqual([]);
    bar.log('plain line');
    expect(pipe.writes).toEqual(['plain line\n']);
  });

  it('schedules no timer on a terminal either, so an epoch that throws cannot keep the process alive', () => {
    vi.useFakeTimers();
    const tty = new FakeTty();
    const bar = new ProgressBar({ epoch: 1, epochs: 2, total: 100, stream: tty });
    bar.update(10, 2);
    // No finish(): as when the training step throws.
    expect(vi.getTimerCount()).toBe(0);
    expect(tty.lines()).toHaveLength(1);
  });
});
