// Training throughput, measured side by side in one run so ratios are fair on
// a noisy machine:
//
//   1. one replica per backend in this process (wasm with and without SIMD,
//      cpu): forward+backward and optimizer+upload per step;
//   2. real runs through the coordinator with 1 and 2 local wasm workers,
//      per-worker batch 32, with the step-time breakdown the workers report
//      (data wait, forward+backward, all-reduce, optimizer); with several
//      workers, once with the gradient buckets reduced during backward
//      (overlap on, the default) and once with one all-reduce after it;
//   3. the same ResNet18 in PyTorch on 2 threads, where python3-torch is
//      installed (Debian: apt-get install python3-torch), and our ratio to it.
//
//   npx tsc -p . && node dist/scripts/bench-train.js \
//     [--widths 16,64] [--batch 32] [--steps 4] [--cpu-steps 1] [--workers 1,2] [--overlap on,off] [--python /usr/bin/python3]
//
// Writes runs/bench-train.json. The first step of every measurement is a
// warm-up (kernel set-up) and is not timed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, describeBackend } from '../src/common/backend/backend.js';
import { seededStep } from './seeded-step.js';
import { DEFAULTS } from '../src/common/training/config.js';
import { choiceFlag, exitOnUsageError, intFlag, listFlag } from '../src/common/cli/flags.js';
import { runMain } from '../src/common/cli/run-main.js';
import { runCoordinator, type StepBreakdown } from '../src/coordinator/coordinator.js';
import type { BackendName } from '../src/common/backend/names.js';
import { measurePeakRss } from './peak-rss.js';

const program = exitOnUsageError(new Command('bench-train')
  .description('Training images/s: one replica per backend, 1 and 2 coordinator workers, and PyTorch where installed; writes runs/bench-train.json')
  .addOption(new Option('--widths <list>', 'ResNet18 base widths').argParser(listFlag(intFlag(1))).default([16, 64], '16,64'))
  .addOption(new Option('--batch <n>', 'batch per replica').argParser(intFlag(1)).default(32))
  .addOption(new Option('--steps <n>', 'timed steps per measurement (after one warm-up step)').argParser(intFlag(1)).default(4))
  .addOption(new Option('--cpu-steps <n>', 'timed steps on the cpu backend (slow; 0 skips it)').argParser(intFlag(0)).default(1))
  .addOption(new Option('--workers <list>', 'coordinator runs with these worker counts').argParser(listFlag(intFlag(1))).default([1, 2], '1,2'))
  .addOption(new Option('--overlap <list>', 'runs of several workers with buckets during backward (on) and one all-reduce after it (off)')
    .argParser(listFlag(choiceFlag(['on', 'off'] as const))).default(['on', 'off'], 'on,off'))
  .option('--python <path>', 'python with torch, for the PyTorch comparison', '/usr/bin/python3')
  // Internal: part 1 for one backend in a fresh process (SIMD is fixed when wasm loads).
  .addOption(new Option('--replica-only <backend>').choices(['wasm', 'cpu', 'tensorflow']).hideHelp())
  .addOption(new Option('--width <n>').argParser(intFlag(1)).hideHelp())
  .addOption(new Option('--no-simd').hideHelp()));

interface BenchOptions {
  widths: number[]; batch: number; steps: number; cpuSteps: number; workers: number[]; overlap: ('on' | 'off')[]; python: string;
  replicaOnly?: BackendName; width?: number; simd: boolean;
}

const here = path.dirname(fileURLToPath(import.meta.url));

interface ReplicaRow {
  backend: string; width: number; msPerStep: number; imagesPerS: number; gradMs: number; optimMs: number;
  /** Peak RSS of the configuration's own process; live tensors and their MB after the last step. */
  peakRssMb: number; tensors: number; tensorMb: number;
}

/** Part 1 in this process: one replica, synthetic batch, `timed` steps (step.ts, no exchange) after one warm-up step. */
async function timeReplica(backend: BackendName, width: number, timed: number, batchSize: number): Promise<ReplicaRow> {
  await initBackend(backend);
  const { replica, step, batch } = seededStep('resnet18', width, batchSize);
  let gradMs = 0;
  let optimMs = 0;
  for (let i = 0; i <= timed; i++) {
    const r = await step.run(batch, batchSize, 0.01);
    if (i === 0) continue;
    gradMs += r.gradMs;
    optimMs += r.stepMs - r.gradMs - r.reduceMs;
  }
  const { numTensors, numBytes } = tf.memory();
  replica.dispose();
  const msPerStep = (gradMs + optimMs) / timed;
  return {
    backend: describeBackend(), width, msPerStep, imagesPerS: (batchSize * 1000) / msPerStep, gradMs: gradMs / timed, optimMs: optimMs / timed,
    // Each configuration runs in a process of its own, so the process's peak is the configuration's (maxRSS is in KiB).
    peakRssMb: process.resourceUsage().maxRSS / 1024, tensors: numTensors, tensorMb: numBytes / 2 ** 20,
  };
}

/** Child mode: one replica row as one JSON line. */
async function replicaOnly(backend: BackendName, o: BenchOptions): Promise<void> {
  if (!o.simd) {
    await import('@tensorflow/tfjs-backend-wasm'); // registers the flag; the backend initialises later
    tf.env().set('WASM_HAS_SIMD_SUPPORT', false);
  }
  if (o.width === undefined) throw new Error('--replica-only needs --width');
  console.log(JSON.stringify(await timeReplica(backend, o.width, o.steps, o.batch)));
}

function childReplica(backend: BackendName, width: number, timed: number, batchSize: number, noSimd = false): ReplicaRow {
  const args = [fileURLToPath(import.meta.url), '--replica-only', backend, '--width', String(width), '--steps', String(timed), '--batch', String(batchSize)];
  if (noSimd) args.push('--no-simd');
  const out = execFileSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 20 });
  return JSON.parse(out.trim().split('\n').at(-1)!) as ReplicaRow;
}

/** Part 1: one replica per backend, each in a fresh process. */
function benchReplicas(o: BenchOptions): ReplicaRow[] {
  const rows: ReplicaRow[] = [];
  for (const width of o.widths) {
    rows.push(childReplica('wasm', width, o.steps, o.batch));
    rows.push(childReplica('wasm', width, o.steps, o.batch, true));
  }
  // cpu only at the smallest width: a width-64 step takes tens of minutes there.
  if (o.cpuSteps > 0) rows.push(childReplica('cpu', Math.min(...o.widths), o.cpuSteps, o.batch));
  console.log('1. one replica, in one process');
  console.log('backend                      width   ms/step    img/s  fwd+bwd ms  sgd+upload ms  peak RSS MB  tensors  tensor MB');
  for (const r of rows) {
    console.log(`${r.backend.padEnd(28)} ${String(r.width).padStart(5)} ${r.msPerStep.toFixed(1).padStart(9)} ${r.imagesPerS.toFixed(1).padStart(8)} ` +
      `${r.gradMs.toFixed(1).padStart(11)} ${r.optimMs.toFixed(1).padStart(14)} ${r.peakRssMb.toFixed(0).padStart(12)} ${String(r.tensors).padStart(8)} ` +
      `${r.tensorMb.toFixed(1).padStart(10)}`);
  }
  return rows;
}

interface RunRow {
  width: number; workers: number;
  /** Gradient buckets reduced during backward (false for one worker, which has no exchange). */
  overlap: boolean;
  imagesPerS: number; breakdown: StepBreakdown; dataWaitShare: number;
  /** Peak RSS of this process (coordinator and worker threads) during the run; the most tensors and tensor MB one worker held. */
  peakRssMb: number; tensors: number; tensorMb: number;
}

/** Fewer timed steps at width 64, where a step takes seconds. */
const timedSteps = (o: BenchOptions, width: number): number => (width >= 64 ? Math.max(2, Math.ceil(o.steps / 2)) : o.steps);

/** Part 2: real runs through the coordinator, with the step-time breakdown the workers report. */
async function benchRuns(o: BenchOptions): Promise<RunRow[]> {
  const rows: RunRow[] = [];
  for (const width of o.widths) {
    for (const workers of o.workers) {
      for (const overlap of workers === 1 ? [false] : o.overlap.map((v) => v === 'on')) {
        const { result, peakRssMb } = await measurePeakRss(() => runCoordinator({
          ...DEFAULTS, model: 'resnet18', width, dataset: 'synthetic', backend: 'wasm', batchSize: o.batch,
          trainLimit: 4096, testLimit: 10, epochs: 1, maxSteps: timedSteps(o, width) + 1, plots: false, overlap,
          out: fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-bench-')),
        }, { workers, port: 0, perWorkerBatch: true, dashboard: false }));
        const b = result.breakdown;
        const stepMs = b.dataMs + b.gradMs + b.reduceMs + b.optimMs;
        rows.push({
          width, workers, overlap, imagesPerS: (1000 * o.batch * workers) / stepMs, breakdown: b, dataWaitShare: result.dataWaitShare,
          peakRssMb, tensors: result.peakTensors, tensorMb: result.peakTensorBytes / 2 ** 20,
        });
      }
    }
  }
  console.log(`\n2. training runs through the coordinator (wasm, per-worker batch ${o.batch}, synthetic data)`);
  console.log('(all-reduce ms with overlap: what the step still waits for after backward)');
  console.log('width  workers  overlap    img/s  data wait ms  fwd+bwd ms  all-reduce ms  optimizer ms  data wait %  peak RSS MB  tensors/worker  tensor MB/worker');
  for (const r of rows) {
    const b = r.breakdown;
    console.log(`${String(r.width).padStart(5)} ${String(r.workers).padStart(8)} ${(r.workers === 1 ? '-' : r.overlap ? 'on' : 'off').padStart(8)} ` +
      `${r.imagesPerS.toFixed(1).padStart(8)} ${b.dataMs.toFixed(1).padStart(13)} ` +
      `${b.gradMs.toFixed(1).padStart(11)} ${b.reduceMs.toFixed(1).padStart(14)} ${b.optimMs.toFixed(1).padStart(13)} ${(100 * r.dataWaitShare).toFixed(1).padStart(12)} ` +
      `${r.peakRssMb.toFixed(0).padStart(12)} ${String(r.tensors).padStart(15)} ${r.tensorMb.toFixed(1).padStart(17)}`);
  }
  return rows;
}

interface TorchRow { width: number; images_per_s: number; ms_per_step: number; torch: string }

/** Part 3: the same ResNet18 in PyTorch, where it is installed, against our best run of each width. */
function benchTorch(o: BenchOptions, runRows: RunRow[]): TorchRow[] {
  const rows: TorchRow[] = [];
  try {
    for (const width of o.widths) {
      const out = execFileSync(o.python, [path.resolve(here, '../../scripts/torch_resnet_bench.py'), '--width', String(width), '--batch', String(o.batch),
        '--threads', '2', '--steps', String(timedSteps(o, width))], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      rows.push(JSON.parse(out.trim().split('\n').at(-1)!) as TorchRow);
    }
  } catch (err) {
    console.log(`\n3. PyTorch: not measured (${(err as Error).message.split('\n')[0]}); install python3-torch to compare`);
  }
  if (rows.length === 0) return rows;
  console.log(`\n3. PyTorch ${rows[0].torch}, same ResNet18, 2 threads, batch ${o.batch}`);
  console.log('width  torch img/s  best tfjs-ddp img/s (workers)  ratio');
  for (const t of rows) {
    const best = runRows.filter((r) => r.width === t.width).sort((a, b) => b.imagesPerS - a.imagesPerS)[0];
    console.log(`${String(t.width).padStart(5)} ${t.images_per_s.toFixed(1).padStart(12)} ${best.imagesPerS.toFixed(1).padStart(20)} (${best.workers}) ` +
      `${(100 * best.imagesPerS / t.images_per_s).toFixed(0).padStart(12)}%`);
  }
  return rows;
}

await runMain('bench-train', async () => {
  program.parse();
  const o = program.opts<BenchOptions>();
  if (o.replicaOnly) {
    await replicaOnly(o.replicaOnly, o);
    // The wasm backend's threads would keep the child alive.
    process.exit(0);
  }
  console.log(`machine: ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores; resnet18, batch ${o.batch} per replica\n`);
  const replicaRows = benchReplicas(o);
  const runRows = await benchRuns(o);
  const torchRows = benchTorch(o, runRows);
  fs.mkdirSync('runs', { recursive: true });
  fs.writeFileSync('runs/bench-train.json', JSON.stringify({ batchSize: o.batch, replicaRows, runRows, torchRows }, null, 2));
  console.log('\nwrote runs/bench-train.json');
});
