// TensorBoard event files (--tensorboard DIR) with the same scalars as
// metrics.jsonl, written here on every backend without TensorFlow: TFRecord
// framing (tfrecord.ts) around Event protobufs, encoded by protobufjs from
// the few messages below.
//
// One file per run, named as TensorFlow names them
// (events.out.tfevents.<10-digit seconds>.<hostname>), opened with a
// file_version "brain.Event:2" event. Each epoch appends one Event whose
// Summary holds every scalar at step = epoch, and syncs it, so a crash loses
// at most the epoch being written. A resumed run starts a new file in the
// same directory; TensorBoard reads all of them.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import protobuf from 'protobufjs';
import type { EpochMetrics } from './metrics.js';
import { tfrecord } from './tfrecord.js';

/**
 * The part of TensorFlow's tensorflow/core/util/event.proto and
 * tensorflow/core/framework/summary.proto (TensorBoard's copies:
 * tensorboard/compat/proto/) that scalars need, with the same names and
 * field numbers; everything else in those messages is left out.
 */
export const EVENT_PROTO = `
syntax = "proto3";
package tensorboard;

message Event {
  double wall_time = 1;
  int64 step = 2;
  oneof what {
    string file_version = 3;
    Summary summary = 5;
  }
}

message Summary {
  message Value {
    string tag = 1;
    oneof value {
      float simple_value = 2;
    }
  }
  repeated Value value = 1;
}
`;

const EventMessage = protobuf.parse(EVENT_PROTO, { keepCase: true }).root.lookupType('tensorboard.Event');

export const FILE_VERSION = 'brain.Event:2';

export interface TensorboardEvent {
  /** Seconds since the epoch, as TensorFlow writes it (a double). */
  wallTime: number;
  /** Left out of the encoding when 0, as proto3 writers do. */
  step?: number;
  fileVersion?: string;
  scalars?: readonly (readonly [tag: string, value: number])[];
}

/** One Event, protobuf-encoded (not yet framed). Fields at their default are omitted, as TensorFlow's writer does. */
export function encodeEvent(e: TensorboardEvent): Uint8Array {
  const msg: Record<string, unknown> = { wall_time: e.wallTime };
  if (e.step) msg.step = e.step;
  if (e.fileVersion !== undefined) msg.file_version = e.fileVersion;
  else if (e.scalars) msg.summary = { value: e.scalars.map(([tag, simple_value]) => ({ tag, simple_value })) };
  return EventMessage.encode(EventMessage.fromObject(msg)).finish();
}

/** TensorFlow's event file name: events.out.tfevents.<seconds, 10 digits>.<hostname>. */
export function eventFileName(wallTimeSeconds: number, hostname = os.hostname()): string {
  const secs = String(Math.floor(wallTimeSeconds)).padStart(10, '0');
  return `events.out.tfevents.${secs}.${hostname.replace(/[^\w.-]/g, '_') || 'localhost'}`;
}

/** The scalars of one epoch, under the tags the native summary writer used before. */
export function epochScalars(m: EpochMetrics): [string, number][] {
  return [
    ['train/loss', m.train_loss], ['train/accuracy', m.train_acc], ['test/loss', m.test_loss], ['test/accuracy', m.test_acc],
    ['lr', m.lr], ['images_per_s', m.images_per_s], ['epoch_seconds', m.seconds],
  ];
}

export class TensorboardLog {
  private failed = false;

  private constructor(
    /** The event file this run appends to. */
    readonly file: string,
    private readonly log: (line: string) => void,
    private readonly now: () => number,
  ) {}

  /**
   * Creates `dir` and a new event file in it, or returns null after logging
   * why it cannot (the run goes on: metrics.jsonl holds the same numbers).
   * `now` (seconds) is for tests.
   */
  static async open(dir: string, log: (line: string) => void, now = () => Date.now() / 1000): Promise<TensorboardLog | null> {
    try {
      fs.mkdirSync(dir, { recursive: true });
      const start = now();
      const file = createNew(path.join(dir, eventFileName(start)));
      const tb = new TensorboardLog(file, log, now);
      tb.append([{ wallTime: start, fileVersion: FILE_VERSION }]);
      log(`tensorboard: writing event files to ${dir}`);
      return tb;
    } catch (err) {
      log(`tensorboard: cannot write to ${dir} (${(err as Error).message}); the same scalars are in metrics.jsonl`);
      return null;
    }
  }

  /** Appends the epoch's scalars at step = epoch. A write error is logged once, and later epochs are skipped. */
  epoch(m: EpochMetrics): void {
    if (this.failed) return;
    try {
      this.append([{ wallTime: this.now(), step: m.epoch, scalars: epochScalars(m) }]);
    } catch (err) {
      this.failed = true;
      this.log(`tensorboard: cannot append to ${this.file} (${(err as Error).message}); ` +
        'no more events this run; the same scalars are in metrics.jsonl');
    }
  }

  private append(events: TensorboardEvent[]): void {
    const bytes = Buffer.concat(events.map((e) => tfrecord(encodeEvent(e))));
    const fd = fs.openSync(this.file, 'a');
    try {
      for (let done = 0; done < bytes.length;) done += fs.writeSync(fd, bytes, done);
      fs.fdatasyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
}

/** Creates `file` empty, never reusing one: a second run started in the same second gets `<file>.1`, and so on. */
function createNew(file: string): string {
  for (let n = 0; ; n++) {
    const candidate = n === 0 ? file : `${file}.${n}`;
    try {
      fs.closeSync(fs.openSync(candidate, 'wx'));
      return candidate;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}
