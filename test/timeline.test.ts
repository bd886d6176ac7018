// The --timeline trace (src/common/io/timeline.ts): spans on a rank's compute
// and communication tracks, written as a Chrome trace that parses as JSON,
// with µs times on one clock across threads, the tracks named, bounded
// memory with every drop noted, and a compact form for protocol messages.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import {
  Timeline, TraceFile, clockMs, mergeTraces, packEvents, rankMetadata, unpackEvents, type TraceEvent,
} from '../src/common/io/timeline.js';
import { makeTempDir } from './helpers/data-fixtures.js';
import { root } from './helpers/node-process.js';

const dir = makeTempDir('timeline');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const read = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8')) as {
  traceEvents: TraceEvent[]; displayTimeUnit: string; otherData: { droppedEvents: number };
};

describe('timeline', () => {
  it('writes spans of two tracks, overlapping, as complete events in µs with named tracks', async () => {
    const compute = new Timeline(1);
    const comm = new Timeline(1);
    const t0 = clockMs();
    compute.span('compute', 'forward', t0, t0 + 10);
    compute.span('compute', 'backward', t0 + 10, t0 + 30);
    // Bucket 0 is summed while backward still runs: the overlap the trace is there to show.
    comm.span('communication', 'allreduce bucket 0', t0 + 20, t0 + 35, { bucket: 0, seq: 7, bytes: 1_048_576, elements: 262_144 });
    compute.span('compute', 'optimizer', t0 + 35, t0 + 38);
    // time() around a promise ends the span when it settles.
    await compute.time('compute', 'upload', () => sleep(5), { bytes: 4 });
    const file = new TraceFile(path.join(dir, 'sub', 'trace.json'));
    file.addRank(1);
    file.addRank(1); // idempotent
    compute.absorb(comm.drain());
    file.add(compute.drain());
    const written = await file.flush();
    expect(written).toBe(path.join(dir, 'sub', 'trace.json'));
    expect(fs.readdirSync(path.join(dir, 'sub'))).toEqual(['trace.json']); // no temp file left

    const trace = read(written);
    expect(trace.displayTimeUnit).toBe('ms');
    expect(trace.otherData.droppedEvents).toBe(0);
    const meta = trace.traceEvents.filter((e) => e.ph === 'M');
    expect(meta).toEqual(rankMetadata(1));
    const threadName = (tid: number) => meta.find((e) => e.name === 'thread_name' && e.tid === tid)?.args?.name;
    expect(threadName(0)).toBe('rank 1 compute');
    expect(threadName(1)).toBe('rank 1 communication');
    expect(meta.find((e) => e.name === 'process_name')?.args?.name).toBe('rank 1');

    const all = trace.traceEvents.filter((e) => e.ph === 'X');
    const upload = all.find((e) => e.name === 'upload')!;
    expect(upload.dur!).toBeGreaterThanOrEqual(4_000);
    expect(upload.ts).toBeGreaterThanOrEqual(t0 * 1000);
    expect(upload.args).toEqual({ bytes: 4 });
    const spans = all.filter((e) => e !== upload);
    expect(spans.map((e) => [e.name, e.pid, e.tid, e.cat])).toEqual([
      ['forward', 1, 0, 'compute'], ['backward', 1, 0, 'compute'], ['allreduce bucket 0', 1, 1, 'communication'], ['optimizer', 1, 0, 'compute'],
    ]);
    const [forward, backward, bucket, optimizer] = spans;
    expect(forward.ts).toBeCloseTo(t0 * 1000, 0);
    expect(forward.dur).toBeCloseTo(10_000, 3);
    expect(backward.ts - forward.ts).toBeCloseTo(10_000, 0);
    expect(bucket.args).toEqual({ bucket: 0, seq: 7, bytes: 1_048_576, elements: 262_144 });
    // Overlap: the bucket starts before backward ends and ends after it.
    expect(bucket.ts).toBeLessThan(backward.ts + backward.dur!);
    expect(bucket.ts + bucket.dur!).toBeGreaterThan(backward.ts + backward.dur!);
    expect(optimizer.ts - (bucket.ts + bucket.dur!)).toBeCloseTo(0, 0);
  });

  it('lines up a span recorded in a worker thread with the main thread, on the same clock', async () => {
    // The worker loads the compiled module, as a communication thread would.
    const url = pathToFileURL(path.join(root, 'dist/src/common/io/timeline.js')).href;
    const worker = new Worker(`
      const { parentPort } = require('node:worker_threads');
      import(${JSON.stringify(url)}).then(({ Timeline, clockMs }) => {
        const timeline = new Timeline(0);
        parentPort.on('message', () => {
          const start = clockMs();
          while (clockMs() - start < 5);
          timeline.span('communication', 'allreduce bucket 0', start, clockMs(), { bucket: 0 });
          parentPort.postMessage(timeline.drain());
        });
        parentPort.postMessage('ready');
      });`, { eval: true });
    try {
      const reply = () => new Promise<unknown>((resolve, reject) => { worker.once('message', resolve); worker.once('error', reject); });
      expect(await reply()).toBe('ready');
      const main = new Timeline(0);
      const end = main.begin('compute', 'backward');
      const sent = clockMs();
      const events = reply();
      worker.postMessage('go');
      const theirs = (await events) as TraceEvent[];
      const received = clockMs();
      end();
      const [backward] = main.drain();
      const [bucket] = theirs;
      expect(bucket.tid).toBe(1);
      // The worker's span lies inside the message's round trip, hence inside backward; 1 ms of slack for the clocks' rounding.
      expect(bucket.ts).toBeGreaterThanOrEqual(sent * 1000 - 1000);
      expect(bucket.ts + bucket.dur!).toBeLessThanOrEqual(received * 1000 + 1000);
      expect(bucket.ts).toBeGreaterThanOrEqual(backward.ts - 1000);
      expect(bucket.ts + bucket.dur!).toBeLessThanOrEqual(backward.ts + backward.dur! + 1000);
      expect(bucket.dur!).toBeGreaterThanOrEqual(5_000);
    } finally {
      await worker.terminate();
    }
  });

  it('keeps the first maxEvents spans and notes how many it dropped, in a thread and in the file', async () => {
    const timeline = new Timeline(0, { maxEvents: 3 });
    for (let i = 0; i < 5; i++) timeline.span('compute', `step ${i}`, 1000 + i, 1000.5 + i);
    expect(timeline.dropped).toBe(2);
    const drained = timeline.drain();
    expect(drained.map((e) => e.name)).toEqual(['step 0', 'step 1', 'step 2', 'timeline dropped events']);
    expect(drained[3]).toMatchObject({ ph: 'i', ts: 1003_000, args: { dropped: 2 } });
    expect(timeline.drain()).toEqual([]); // the note is made once per drain

    const file = new TraceFile(path.join(dir, 'capped.json'), { maxEvents: 2 });
    file.add(drained); // two kept, the third dropped; the rank's own note is kept
    file.add([{ name: 'late', ph: 'X', ts: 9e6, dur: 1, pid: 0, tid: 0 }]);
    expect(file.dropped).toBe(2);
    const trace = read(await file.flush());
    expect(trace.otherData.droppedEvents).toBe(2);
    const notes = trace.traceEvents.filter((e) => e.name === 'timeline dropped events').map((e) => e.args?.dropped);
    expect(notes.sort()).toEqual([2, 2]);
    expect(trace.traceEvents.filter((e) => e.ph === 'X').map((e) => e.name)).toEqual(['step 0', 'step 1']);
  });

  it('rewrites the file at each flush, and a failed write leaves the last good one', async () => {
    const target = path.join(dir, 'flush.json');
    const file = new TraceFile(target);
    file.add([{ name: 'forward', ph: 'X', ts: 1, dur: 1, pid: 0, tid: 0 }]);
    await file.flush();
    file.add([{ name: 'backward', ph: 'X', ts: 2, dur: 1, pid: 0, tid: 0 }]);
    await file.flush();
    expect(read(target).traceEvents.map((e) => e.name)).toEqual(['forward', 'backward']);
    // A directory where the file should go: the write fails, and the error says so.
    const blocked = new TraceFile(path.join(target, 'inner.json'));
    await expect(blocked.flush()).rejects.toThrow();
    expect(read(target).traceEvents).toHaveLength(2);
  });

  it('merges ranks with each metadata event once, the rest by time, and packs events losslessly', () => {
    const r0: TraceEvent[] = [...rankMetadata(0), { name: 'forward', ph: 'X', ts: 20, dur: 5, pid: 0, tid: 0, cat: 'compute' }];
    const r1: TraceEvent[] = [...rankMetadata(1), ...rankMetadata(0), { name: 'allreduce bucket 2', ph: 'X', ts: 10, dur: 7.25, pid: 1, tid: 1, cat: 'communication', args: { bucket: 2, seq: 3, bytes: 8, elements: 2 } }];
    const merged = mergeTraces(r0, r1);
    expect(merged.filter((e) => e.ph === 'M')).toHaveLength(2 * rankMetadata(0).length);
    expect(merged.filter((e) => e.ph !== 'M').map((e) => e.ts)).toEqual([10, 20]);

    const events = [...r1, { name: 'timeline dropped events', ph: 'i', s: 't', ts: 30, pid: 1, tid: 0, cat: 'timeline', args: { dropped: 4 } } as TraceEvent];
    const packed = packEvents(events);
    // Names are sent once: the metadata's repeated names share a string.
    expect(packed.strings.filter((s) => s === 'thread_name')).toHaveLength(1);
    expect(unpackEvents(JSON.parse(JSON.stringify(packed)) as typeof packed)).toEqual(events);
    expect(() => unpackEvents({ ...packed, columns: packed.columns.slice(1) })).toThrow(/do not match/);
  });
});
