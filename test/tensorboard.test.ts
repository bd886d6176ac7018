// --tensorboard: event files written without TensorFlow, on every backend.
// The files are checked three ways: byte for byte against known-good event
// files from TensorFlow's and tensorboard_logger's tests (test/fixtures/
// tensorboard), through an independent reader written here (TFRecord framing,
// both masked CRC-32Cs with a table CRC of its own, Event decoded by
// protobufjs from a schema built here), and, where the Python package
// `tensorboard` is installed (not in CI), through TensorBoard's own
// EventFileLoader.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import protobuf from 'protobufjs';
import { describe, expect, test } from 'vitest';
import { root } from './helpers/node-process.js';
import { DEFAULTS } from '../src/common/training/config.js';
import { train } from '../src/common/training/single-process.js';
import type { EpochMetrics } from '../src/common/io/metrics.js';
import { readMetrics } from '../src/common/io/metrics.js';
import { crc32c, maskedCrc32c, tfrecord } from '../src/common/io/tfrecord.js';
import { encodeEvent, epochScalars, eventFileName, FILE_VERSION, TensorboardLog } from '../src/common/io/tensorboard.js';

const FIXTURES = path.join(root, 'test/fixtures/tensorboard');

// ---- the independent reader ------------------------------------------------

/** CRC-32C, bitwise from the reflected Castagnoli polynomial: slow and obviously right. */
function referenceCrc32c(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function referenceMasked(data: Uint8Array): number {
  const crc = referenceCrc32c(data);
  return (((crc >>> 15) | (crc << 17)) + 0xa282ead8) >>> 0;
}

/** The records of a TFRecord file; throws on a bad length, a bad CRC or trailing bytes. */
function readRecords(bytes: Buffer): Buffer[] {
  const records: Buffer[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (bytes.length - at < 12) throw new Error(`truncated header at ${at}`);
    const lengthBytes = bytes.subarray(at, at + 8);
    if (bytes.readUInt32LE(at + 8) !== referenceMasked(lengthBytes)) throw new Error(`bad length CRC at ${at}`);
    const length = Number(bytes.readBigUInt64LE(at));
    const data = bytes.subarray(at + 12, at + 12 + length);
    if (data.length !== length || bytes.length < at + 16 + length) throw new Error(`truncated record at ${at}`);
    if (bytes.readUInt32LE(at + 12 + length) !== referenceMasked(data)) throw new Error(`bad data CRC at ${at}`);
    records.push(data);
    at += 16 + length;
  }
  return records;
}

// Event and Summary from tensorflow/core/util/event.proto and
// tensorflow/core/framework/summary.proto, built with the reflection API.
const Value = new protobuf.Type('Value')
  .add(new protobuf.Field('tag', 1, 'string'))
  .add(new protobuf.Field('simple_value', 2, 'float'));
const Summary = new protobuf.Type('Summary').add(Value).add(new protobuf.Field('value', 1, 'Value', 'repeated'));
const Event = new protobuf.Type('Event')
  .add(new protobuf.Field('wall_time', 1, 'double'))
  .add(new protobuf.Field('step', 2, 'int64'))
  .add(new protobuf.Field('file_version', 3, 'string'))
  .add(new protobuf.Field('summary', 5, 'Summary'));
new protobuf.Root().define('tensorflow').add(Summary).add(Event);

interface ReadEvent {
  wall_time: number;
  step: number;
  file_version?: string;
  summary?: { value: { tag: string; simple_value: number }[] };
}

function readEvents(file: string): ReadEvent[] {
  return readRecords(fs.readFileSync(file)).map((r) =>
    Event.toObject(Event.decode(r), { longs: Number, defaults: true }) as ReadEvent);
}

// ---- known values ------------------------------------------------------------

describe('CRC-32C and TFRecord framing', () => {
  test('CRC-32C gives the standard check value, like the reference', () => {
    const check = Buffer.from('123456789', 'ascii');
    expect(crc32c(check)).toBe(0xe3069283);
    expect(referenceCrc32c(check)).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
    // A plain Uint8Array viewing part of a larger buffer: only the view is hashed.
    const view = new Uint8Array(Buffer.from('xx123456789yy', 'ascii')).subarray(2, 11);
    expect(crc32c(view)).toBe(0xe3069283);
  });

  test('the masked CRC of a known length field is the one every event file starts with', () => {
    // 24 = the length of a file_version "brain.Event:2" event; its masked CRC is a3 7f 4b 22 (LE).
    const length24 = Buffer.from([24, 0, 0, 0, 0, 0, 0, 0]);
    expect(maskedCrc32c(length24)).toBe(0x224b7fa3);
    expect(referenceMasked(length24)).toBe(0x224b7fa3);
    for (const n of [0, 1, 7, 100, 4096]) {
      const data = Buffer.alloc(n, n & 0xff);
      expect(maskedCrc32c(data), `n=${n}`).toBe(referenceMasked(data));
      expect(readRecords(tfrecord(data))).toEqual([data]);
    }
  });

  test('the reader rejects a flipped bit in the data and in the length', () => {
    const rec = tfrecord(Buffer.from('hello'));
    const badData = Buffer.from(rec);
    badData[13] ^= 1;
    expect(() => readRecords(badData)).toThrow(/bad data CRC/);
    const badLength = Buffer.from(rec);
    badLength[0] ^= 1;
    expect(() => readRecords(badLength)).toThrow(/bad length CRC/);
  });
});

describe('event encoding against known-good files', () => {
  test("TensorFlow's own test record (file_version brain.Event:1)", () => {
    const good = fs.readFileSync(path.join(FIXTURES, 'tensorflow.tfevents'));
    const ours = tfrecord(encodeEvent({ wallTime: 1440183447.0, fileVersion: 'brain.Event:1' }));
    expect(ours.toString('hex')).toBe(good.toString('hex'));
    expect(readEvents(path.join(FIXTURES, 'tensorflow.tfevents'))).toEqual([
      { wall_time: 1440183447.0, step: 0, file_version: 'brain.Event:1', summary: null },
    ]);
  });

  test("tensorboard_logger's file: file_version, then one scalar per step", () => {
    const good = fs.readFileSync(path.join(FIXTURES, 'tensorboard_logger.tfevents'));
    const ours = Buffer.concat([
      tfrecord(encodeEvent({ wallTime: 256.5, fileVersion: FILE_VERSION })),
      tfrecord(encodeEvent({ wallTime: 256.5, step: 1, scalars: [['v/1', 1.5]] })),
      tfrecord(encodeEvent({ wallTime: 256.5, step: 2, scalars: [['v/22', 16.0]] })),
    ]);
    expect(ours.toString('hex')).toBe(good.toString('hex'));
    const events = readEvents(path.join(FIXTURES, 'tensorboard_logger.tfevents'));
    expect(events.map((e) => [e.step, e.file_version, e.summary?.value])).toEqual([
      [0, 'brain.Event:2', undefined],
      [1, '', [{ tag: 'v/1', simple_value: 1.5 }]],
      [2, '', [{ tag: 'v/22', simple_value: 16 }]],
    ]);
  });

  test('file names follow TensorFlow: events.out.tfevents.<10-digit seconds>.<host>', () => {
    expect(eventFileName(1440183447.9, 'gpu-01.lab')).toBe('events.out.tfevents.1440183447.gpu-01.lab');
    expect(eventFileName(256.5, 'odd/host name')).toBe('events.out.tfevents.0000000256.odd_host_name');
  });
});

// ---- the writer ---------------------------------------------------------------

function metrics(epoch: number): EpochMetrics {
  return {
    epoch, lr: 0.1 / epoch, train_loss: 2 / epoch, train_acc: 0.3 * epoch, test_loss: 2.5 / epoch, test_acc: 0.25 * epoch,
    seconds: 3.25 + epoch, images_per_s: 300.5 * epoch, workers: 2,
  };
}

const TAGS = ['train/loss', 'train/accuracy', 'test/loss', 'test/accuracy', 'lr', 'images_per_s', 'epoch_seconds'];

describe('TensorboardLog', () => {
  test('writes a file_version event, then every epoch, each appended and readable at once', async () => {
    const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-tb-')), 'runs', 'tb');
    const lines: string[] = [];
    let clock = 1_700_000_000.25;
    const tb = (await TensorboardLog.open(dir, (l) => lines.push(l), () => clock))!;
    expect(lines).toEqual([`tensorboard: writing event files to ${dir}`]);
    const files = fs.readdirSync(dir);
    expect(files).toEqual([eventFileName(1_700_000_000)]);
    expect(files[0]).toMatch(/^events\.out\.tfevents\.1700000000\./);
    const file = path.join(dir, files[0]!);
    expect(tb.file).toBe(file);
    expect(readEvents(file)).toEqual([{ wall_time: 1_700_000_000.25, step: 0, file_version: 'brain.Event:2', summary: null }]);

    for (const epoch of [1, 2]) {
      clock += 10;
      tb.epoch(metrics(epoch));
      // Already on disk after each epoch (a crash loses at most the epoch being written).
      expect(readEvents(file)).toHaveLength(1 + epoch);
    }
    const events = readEvents(file);
    expect(events.slice(1).map((e) => [e.step, e.wall_time, e.file_version])).toEqual([
      [1, 1_700_000_010.25, ''], [2, 1_700_000_020.25, ''],
    ]);
    for (const e of events.slice(1)) {
      const m = metrics(e.step);
      expect(e.summary!.value.map((v) => v.tag)).toEqual(TAGS);
      const expected = [m.train_loss, m.train_acc, m.test_loss, m.test_acc, m.lr, m.images_per_s, m.seconds].map(Math.fround);
      expect(e.summary!.value.map((v) => v.simple_value)).toEqual(expected);
    }
    expect(epochScalars(metrics(1)).map(([tag]) => tag)).toEqual(TAGS);
  });

  test('a second run in the same second gets a file of its own', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-tb-'));
    const a = (await TensorboardLog.open(dir, () => {}, () => 1000))!;
    const b = (await TensorboardLog.open(dir, () => {}, () => 1000.5))!;
    expect(b.file).toBe(`${a.file}.1`);
    a.epoch(metrics(1));
    expect(readEvents(a.file)).toHaveLength(2);
    expect(readEvents(b.file)).toHaveLength(1);
  });

  test('a directory it cannot create: one line, no writer, the run goes on', async () => {
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-tb-'));
    fs.writeFileSync(path.join(parent, 'file'), '');
    const lines: string[] = [];
    expect(await TensorboardLog.open(path.join(parent, 'file', 'tb'), (l) => lines.push(l))).toBeNull();
    expect(lines).toEqual([expect.stringMatching(/^tensorboard: cannot write to .*; the same scalars are in metrics\.jsonl$/)]);
  });

  test('an append that fails is logged once, and the epochs after it are skipped', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-tb-'));
    const lines: string[] = [];
    const tb = (await TensorboardLog.open(dir, (l) => lines.push(l)))!;
    fs.rmSync(dir, { recursive: true });
    tb.epoch(metrics(1));
    tb.epoch(metrics(2));
    expect(lines.slice(1)).toEqual([expect.stringMatching(/^tensorboard: cannot append to .*no more events this run/)]);
  });

  test('loads no TensorFlow: the writer imports neither the backend module nor a @tensorflow package', () => {
    for (const f of ['tensorboard.ts', 'tfrecord.ts']) {
      const text = fs.readFileSync(path.join(root, 'src/common/io', f), 'utf8');
      const imports = [...text.matchAll(/from '([^']+)'/g)].map((m) => m[1]);
      expect(imports.filter((i) => /tensorflow|backend/.test(i!)), f).toEqual([]);
    }
  });
});

// ---- through the trainer, on wasm ------------------------------------------------

test('--tensorboard on the wasm backend writes the epoch to an event file', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-tb-'));
  const tbDir = path.join(out, 'tb');
  const lines: string[] = [];
  const result = await train({
    ...DEFAULTS, model: 'resnet18', width: 2, dataset: 'synthetic', trainLimit: 16, testLimit: 10, epochs: 1, batchSize: 16,
    backend: 'wasm', out, plots: false, loaderThreads: 1, tensorboard: tbDir,
  }, { log: (l) => lines.push(l) });
  expect(result.history).toHaveLength(1);
  const [m] = await readMetrics(path.join(out, 'metrics.jsonl'));
  expect(lines).toContainEqual(`tensorboard: writing event files to ${tbDir}`);
  const files = fs.readdirSync(tbDir);
  expect(files).toHaveLength(1);
  expect(files[0]).toMatch(/^events\.out\.tfevents\.\d{10}\./);
  const events = readEvents(path.join(tbDir, files[0]!));
  expect(events.map((e) => e.step)).toEqual([0, 1]);
  const values = Object.fromEntries(events[1]!.summary!.value.map((v) => [v.tag, v.simple_value]));
  expect(values['train/loss']).toBe(Math.fround(m!.train_loss));
  expect(values['test/accuracy']).toBe(Math.fround(m!.test_acc));
  expect(values.lr).toBe(Math.fround(m!.lr));
}, 120_000);

// ---- TensorBoard's own reader, where it is installed ---------------------------
