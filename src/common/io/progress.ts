// The epoch progress bar, drawn with cli-progress:
//   epoch 3/61 [#######.............] 1234/50000 img  512.3 img/s  ETA 1m35s  loss 1.2345
// It only draws on a terminal: in logs and pipes, redraws turn into megabytes of noise.
//
// cli-progress's SingleBar and MultiBar redraw from a setTimeout loop that holds
// Node's event loop open until stop(), so a run that failed mid-epoch would never
// exit. This uses the timer-free bar they are built on (cli-progress/lib/generic-bar:
// formatting, ETA, and a terminal writer that cuts the line at the terminal's width,
// since a wrapped line would not redraw in place) and redraws it on update(), at
// most every `minRedrawMs` and always on the last image.

import { createRequire } from 'node:module';
import * as readline from 'node:readline';
import type { GenericBar, Options } from 'cli-progress';

const require = createRequire(import.meta.url);
const GenericBarClass = require('cli-progress/lib/generic-bar') as typeof GenericBar;
const { parse: parseOptions } = require('cli-progress/lib/options') as { parse(options: Options): Options };

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
  /** Characters between the brackets. */
  barWidth?: number;
  /** Minimum time between redraws; ~10 per second is smooth without costing training time. */
  minRedrawMs?: number;
}

const FORMAT = 'epoch {epoch}/{epochs} [{bar}] {value}/{total} img  {rate} img/s  ETA {eta_formatted}{loss}';

/** `45s`, `1m32s`, `2h05m`: short enough to keep the line stable in width; `?` while unknown. */
export function formatDuration(seconds: number | string): string {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Redraws the bar in place; `finish()` clears it so the epoch summary starts on a clean line. */
export class ProgressBar {
  private readonly stream: ProgressStream;
  /** Undefined when the stream is not a terminal: then nothing is ever drawn. */
  private readonly bar: GenericBar | undefined;
  private readonly minRedrawMs: number;
  private readonly startedAt = Date.now();
  private lastDrawAt = Number.NEGATIVE_INFINITY;
  private drawn = false;

  constructor(private readonly options: ProgressBarOptions) {
    this.stream = options.stream ?? process.stdout;
    this.minRedrawMs = options.minRedrawMs ?? 100;
    if (this.stream.isTTY !== true) return;
    this.bar = new GenericBarClass(
      parseOptions({
        stream: this.stream as NodeJS.WritableStream,
        format: FORMAT,
        barsize: options.barWidth ?? 20,
        barCompleteChar: '#',
        barIncompleteChar: '.',
        formatTime: (t) => formatDuration(t),
        // Over the last 50 updates: steady, yet it follows a change of speed.
        etaBuffer: 50,
      }),
    );
    this.bar.start(options.total, 0, { epoch: options.epoch, epochs: options.epochs, rate: '0.0', loss: '' });
  }

  /** Records progress; redraws at most once per `minRedrawMs`, and always on the last image. */
  update(done: number, loss?: number): void {
    if (!this.bar) return;
    const now = Date.now();
    const seconds = (now - this.startedAt) / 1000;
    this.bar.update(done, {
      rate: (seconds > 0 ? done / seconds : 0).toFixed(1),
      ...(loss === undefined ? {} : { loss: `  loss ${loss.toFixed(4)}` }),
    });
    if (now - this.lastDrawAt < this.minRedrawMs && done < this.options.total) return;
    this.lastDrawAt = now;
    this.bar.render();
    this.drawn = true;
  }

  /** Prints a full line (e.g. a warning) without leaving a torn bar behind, then redraws. */
  log(line: string): void {
    if (!this.bar) {
      this.stream.write(`${line}\n`);
      return;
    }
    this.clear();
    this.stream.write(`${line}\n`);
    this.bar.render(true);
    this.drawn = true;
  }

  /** Clears the bar so the epoch summary line starts on a clean line. */
  finish(): void {
    if (!this.bar) return;
    this.clear();
    this.bar.stop();
  }

  private clear(): void {
    if (!this.drawn || !this.bar) return;
    readline.cursorTo(this.stream as NodeJS.WritableStream, 0);
    readline.clearLine(this.stream as NodeJS.WritableStream, 0);
    this.drawn = false;
  }
}
