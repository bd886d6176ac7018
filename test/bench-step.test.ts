// scripts/bench-step's machinery at a small size: two rank threads, each with
// a communication thread and a WebSocket ring, under emulated compute. The
// trace it writes parses, names every track, and its bucket all-reduces
// overlap backward: communication is hidden behind compute. Overlap off
// has no bucket spans and waits for the whole all-reduce after backward.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { measureStep } from '../scripts/bench-step.js';
import { TraceFile, type TraceEvent } from '../src/common/io/timeline.js';

const cfg = { model: 'resnet18' as const, width: 8, batch: 8, computeMs: 120, bucketMb: 0.1, steps: 3, warmup: 1 };

const overlaps = (a: TraceEvent, b: TraceEvent) => a.ts < b.ts + b.dur! && b.ts < a.ts + a.dur!;

describe('bench-step', () => {
  test('N=2 with overlap: bucket all-reduces overlap backward in the written trace', async () => {
    const r = await measureStep(2, 'fp32', true, cfg, true);
    expect(r.stepTimes).toHaveLength(3);
    const file = new TraceFile(path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-trace-')), 'trace.json'));
    file.addRank(0);
    file.addRank(1);
    file.add(r.events);
    const parsed = JSON.parse(fs.readFileSync(await file.flush(), 'utf8')) as { traceEvents: TraceEvent[] };
    const names = parsed.traceEvents.filter((e) => e.name === 'thread_name').map((e) => e.args!.name);
    expect(names).toEqual(expect.arrayContaining(['rank 0 compute', 'rank 0 communication', 'rank 1 compute', 'rank 1 communication']));
    for (const rank of [0, 1]) {
      const mine = parsed.traceEvents.filter((e) => e.pid === rank && e.ph === 'X');
      const backward = mine.filter((e) => e.name === 'backward' && e.tid === 0);
      const buckets = mine.filter((e) => e.name.startsWith('allreduce bucket ') && e.tid === 1);
      expect(backward.length).toBe(4);
      expect(buckets.length).toBeGreaterThan(4 * 3);
      expect(buckets.some((b) => backward.some((w) => overlaps(b, w))), `rank ${rank}: a bucket during backward`).toBe(true);
      for (const kind of ['forward', 'optimizer', 'upload', 'commit wait']) expect(mine.some((e) => e.name === kind), kind).toBe(true);
    }
  }, 60_000);

  test('N=2 without overlap: one all-reduce after backward, exposed in full', async () => {
    const r = await measureStep(2, 'fp32', false, cfg, true);
    expect(r.events.some((e) => e.name.startsWith('allreduce bucket'))).toBe(false);
    expect(r.events.filter((e) => e.name === 'allreduce' && e.pid === 0)).toHaveLength(4);
    expect(Math.min(...r.exposed)).toBeGreaterThan(0);
  }, 60_000);
});
