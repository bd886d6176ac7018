// scripts/bench-step's machinery at a small size: two rank threads, each with
// a communication thread and a WebSocket ring, under emulated compute. The
// trace it writes parses, names every track, and its bucket all-reduces
// overlap backward: communication is hidden behind compute. Overlap off
// has no bucket spans and waits for the whole all-reduce after backward.
// The same with each rank a child process (IPC channel instead of a worker
// port: how a rank runs inside a network namespace under --link netns), and
// the command's JSON rows with --ranks processes. --link netns itself needs
// root and creates system-wide namespaces (tfddp-*), so it is checked by
// hand (docs/BENCHMARKS.md), not here: two runs at once would share names.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, test } from 'vitest';
import { measureStep, type StepRow } from '../scripts/bench-step.js';
import { TraceFile, type TraceEvent } from '../src/common/io/timeline.js';
import { root, runScript } from './helpers/node-process.js';

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
    // tid 1: the communication thread's all-reduce (the step's wait for it is on the compute track).
    expect(r.events.filter((e) => e.name === 'allreduce' && e.pid === 0 && e.tid === 1)).toHaveLength(4);
    expect(Math.min(...r.exposed)).toBeGreaterThan(0);
  }, 60_000);

  test('N=2 as rank processes: the same trace, each rank from its own process', async () => {
    const r = await measureStep(2, 'fp32', true, cfg, true, { mode: 'processes' });
    expect(r.stepTimes).toHaveLength(3);
    for (const t of r.stepTimes) expect(t).toBeGreaterThanOrEqual(cfg.computeMs * 0.95);
    for (const rank of [0, 1]) {
      const mine = r.events.filter((e) => e.pid === rank && e.ph === 'X');
      const backward = mine.filter((e) => e.name === 'backward' && e.tid === 0);
      const buckets = mine.filter((e) => e.name.startsWith('allreduce bucket ') && e.tid === 1);
      expect(backward.length).toBe(4);
      expect(buckets.some((b) => backward.some((w) => overlaps(b, w))), `rank ${rank}: a bucket during backward`).toBe(true);
    }
  }, 60_000);

  test('the command with --ranks processes: one row per configuration, sane times', async () => {
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-bench-step-')), 'report.json');
    await runScript('bench-step.js', ['--workers', '2', '--wire', 'fp32', '--overlap', 'on', '--ranks', 'processes',
      '--model', 'resnet18', '--width', '8', '--batch', '8', '--compute-ms', '120', '--bucket-mb', '0.1', '--steps', '3', '--warmup', '1', '--out', out]);
    const report = JSON.parse(fs.readFileSync(out, 'utf8')) as { rows: StepRow[]; note: string };
    expect(report.note).toMatch(/loopback ranks are processes/);
    expect(report.rows.map((r) => [r.workers, r.link, r.ranks, r.wire, r.overlap])).toEqual([
      [1, 'loopback', 'threads', 'fp32', false],
      [2, 'loopback', 'processes', 'fp32', true],
    ]);
    for (const row of report.rows) {
      expect(row.stepTimes).toHaveLength(3);
      expect(row.computeMs).toBe(120);
      expect(row.stepMs).toBeGreaterThanOrEqual(120 * 0.95);
      expect(row.exposedCommMs).toBeGreaterThanOrEqual(0);
      expect(row.exposedCommMs).toBeLessThan(row.stepMs);
      expect(row.efficiency).toBeCloseTo(report.rows[0].stepMs / row.stepMs, 9);
    }
    expect(report.rows[0].efficiency).toBe(1);
    expect(report.rows[1].efficiency).toBeGreaterThan(0.3);
    expect(report.rows[1].efficiency).toBeLessThan(1.1);
  }, 60_000);

  test('a bad --rate is a usage error naming it, before any measurement', async () => {
    const run = promisify(execFile)(process.execPath, [path.join(root, 'dist/scripts/bench-step.js'), '--link', 'netns', '--rate', 'fast'], { cwd: root });
    await expect(run).rejects.toMatchObject({ code: 2, stderr: expect.stringMatching(/--rate.*10gbit/) });
  });
});
