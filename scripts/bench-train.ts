// Training throughput, measured side by side in one run so ratios are fair on
// a noisy machine:
//
//   1. one replica per backend in this process (wasm with and without SIMD,
//      cpu): forward+backward and optimizer+upload per step;
//   2. real runs through the coordinator with 1 and 2 local wasm workers,
//      per-worker batch 32, with the step-time breakdown the workers report
//      (data wait, forward+backward, all-reduce, optimizer);
//   3. the same ResNet18 in PyTorch on 2 threads, where python3-torch is
//      installed (Debian: apt-get install python3-torch), and our ratio to it.
//
//   npx tsc -p . && node dist/scripts/bench-train.js \
//     [--widths 16,64] [--batch 32] [--steps 4] [--cpu-steps 1] [--workers 1,2] [--python /usr/bin/python3]
//
// Writes runs/bench-train.json. The first step of every measurement is a
// warm-up (kernel set-up) and is not timed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, describeBackend } from '../src/common/backend/backend.js';
import { buildModelSpec, initParams, initRunningStats } from '../src/common/model/spec.js';
import { Replica } from '../src/common/model/replica.js';
import { sgdStep, updateRunningStats } from '../src/common/optim/sgd.js';
import { Rng } from '../src/common/data/rng.js';
import { DEFAULTS } from '../src/common/training/config.js';
import { runCoordinator, type StepBreakdown } from '../src/coordinator/coordinator.js';
import type { BackendName } from '../src/common/backend/names.js';
import { measurePeakRss } from './peak-rss.js';

const { values } = parseArgs({
  options: {
    widths: { type: 'string', default: '16,64' },
    batch: { type: 'string', default: '32' },
    steps: { type: 'string', default: '4' },
    'cpu-steps': { type: 'string', default: '1' },
    workers: { type: 'string', default: '1,2' },
    python: { type: 'string', default: '/usr/bin/python3' },
    // Internal: part 1 for one backend in a fresh process (SIMD is fixed when wasm loads).
    'replica-only': { type: 'string' },
    'no-simd': { type: 'boolean', default: false },
    width: { type: 'string' },
  },
});
const batchSize = Number(values.batch);
const widths = values.widths!.split(',').map(Number);
const steps = Number(values.steps);
const here = path.dirname(fileURLToPath(import.meta.url));

interface ReplicaRow {
  backend: string; width: number; msPerStep: number; imagesPerS: number; gradMs: number; optimMs: number;
  /** Peak RSS of the configuration's own process; live tensors and their MB after the last step. */
  peakRssMb: number; tensors: number; tensorMb: number;
}

/** Part 1 in this process: one replica, synthetic batch, `timed` steps after one warm-up step. */
async function timeReplica(backend: BackendName, width: number, timed: number): Promise<ReplicaRow> {
  await initBackend(backend);
  const spec = buildModelSpec({ name: 'resnet18', width, numClasses: 10, inChannels: 3, norm: 'batch' });
  const rng = new Rng(1);
  const batch = {
    x: Float32Array.from({ length: batchSize * 32 * 32 * 3 }, () => rng.nextFloat() * 2 - 1),
    y: Int32Array.from({ length: batchSize }, () => rng.nextInt(10)),
    count: batchSize,
  };
  const weights = initParams(spec, () => rng.nextFloat());
  const momentum = new Float32Array(spec.paramCount);
  const running = initRunningStats(spec);
  const grad = new Float32Array(spec.paramCount);
  const replica = new Replica(spec, weights);
  let gradMs = 0;
  let optimMs = 0;
  for (let step = 0; step <= timed; step++) {
    const t0 = performance.now();
    const res = replica.computeGradients(batch, 1 / batchSize, grad);
    const t1 = performance.now();
    sgdStep(weights, grad, momentum, { lr: 0.01, momentum: 0.9, weightDecay: 5e-4 }, step === 0);
    updateRunningStats(running, res.batchStats!);
    replica.setWeights(weights);
    const t2 = performance.now();
    if (step > 0) {
      gradMs += t1 - t0;
      optimMs += t2 - t1;
    }
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

if (values['replica-only']) {
  // Child mode: print one JSON row and exit.
  if (values['no-simd']) {
    await import('@tensorflow/tfjs-backend-wasm'); // registers the flag; the backend initialises later
    tf.env().set('WASM_HAS_SIMD_SUPPORT', false);
  }
  const row = await timeReplica(values['replica-only'] as BackendName, Number(values.width), Number(values.steps));
  console.log(JSON.stringify(row));
  process.exit(0);
}

function childReplica(backend: BackendName, width: number, timed: number, noSimd = false): ReplicaRow {
  const args = [fileURLToPath(import.meta.url), '--replica-only', backend, '--width', String(width), '--steps', String(timed), '--batch', String(batchSize)];
  if (noSimd) args.push('--no-simd');
  const out = execFileSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 20 });
  return JSON.parse(out.trim().split('\n').at(-1)!) as ReplicaRow;
}

console.log(`machine: ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores; resnet18, batch ${batchSize} per replica\n`);

// Part 1.
const replicaRows: ReplicaRow[] = [];
for (const width of widths) {
  replicaRows.push(childReplica('wasm', width, steps));
  replicaRows.push(childReplica('wasm', width, steps, true));
}
// cpu only at the smallest width: a width-64 step takes tens of minutes there.
replicaRows.push(childReplica('cpu', Math.min(...widths), Number(values['cpu-steps'])));
console.log('1. one replica, in one process');
console.log('backend                      width   ms/step    img/s  fwd+bwd ms  sgd+upload ms  peak RSS MB  tensors  tensor MB');
for (const r of replicaRows) {
  console.log(`${r.backend.padEnd(28)} ${String(r.width).padStart(5)} ${r.msPerStep.toFixed(1).padStart(9)} ${r.imagesPerS.toFixed(1).padStart(8)} ` +
    `${r.gradMs.toFixed(1).padStart(11)} ${r.optimMs.toFixed(1).padStart(14)} ${r.peakRssMb.toFixed(0).padStart(12)} ${String(r.tensors).padStart(8)} ` +
    `${r.tensorMb.toFixed(1).padStart(10)}`);
}

// Part 2.
interface RunRow {
  width: number; workers: number; imagesPerS: number; breakdown: StepBreakdown; dataWaitShare: number;
  /** Peak RSS of this process (coordinator and worker threads) during the run; the most tensors and tensor MB one worker held. */
  peakRssMb: number; tensors: number; tensorMb: number;
}
const runRows: RunRow[] = [];
for (const width of widths) {
  for (const workers of values.workers!.split(',').map(Number)) {
    const timedSteps = width >= 64 ? Math.max(2, Math.ceil(steps / 2)) : steps;
    const { result, peakRssMb } = await measurePeakRss(() => runCoordinator({
      ...DEFAULTS, model: 'resnet18', width, dataset: 'synthetic', backend: 'wasm', batchSize,
      trainLimit: 4096, testLimit: 10, epochs: 1, maxSteps: timedSteps + 1, plots: false,
      out: fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-bench-')),
    }, { workers, port: 0, perWorkerBatch: true, dashboard: false }));
    const b = result.breakdown;
    const stepMs = b.dataMs + b.gradMs + b.reduceMs + b.optimMs;
    runRows.push({
      width, workers, imagesPerS: (1000 * batchSize * workers) / stepMs, breakdown: b, dataWaitShare: result.dataWaitShare,
      peakRssMb, tensors: result.peakTensors, tensorMb: result.peakTensorBytes / 2 ** 20,
    });
  }
}
console.log('\n2. training runs through the coordinator (wasm, per-worker batch 32, synthetic data)');
console.log('width  workers    img/s  data wait ms  fwd+bwd ms  all-reduce ms  optimizer ms  data wait %  peak RSS MB  tensors/worker  tensor MB/worker');
for (const r of runRows) {
  const b = r.breakdown;
  console.log(`${String(r.width).padStart(5)} ${String(r.workers).padStart(8)} ${r.imagesPerS.toFixed(1).padStart(8)} ${b.dataMs.toFixed(1).padStart(13)} ` +
    `${b.gradMs.toFixed(1).padStart(11)} ${b.reduceMs.toFixed(1).padStart(14)} ${b.optimMs.toFixed(1).padStart(13)} ${(100 * r.dataWaitShare).toFixed(1).padStart(12)} ` +
    `${r.peakRssMb.toFixed(0).padStart(12)} ${String(r.tensors).padStart(15)} ${r.tensorMb.toFixed(1).padStart(17)}`);
}

// Part 3.
interface TorchRow { width: number; images_per_s: number; ms_per_step: number; torch: string }
const torchRows: TorchRow[] = [];
try {
  for (const width of widths) {
    const out = execFileSync(values.python!, [path.resolve(here, '../../scripts/torch_resnet_bench.py'), '--width', String(width), '--batch', String(batchSize),
      '--threads', '2', '--steps', String(width >= 64 ? Math.max(2, Math.ceil(steps / 2)) : steps)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    torchRows.push(JSON.parse(out.trim().split('\n').at(-1)!) as TorchRow);
  }
} catch (err) {
  console.log(`\n3. PyTorch: not measured (${(err as Error).message.split('\n')[0]}); install python3-torch to compare`);
}
if (torchRows.length > 0) {
  console.log(`\n3. PyTorch ${torchRows[0].torch}, same ResNet18, 2 threads, batch ${batchSize}`);
  console.log('width  torch img/s  best tfjs-ddp img/s (workers)  ratio');
  for (const t of torchRows) {
    const best = runRows.filter((r) => r.width === t.width).sort((a, b) => b.imagesPerS - a.imagesPerS)[0];
    console.log(`${String(t.width).padStart(5)} ${t.images_per_s.toFixed(1).padStart(12)} ${best.imagesPerS.toFixed(1).padStart(20)} (${best.workers}) ` +
      `${(100 * best.imagesPerS / t.images_per_s).toFixed(0).padStart(12)}%`);
  }
}

fs.mkdirSync('runs', { recursive: true });
fs.writeFileSync('runs/bench-train.json', JSON.stringify({ batchSize, replicaRows, runRows, torchRows }, null, 2));
console.log('\nwrote runs/bench-train.json');
