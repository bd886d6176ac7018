// A one-line progress bar for an epoch, redrawn in place with '\r':
//   epoch 3/61 [#######.....] 1234/50000 img  512.3 img/s  ETA 1m32s  loss 1.2345
// It only draws on a terminal: in logs and pipes '\r' redraws turn into megabytes of noise.

/** The part of a tty.WriteStream the bar needs; tests inject a fake one. */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(text: string): unknown;
}

export interface ProgressBarOptions {
  /** 1-based epoch number and the total, for the `epoch 3/61` prefix. */
  epoch: number;
  epochs: number;
  /** Images in the epoch. */
  total: number;
  /** Defaults to process.stdout; nothing is drawn unless `stream.isTTY`. */
  stream?: ProgressStream;
  /** Milliseconds clock; injectable so tests control throttling and rates. */
  now?: () => number;
  /** Characters between the brackets. */
  barWidth?: number;
  /** Minimum time between redraws; ~10 per second is smooth without costing training time. */
  minRedrawMs?: number;
}

/** `45s`, `1m32s`, `2h05m`: short enough to keep the line stable in width. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export interface ProgressState {
  epoch: number;
  epochs: number;
  done: number;
  total: number;
  elapsedSeconds: number;
  loss?: number;
  barWidth: number;
}

/** Renders the bar text (without '\r'); pure, so the layout is testable on its own. */
export function formatProgressLine(p: ProgressState): string {
  const fraction = p.total > 0 ? Math.min(1, Math.max(0, p.done / p.total)) : 0;
  const filled = Math.round(fraction * p.barWidth);
  const bar = '#'.repeat(filled) + '.'.repeat(p.barWidth - filled);
  const rate = p.elapsedSeconds > 0 ? p.done / p.elapsedSeconds : 0;
  const eta = rate > 0 ? formatDuration((p.total - p.done) / rate) : '?';
  let line = `epoch ${p.epoch}/${p.epochs} [${bar}] ${p.done}/${p.total} img  ${rate.toFixed(1)} img/s  ETA ${eta}`;
  if (p.loss !== undefined) line += `  loss ${p.loss.toFixed(4)}`;
  return line;
}

export class ProgressBar {
  private readonly stream: ProgressStream;
  private readonly now: () => number;
  private readonly enabled: boolean;
  private readonly barWidth: number;
  private readonly minRedrawMs: number;
  private readonly startedAt: number;
  private lastDrawAt = Number.NEGATIVE_INFINITY;
  private done = 0;
  private loss: number | undefined;
  private drawn = false;

  constructor(private readonly options: ProgressBarOptions) {
    this.stream = options.stream ?? process.stdout;
    this.now = options.now ?? (() => performance.now());
    this.enabled = this.stream.isTTY === true;
    this.barWidth = options.barWidth ?? 20;
    this.minRedrawMs = options.minRedrawMs ?? 100;
    this.startedAt = this.now();
  }

  /** Records progress; redraws at most once per `minRedrawMs`, and always on the last image. */
  update(done: number, loss?: number): void {
    this.done = done;
    if (loss !== undefined) this.loss = loss;
    if (!this.enabled) return;
    const t = this.now();
    if (t - this.lastDrawAt < this.minRedrawMs && done < this.options.total) return;
    this.lastDrawAt = t;
    this.draw(t);
  }

  /** Prints a full line (e.g. a warning) without leaving a torn bar behind, then redraws. */
  log(line: string): void {
    if (!this.enabled) {
      this.stream.write(`${line}\n`);
      return;
    }
    this.clear();
    this.stream.write(`${line}\n`);
    this.draw(this.now());
  }

  /** Clears the bar so the epoch summary line starts on a clean line. */
  finish(): void {
    this.clear();
  }

  private clear(): void {
    if (!this.drawn) return;
    this.stream.write('\r\x1b[K');
    this.drawn = false;
  }

  private draw(t: number): void {
    let line = formatProgressLine({
      epoch: this.options.epoch,
      epochs: this.options.epochs,
      done: this.done,
      total: this.options.total,
      elapsedSeconds: (t - this.startedAt) / 1000,
      loss: this.loss,
      barWidth: this.barWidth,
    });
    // A line longer than the terminal wraps, and '\r' then redraws only the last row.
    const columns = this.stream.columns;
    if (columns !== undefined && columns > 1 && line.length >= columns) line = line.slice(0, columns - 1);
    this.stream.write(`\r${line}\x1b[K`);
    this.drawn = true;
  }
}
