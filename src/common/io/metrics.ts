// Per-epoch metrics: one JSON object per line in metrics.jsonl (easy to tail, grep and load
// with pandas.read_json(lines=True)), plus the console line in the seed's format.

import { open, readFile } from 'node:fs/promises';

/** One finished epoch. Field names are snake_case because they are written as-is to metrics.jsonl. */
export interface EpochMetrics {
  /** 1-based number of the epoch just finished. */
  epoch: number;
  /** Learning rate used during the epoch (its last value if scheduled per step). */
  lr: number;
  train_loss: number;
  train_acc: number;
  test_loss: number;
  test_acc: number;
  /** Wall time of the epoch (training plus evaluation). */
  seconds: number;
  /** Training throughput over all workers. */
  images_per_s: number;
  /** Workers at the end of the epoch (the group can shrink or grow during a run). */
  workers: number;
  /** Training images counted in the epoch: each image once, also across group changes. Absent in older files. */
  train_images?: number;
}

const NUMERIC_FIELDS = ['epoch', 'lr', 'train_loss', 'train_acc', 'test_loss', 'test_acc', 'seconds', 'images_per_s', 'workers'] as const;

/**
 * Appends one line and fsyncs it, so a crash right after an epoch does not lose that epoch's
 * record. A single write() of one short line in append mode lands whole on local file systems.
 */
export async function appendMetrics(file: string, m: EpochMetrics): Promise<void> {
  const handle = await open(file, 'a');
  try {
    await handle.write(`${JSON.stringify(m)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Reads metrics.jsonl. A partial last line (the process died while appending) is dropped;
 * any other malformed line is an error naming the file and line number. Non-finite values
 * are written by JSON.stringify as null and come back as NaN.
 */
export async function readMetrics(file: string): Promise<EpochMetrics[]> {
  const text = await readFile(file, 'utf8');
  const lines = text.split('\n');
  // Every record ends in a newline, so the last piece is '' unless an append was cut short.
  const complete = lines.slice(0, -1);
  const partial = lines[lines.length - 1];
  const out: EpochMetrics[] = [];
  complete.forEach((line, i) => {
    if (line.trim() === '') return;
    out.push(parseMetricsLine(line, `${file}:${i + 1}`));
  });
  if (partial.trim() !== '') {
    // Keep it only if it happens to be complete JSON (a file written without a final newline).
    try {
      out.push(parseMetricsLine(partial, `${file}:${lines.length}`));
    } catch {
      // An interrupted append: the epoch it described will be redone on resume.
    }
  }
  return out;
}

function parseMetricsLine(line: string, where: string): EpochMetrics {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    throw new Error(`${where}: not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${where}: expected a JSON object`);
  const record = value as Record<string, unknown>;
  const m = {} as Record<(typeof NUMERIC_FIELDS)[number], number>;
  for (const field of NUMERIC_FIELDS) {
    const v = record[field];
    if (v === null) m[field] = Number.NaN;
    else if (typeof v === 'number') m[field] = v;
    else throw new Error(`${where}: field "${field}" must be a number, got ${v === undefined ? 'nothing' : JSON.stringify(v)}`);
  }
  return { ...record, ...m } as EpochMetrics;
}

/**
 * The seed's console line, kept byte-compatible so logs from both implementations compare:
 * `epoches: 50 train_loss: 0.1613 train_acc: 0.9437  --> test_loss: 0.3568 test_acc: 0.8886  73.6s`
 * followed by learning rate and throughput.
 */
export function formatEpochLine(m: EpochMetrics): string {
  const f4 = (x: number) => x.toFixed(4);
  return (
    `epoches: ${m.epoch} train_loss: ${f4(m.train_loss)} train_acc: ${f4(m.train_acc)}  --> ` +
    `test_loss: ${f4(m.test_loss)} test_acc: ${f4(m.test_acc)}  ${m.seconds.toFixed(1)}s` +
    `  lr: ${formatLearningRate(m.lr)}  img/s: ${m.images_per_s.toFixed(1)}`
  );
}

/** Four significant digits: schedules go down to 1e-5 and fixed decimals would print 0.0000. */
function formatLearningRate(lr: number): string {
  return Number.isFinite(lr) ? String(Number(lr.toPrecision(4))) : String(lr);
}
