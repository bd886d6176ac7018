// Scaling of the real step machinery under GPU-class compute (issue 14).
// GPUs are not available here, so forward and backward are emulated
// (scripts/bench-step-rank.ts): each parameter's gradient is released when a
// GPU whose forward+backward takes --compute-ms would produce it (its
// layer's share of the FLOPs, model/flops.ts), and filled with real values.
// Everything after that is the real code: buckets, the communication thread,
// the ring over WebSockets on loopback, the optimizer's bucketed SGD and its
// commit. Ranks are worker threads of this process; each has its own
// communication thread.
//
//   node dist/scripts/bench-step.js [--workers 1,2,4] [--wire fp32,bf16] [--overlap on,off] \
//     [--compute-ms 150] [--model resnet50] [--width 64] [--batch 32] [--bucket-mb 25] \
//     [--steps 8] [--warmup 2] [--timeline runs/bench-step-trace.json] [--out runs/bench-step.json]
//
// Rows: {workers, link, wire, compressed, overlap, computeMs, stepMs, exposedCommMs, efficiency}, where stepMs
// and exposedCommMs (the time the step waits for sums after backward) are
// rank 0's medians, and efficiency = stepMs at N=1 / stepMs at N.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomInt } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { Command, Option } from 'commander';
import { choiceFlag, exitOnUsageError, intFlag, listFlag, numberFlag } from '../src/common/cli/flags.js';
import { runMain } from '../src/common/cli/run-main.js';
import { resolveWorkerScript } from '../src/common/fs/worker-script.js';
import { TraceFile, type TraceEvent } from '../src/common/io/timeline.js';
import { MODEL_NAMES, type ModelName } from '../src/common/model/spec.js';
import { WIRE_NAMES, type WireName } from '../src/common/allreduce/wire-format.js';
import { DEFAULT_BUCKET_CAP_MB } from '../src/common/allreduce/buckets.js';
import { median } from './timing-stats.js';
import type { RankMessage, RankTask } from './bench-step-rank.js';

const SCRIPT = fileURLToPath(import.meta.url);

export interface StepRow {
  workers: number;
  link: 'loopback';
  wire: WireName;
  compressed: boolean;
  overlap: boolean;
  computeMs: number;
  stepMs: number;
  exposedCommMs: number;
  efficiency: number;
  stepTimes: number[];
}

type Config = Omit<RankTask, 'rank' | 'worldSize' | 'tag' | 'wire' | 'overlap' | 'timeline'>;

/** One configuration: `workers` rank threads wired into a ring; rank 0's times and everyone's trace events. */
export async function measureStep(
  workers: number, wire: WireName, overlap: boolean, cfg: Config, timeline: boolean,
): Promise<{ stepTimes: number[]; exposed: number[]; events: TraceEvent[] }> {
  const script = resolveWorkerScript(import.meta.url, './bench-step-rank.js');
  const tag = randomInt(1, 0xffff_ffff);
  const threads = Array.from({ length: workers }, (_, rank) =>
    new Worker(script, { workerData: { ...cfg, rank, worldSize: workers, tag, wire, overlap, timeline } satisfies RankTask }));
  const addresses: unknown[] = new Array(workers);
  let listening = 0;
  const results = await Promise.all(threads.map((w, rank) => new Promise<Extract<RankMessage, { kind: 'result' }>>((done, fail) => {
    w.on('message', (m: RankMessage) => {
      if (m.kind === 'address') {
        addresses[rank] = m.address;
        // Once every rank listens, each is told its predecessor's address.
        if (++listening === workers) threads.forEach((t, r) => t.postMessage({ peer: addresses[(r - 1 + workers) % workers] }));
      } else if (m.kind === 'error') {
        fail(new Error(`rank ${m.rank}: ${m.message}`));
      } else {
        done(m);
      }
    });
    w.once('error', fail);
    w.once('exit', (code) => fail(new Error(`rank ${rank} exited (code ${code}) without a result`)));
  }))).finally(() => Promise.all(threads.map((t) => t.terminate())));
  return { stepTimes: results[0].stepMs, exposed: results[0].exposedMs, events: results.flatMap((r) => r.events) };
}

interface Options {
  workers: number[];
  wire: WireName[];
  overlap: string[];
  computeMs: number;
  model: ModelName;
  width: number;
  batch: number;
  bucketMb: number;
  steps: number;
  warmup: number;
  timeline?: string;
  out: string;
}

const program = exitOnUsageError(new Command('bench-step')
  .description('Step time and scaling efficiency of the real step machinery (buckets, communication thread, WebSocket ring, ' +
    'bucketed SGD) under emulated GPU compute; rows {workers, link, wire, compressed, overlap, computeMs, stepMs, exposedCommMs, efficiency}')
  .addOption(new Option('--workers <list>', 'rank counts (N=1 is the efficiency baseline and always runs)').argParser(listFlag(intFlag(1))).default([1, 2, 4], '1,2,4'))
  .addOption(new Option('--wire <list>', 'wire formats of the ring (bf16 and fp16 are compressed)')
    .argParser(listFlag(choiceFlag(WIRE_NAMES))).default(['fp32', 'bf16'], 'fp32,bf16'))
  .addOption(new Option('--overlap <list>', 'on: buckets reduced during backward; off: one all-reduce after it')
    .argParser(listFlag(choiceFlag(['on', 'off'] as const))).default(['on', 'off'], 'on,off'))
  .addOption(new Option('--compute-ms <ms>', 'emulated forward+backward per step (a GPU\'s, for ResNet50 at batch 32)').argParser(numberFlag(0, true)).default(150))
  .addOption(new Option('--model <name>', 'model whose parameters and FLOPs are used').choices([...MODEL_NAMES]).default('resnet50'))
  .addOption(new Option('--width <n>', 'base width').argParser(intFlag(1)).default(64))
  .addOption(new Option('--batch <n>', 'per-rank batch (scales the FLOPs only)').argParser(intFlag(1)).default(32))
  .addOption(new Option('--bucket-mb <mb>', 'bucket cap (the first bucket is 1 MB)').argParser(numberFlag(0, true)).default(DEFAULT_BUCKET_CAP_MB))
  .addOption(new Option('--steps <n>', 'timed steps per configuration').argParser(intFlag(1)).default(8))
  .addOption(new Option('--warmup <n>', 'untimed steps before them').argParser(intFlag(0)).default(2))
  .option('--timeline <file>', 'also write a Chrome trace of the largest overlapped configuration')
  .option('--out <file>', 'JSON report', 'runs/bench-step.json'));

if (process.argv[1] && resolve(process.argv[1]) === SCRIPT) {
  await runMain('bench-step', async () => {
    const opts = program.parse().opts<Options>();
    const cfg: Config = { model: opts.model, width: opts.width, batch: opts.batch, computeMs: opts.computeMs, bucketMb: opts.bucketMb, steps: opts.steps, warmup: opts.warmup };
    const rows: StepRow[] = [];
    const add = (workers: number, wire: WireName, overlap: boolean, stepTimes: number[], exposed: number[], base: number): StepRow => {
      const stepMs = median(stepTimes);
      const row: StepRow = {
        workers, link: 'loopback', wire, compressed: wire !== 'fp32', overlap, computeMs: opts.computeMs,
        stepMs, exposedCommMs: median(exposed), efficiency: base / stepMs, stepTimes,
      };
      rows.push(row);
      console.log(`N=${workers} ${wire}${row.compressed ? ' (compressed)' : ''} overlap ${overlap ? 'on ' : 'off'}: step ${stepMs.toFixed(1)} ms, ` +
        `exposed communication ${row.exposedCommMs.toFixed(1)} ms, efficiency ${(100 * row.efficiency).toFixed(1)}%`);
      return row;
    };
    const single = await measureStep(1, 'fp32', false, cfg, false);
    const base = add(1, 'fp32', false, single.stepTimes, single.exposed, median(single.stepTimes)).stepMs;
    const largest = Math.max(...opts.workers);
    let trace: TraceEvent[] = [];
    for (const workers of opts.workers.filter((w) => w > 1)) {
      for (const wire of opts.wire) {
        for (const overlap of opts.overlap.map((o) => o === 'on')) {
          const traced = Boolean(opts.timeline) && overlap && workers === largest && wire === opts.wire[0];
          const r = await measureStep(workers, wire, overlap, cfg, traced);
          if (traced) trace = r.events;
          add(workers, wire, overlap, r.stepTimes, r.exposed, base);
        }
      }
    }
    mkdirSync(dirname(opts.out), { recursive: true });
    writeFileSync(opts.out, JSON.stringify({
      when: new Date().toISOString(), model: opts.model, width: opts.width, batch: opts.batch, bucketMb: opts.bucketMb,
      note: 'ranks are threads of one process on this machine; N ranks share its cores', rows,
    }, null, 2));
    console.log(`wrote ${opts.out}`);
    if (opts.timeline && trace.length > 0) {
      const file = new TraceFile(opts.timeline);
      for (let r = 0; r < largest; r++) file.addRank(r);
      file.add(trace);
      console.log(`wrote ${await file.flush()}`);
    }
  });
}
