// The first command to run on a machine with GPUs: does the native backend
// load and see a GPU, does a step on it agree with the cpu reference, how fast
// is it, and do the multi-process paths (GPU sharing, TensorBoard, a failing
// worker) behave as documented. Prints a table and writes JSON.
//
//   npx tsc -p . && node dist/scripts/gpu-smoke.js \
//     [--model resnet50] [--width 64] [--batch 128] [--steps 30] [--skip-multi] [--out runs/gpu-smoke.json]
//
// Checks, each in a child process of its own (a CUDA crash in one leaves the
// report standing):
//   load          initBackend('tensorflow'): the package, its GPU device, or the real error
//   agree         one TrainStep on the same seeded batch on tensorflow and on cpu: gradients within 1e-3
//                 (ResNet18 at width <= 8, <= 8 images: cpu is slow, and ResNet50's 53 BatchNorms make its gradients
//                 ill-conditioned across float32 implementations: wasm against cpu differs by 3e-2 there, 4e-6 on ResNet18)
//   throughput    --steps steps of --model at --batch: fwd+bwd and sgd+upload ms, img/s (first step excluded)
//   two-workers   coordinator --workers 2 --local-workers 2 --gpus 0 without allow-growth (refused, exit 2) and with it
//   tensorboard   a --tensorboard run: the coordinator's pid never appears in nvidia-smi's compute apps
//   killed-worker TFJS_DDP_THROW_AT='*:1' in a 2-worker run: exit 1 with the injected message (wasm without tensorflow)
// A check that needs what is missing is 'skipped' with the reason; exit 0 if none failed, 1 otherwise.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, describeBackend } from '../src/common/backend/backend.js';
import { buildModelSpec, type ModelName } from '../src/common/model/spec.js';
import { seededStep } from './seeded-step.js';
import { THROW_FAULT_ENV } from '../src/common/training/faults.js';
import { exitOnUsageError, intFlag, modelOption } from '../src/common/cli/flags.js';
import { runMain } from '../src/common/cli/run-main.js';
import type { BackendName } from '../src/common/backend/names.js';

const CHECKS = ['load', 'agree', 'throughput', 'two-workers', 'tensorboard', 'killed-worker'] as const;
type CheckName = (typeof CHECKS)[number];
/** Gradients of tensorflow and cpu: max |g_tf - g_cpu| / max |g_cpu| must stay below this. */
const TOLERANCE = 1e-3;
/** The agree check: a well-conditioned model (see test/golden.test.ts), small enough for a short cpu step. */
const AGREE_MODEL: ModelName = 'resnet18';
const AGREE_MAX_WIDTH = 8;
const AGREE_MAX_BATCH = 8;
const NEEDS_TENSORFLOW = 'needs the tensorflow backend (see load)';

const program = exitOnUsageError(new Command('gpu-smoke')
  .description('GPU smoke test: tensorflow backend and GPU, a step against cpu, throughput, GPU sharing, TensorBoard, a failing worker; writes JSON')
  .addOption(modelOption('resnet50', 'network for the throughput check (agree always uses resnet18)'))
  .addOption(new Option('--width <n>', 'base width').argParser(intFlag(1)).default(64))
  .addOption(new Option('--batch <n>', 'batch per GPU for the throughput check').argParser(intFlag(1)).default(128))
  .addOption(new Option('--steps <n>', 'timed steps of the throughput check (after one warm-up step)').argParser(intFlag(1)).default(30))
  .addOption(new Option('--backend <name>', 'backend of the multi-worker runs (killed-worker uses wasm when tensorflow does not load)')
    .choices(['tensorflow', 'wasm', 'cpu']).default('tensorflow'))
  .option('--skip-multi', 'skip the checks that start several workers (two-workers, tensorboard, killed-worker)', false)
  .addOption(new Option('--timeout <seconds>', 'limit for each check').argParser(intFlag(1)).default(600))
  .option('--out <file>', 'JSON report', 'runs/gpu-smoke.json')
  // Internal: one check (or one side of agree) in a fresh process; prints one JSON line.
  .addOption(new Option('--check <name>').choices(['load', 'agree-step', 'throughput']).hideHelp())
  .addOption(new Option('--check-backend <name>').choices(['tensorflow', 'cpu']).hideHelp())
  .addOption(new Option('--grad-out <file>').hideHelp()));

interface SmokeOptions {
  model: ModelName; width: number; batch: number; steps: number; backend: BackendName; skipMulti: boolean; timeout: number; out: string;
  check?: 'load' | 'agree-step' | 'throughput'; checkBackend?: 'tensorflow' | 'cpu'; gradOut?: string;
}

type Status = 'pass' | 'fail' | 'skipped';

interface CheckResult {
  check: CheckName;
  status: Status;
  detail: string;
  numbers: Record<string, number>;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const selfScript = fileURLToPath(import.meta.url);
const coordinatorCli = path.resolve(here, '../src/coordinator/cli.js');

// ---------------------------------------------------------------- child mode

/** The tensorflow backend's own report of its device (tfjs-node's NodeJSKernelBackend fields). */
function nativeDevice(): { isUsingGpuDevice?: boolean; isGPUPackage?: boolean } {
  return (tf.findBackend('tensorflow') ?? {}) as { isUsingGpuDevice?: boolean; isGPUPackage?: boolean };
}

async function childLoad(): Promise<Omit<CheckResult, 'check'>> {
  try {
    await initBackend('tensorflow');
  } catch (err) {
    return { status: 'fail', detail: (err as Error).message, numbers: { loaded: 0 } };
  }
  const device = nativeDevice();
  const gpu = device.isUsingGpuDevice === true;
  const numbers: Record<string, number> = { loaded: 1, gpu: gpu ? 1 : 0 };
  if (device.isGPUPackage !== undefined) numbers.gpuPackage = device.isGPUPackage ? 1 : 0;
  const detail = `${describeBackend()}; GPU device: ${device.isUsingGpuDevice === undefined ? 'unknown (the package does not say)' : gpu ? 'yes' : 'no'}`;
  // The native backend on the CPU runs every other check, but this is a GPU smoke test.
  return { status: gpu || device.isUsingGpuDevice === undefined ? 'pass' : 'fail', detail, numbers };
}

const agreeShape = (o: SmokeOptions) => ({ width: Math.min(o.width, AGREE_MAX_WIDTH), batch: Math.min(o.batch, AGREE_MAX_BATCH) });

/** One side of agree: one step, its gradient to --grad-out, its loss as the numbers. */
async function childAgreeStep(o: SmokeOptions): Promise<Omit<CheckResult, 'check'>> {
  if (o.checkBackend === undefined || o.gradOut === undefined) throw new Error('--check agree-step needs --check-backend and --grad-out');
  await initBackend(o.checkBackend);
  const { width, batch: batchSize } = agreeShape(o);
  const { step, replica, batch } = seededStep(AGREE_MODEL, width, batchSize);
  const r = await step.run(batch, batchSize, 0.01);
  fs.writeFileSync(o.gradOut, Buffer.from(step.grad.buffer, step.grad.byteOffset, step.grad.byteLength));
  replica.dispose();
  return { status: 'pass', detail: describeBackend(), numbers: { loss: r.lossSum / batchSize, ms: r.stepMs } };
}

async function childThroughput(o: SmokeOptions): Promise<Omit<CheckResult, 'check'>> {
  await initBackend('tensorflow');
  const { step, replica, batch } = seededStep(o.model, o.width, o.batch);
  let gradMs = 0;
  let optimMs = 0;
  let firstMs = 0;
  for (let i = 0; i <= o.steps; i++) {
    const r = await step.run(batch, o.batch, 0.01);
    if (i === 0) {
      firstMs = r.stepMs;
      continue;
    }
    gradMs += r.gradMs;
    optimMs += r.stepMs - r.gradMs - r.reduceMs;
  }
  replica.dispose();
  const msPerStep = (gradMs + optimMs) / o.steps;
  const imagesPerS = (o.batch * 1000) / msPerStep;
  return {
    status: 'pass',
    detail: `${o.model} width ${o.width}, batch ${o.batch}, ${o.steps} steps: ${imagesPerS.toFixed(1)} img/s, ` +
      `${msPerStep.toFixed(1)} ms/step (fwd+bwd ${(gradMs / o.steps).toFixed(1)}, sgd+upload ${(optimMs / o.steps).toFixed(1)}; first step ${firstMs.toFixed(0)} ms, not counted) on ${describeBackend()}`,
    numbers: { imagesPerS, msPerStep, gradMs: gradMs / o.steps, optimMs: optimMs / o.steps, firstStepMs: firstMs, batch: o.batch, steps: o.steps },
  };
}

// ---------------------------------------------------------------- parent side

interface ChildRun { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; timedOut: boolean; pid: number }

/** A node process to its end (killed after `timeoutS`); `onStart` sees its pid. */
function runNode(args: string[], env: Record<string, string | undefined>, timeoutS: number, onStart?: (pid: number) => void): Promise<ChildRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutS * 1000);
    if (child.pid !== undefined) onStart?.(child.pid);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut, pid: child.pid ?? -1 });
    });
  });
}

const lastLine = (text: string): string => text.trim().split('\n').filter((l) => l.trim() !== '').at(-1)?.trim() ?? '';

/** How a child ended when it printed no result: exit code or signal, and its last line of stderr. */
function howItEnded(r: ChildRun, timeoutS: number): string {
  if (r.timedOut) return `timed out after ${timeoutS} s (--timeout)`;
  const end = r.signal !== null ? `killed by ${r.signal}` : `exit ${r.code}`;
  const last = lastLine(r.stderr) || lastLine(r.stdout);
  return last === '' ? end : `${end}: ${last}`;
}

/** Runs `--check name` in a fresh process; a crash is a 'fail' with how it ended. */
async function childCheck(check: CheckName, mode: string, o: SmokeOptions, extra: string[] = [], env: Record<string, string> = {}): Promise<CheckResult> {
  const args = [selfScript, '--check', mode, '--model', o.model, '--width', String(o.width), '--batch', String(o.batch), '--steps', String(o.steps), ...extra];
  const r = await runNode(args, env, o.timeout);
  try {
    const parsed = JSON.parse(lastLine(r.stdout)) as Omit<CheckResult, 'check'>;
    if (r.code === 0) return { check, ...parsed };
  } catch {
    // no result line: the child crashed
  }
  return { check, status: 'fail', detail: howItEnded(r, o.timeout), numbers: {} };
}

interface GpuInfo { name: string; computeCap: number }

/** The GPUs nvidia-smi lists, or null without nvidia-smi. */
function nvidiaGpus(): GpuInfo[] | null {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=name,compute_cap', '--format=csv,noheader'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 20_000 });
    return out.trim().split('\n').filter((l) => l.trim() !== '').map((l) => {
      const [name, cap] = l.split(',').map((s) => s.trim());
      return { name: name ?? '', computeCap: Number(cap) };
    });
  } catch {
    return null;
  }
}

/** pids of the processes on a GPU, or null when nvidia-smi fails. */
function gpuPids(): number[] | null {
  try {
    const out = execFileSync('nvidia-smi', ['--query-compute-apps=pid', '--format=csv,noheader'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 20_000 });
    return out.split('\n').map((l) => Number.parseInt(l.trim(), 10)).filter((n) => Number.isInteger(n));
  } catch {
    return null;
  }
}

/** TF32 is on by default on Ampere (compute capability 8.0) and later, unless NVIDIA_TF32_OVERRIDE=0. */
function tf32Note(gpus: GpuInfo[] | null): string | null {
  const ampere = (gpus ?? []).filter((g) => g.computeCap >= 8);
  if (ampere.length === 0 || process.env.NVIDIA_TF32_OVERRIDE === '0') return null;
  return `${ampere[0]!.name} (compute capability ${ampere[0]!.computeCap}) runs float32 matmuls and convolutions in TF32 by default: ` +
    'rerun with NVIDIA_TF32_OVERRIDE=0 for full float32';
}

async function checkAgree(o: SmokeOptions, gpus: GpuInfo[] | null): Promise<CheckResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-gpu-smoke-'));
  try {
    const sides = ['tensorflow', 'cpu'] as const;
    const files = sides.map((b) => path.join(dir, `${b}.f32`));
    const runs: CheckResult[] = [];
    for (let i = 0; i < sides.length; i++) {
      runs.push(await childCheck('agree', 'agree-step', o, ['--check-backend', sides[i]!, '--grad-out', files[i]!]));
    }
    const failed = runs.findIndex((r) => r.status !== 'pass');
    if (failed >= 0) return { check: 'agree', status: 'fail', detail: `the ${sides[failed]} step failed: ${runs[failed]!.detail}`, numbers: {} };
    const [g, ref] = files.map((f) => { const b = fs.readFileSync(f); return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4); });
    const { width, batch } = agreeShape(o);
    const spec = buildModelSpec({ name: AGREE_MODEL, width, numClasses: 10, inChannels: 3, norm: 'batch' });
    let maxDiff = 0;
    let maxRef = 0;
    let worst = { name: '', rel: 0 };
    for (const p of spec.params) {
      let d = 0;
      let m = 0;
      for (let i = p.offset; i < p.offset + p.size; i++) {
        d = Math.max(d, Math.abs(g![i]! - ref![i]!));
        m = Math.max(m, Math.abs(ref![i]!));
      }
      maxDiff = Math.max(maxDiff, d);
      maxRef = Math.max(maxRef, m);
      const rel = d / Math.max(m, 1e-30);
      if (rel > worst.rel) worst = { name: p.name, rel };
    }
    const relError = maxDiff / Math.max(maxRef, 1e-30);
    const lossDiff = Math.abs(runs[0]!.numbers.loss! - runs[1]!.numbers.loss!);
    const pass = relError <= TOLERANCE && Number.isFinite(relError);
    const tf32 = tf32Note(gpus);
    let detail = `${AGREE_MODEL} width ${width}, ${batch} images: max |g_tf - g_cpu| / max |g_cpu| = ${relError.toExponential(2)} ` +
      `(tolerance ${TOLERANCE}; worst tensor ${worst.name} ${worst.rel.toExponential(2)}), loss differs by ${lossDiff.toExponential(2)}`;
    if (!pass) detail += tf32 === null ? '' : `; ${tf32}`;
    else if (tf32 !== null) detail += '; TF32 is on (NVIDIA_TF32_OVERRIDE=0 turns it off)';
    return {
      check: 'agree', status: pass ? 'pass' : 'fail', detail,
      numbers: { relError, worstTensorRelError: worst.rel, lossDiff, tolerance: TOLERANCE, width, batch },
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A tiny synthetic run: ResNet18 width 4, global batch 16, 2 steps, no dashboard or plots. */
function tinyRun(backend: string, out: string, extra: string[] = []): string[] {
  return [coordinatorCli, '--workers', '2', '--model', 'resnet18', '--width', '4', '--dataset', 'synthetic', '--train-limit', '64', '--test-limit', '16',
    '--batch-size', '16', '--epochs', '1', '--max-steps', '2', '--backend', backend, '--dashboard', 'false', '--port', '0', '--no-plots', '--out', out, ...extra];
}

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-gpu-smoke-'));
  try {
    return await fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function checkTwoWorkers(o: SmokeOptions): Promise<CheckResult> {
  return withTempDir(async (dir) => {
    const args = tinyRun('tensorflow', path.join(dir, 'run'), ['--local-workers', '2', '--gpus', '0']);
    // Without allow-growth the assignment refuses two TensorFlow processes on one GPU: exit 2, before any data.
    const refused = await runNode(args, { TF_FORCE_GPU_ALLOW_GROWTH: 'false' }, o.timeout);
    const refusalOk = refused.code === 2 && /TF_FORCE_GPU_ALLOW_GROWTH=true/.test(refused.stderr);
    const shared = await runNode(args, { TF_FORCE_GPU_ALLOW_GROWTH: 'true' }, o.timeout);
    const sharedOk = shared.code === 0;
    const parts = [
      refusalOk ? 'without allow-growth: refused as expected (exit 2)' : `without allow-growth: expected exit 2 and the allow-growth advice, got ${howItEnded(refused, o.timeout)}`,
      sharedOk ? 'with TF_FORCE_GPU_ALLOW_GROWTH=true: 2 workers shared GPU 0 (exit 0)' : `with TF_FORCE_GPU_ALLOW_GROWTH=true: ${howItEnded(shared, o.timeout)}`,
    ];
    return { check: 'two-workers', status: refusalOk && sharedOk ? 'pass' : 'fail', detail: parts.join('; '), numbers: { refusedExit: refused.code ?? -1, sharedExit: shared.code ?? -1 } };
  });
}

async function checkTensorboard(o: SmokeOptions): Promise<CheckResult> {
  return withTempDir(async (dir) => {
    let coordinatorPid = -1;
    const seen = new Set<number>();
    let polls = 0;
    let poller: NodeJS.Timeout | undefined;
    const poll = () => {
      const pids = gpuPids();
      if (pids !== null) {
        polls++;
        for (const p of pids) seen.add(p);
      }
    };
    // Two worker processes on GPU 0 (allow-growth), so that the check needs one GPU only.
    const r = await runNode(tinyRun('tensorflow', path.join(dir, 'run'), ['--local-workers', '2', '--gpus', '0', '--tensorboard', path.join(dir, 'tb')]),
      { TF_FORCE_GPU_ALLOW_GROWTH: 'true' }, o.timeout, (pid) => {
        coordinatorPid = pid;
        poller = setInterval(poll, 500);
      });
    clearInterval(poller);
    const events = fs.existsSync(path.join(dir, 'tb')) ? fs.readdirSync(path.join(dir, 'tb'), { recursive: true }).map(String).filter((f) => f.includes('tfevents')) : [];
    const numbers = { coordinatorPid, gpuProcessesSeen: seen.size, polls, eventFiles: events.length };
    if (r.code !== 0) return { check: 'tensorboard', status: 'fail', detail: `the --tensorboard run failed: ${howItEnded(r, o.timeout)}`, numbers };
    if (seen.has(coordinatorPid)) {
      return { check: 'tensorboard', status: 'fail', detail: `the coordinator (pid ${coordinatorPid}) held a GPU context during a --tensorboard run`, numbers };
    }
    const workers = seen.size === 0
      ? ' (nvidia-smi listed no process at all: the run may have been too short to see the workers)'
      : `; nvidia-smi listed ${seen.size} other process(es) over ${polls} polls`;
    return {
      check: 'tensorboard', status: events.length > 0 ? 'pass' : 'fail',
      detail: `${events.length} event file(s) written; the coordinator (pid ${coordinatorPid}) was never on the GPU${workers}`,
      numbers,
    };
  });
}

async function checkKilledWorker(o: SmokeOptions, tensorflowLoaded: boolean): Promise<CheckResult> {
  const backend = o.backend === 'tensorflow' && !tensorflowLoaded ? 'wasm' : o.backend;
  const why = backend === o.backend ? `on ${backend}` : `on wasm, as tensorflow does not load here`;
  return withTempDir(async (dir) => {
    const r = await runNode(tinyRun(backend, path.join(dir, 'run')), { [THROW_FAULT_ENV]: '*:1', TF_FORCE_GPU_ALLOW_GROWTH: 'true' }, o.timeout);
    const expected = `injected failure at step 1 (${THROW_FAULT_ENV})`;
    const last = lastLine(r.stderr);
    const ok = r.code === 1 && last.startsWith('coordinator: error: ') && last.includes(expected) && !/\n\s+at /.test(r.stderr);
    return {
      check: 'killed-worker', status: ok ? 'pass' : 'fail',
      detail: ok ? `${why}: exit 1 with "${last}"` : `${why}: expected exit 1 and "coordinator: error: ... ${expected}", got ${howItEnded(r, o.timeout)}`,
      numbers: { exit: r.code ?? -1 },
    };
  });
}

const skipped = (check: CheckName, detail: string): CheckResult => ({ check, status: 'skipped', detail, numbers: {} });

async function runChecks(o: SmokeOptions, gpus: GpuInfo[] | null, report: (r: CheckResult) => void): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const add = (r: CheckResult) => {
    results.push(r);
    report(r);
  };
  const load = await childCheck('load', 'load', o);
  add(load);
  const loaded = load.numbers.loaded === 1;
  add(loaded ? await checkAgree(o, gpus) : skipped('agree', NEEDS_TENSORFLOW));
  add(loaded ? await childCheck('throughput', 'throughput', o) : skipped('throughput', NEEDS_TENSORFLOW));
  if (o.skipMulti) {
    for (const c of ['two-workers', 'tensorboard', 'killed-worker'] as const) add(skipped(c, '--skip-multi'));
    return results;
  }
  add(loaded ? await checkTwoWorkers(o) : skipped('two-workers', NEEDS_TENSORFLOW));
  if (!loaded) add(skipped('tensorboard', NEEDS_TENSORFLOW));
  else if (gpus === null) add(skipped('tensorboard', 'needs nvidia-smi'));
  else add(await checkTensorboard(o));
  add(await checkKilledWorker(o, loaded));
  return results;
}

function printRow(r: CheckResult): void {
  console.log(`${r.check.padEnd(14)} ${r.status.padEnd(8)} ${r.detail}`);
}

await runMain('gpu-smoke', async () => {
  program.parse();
  const o = program.opts<SmokeOptions>();
  if (o.check !== undefined) {
    const result = o.check === 'load' ? await childLoad() : o.check === 'agree-step' ? await childAgreeStep(o) : await childThroughput(o);
    console.log(JSON.stringify(result));
    // Native and wasm threads would keep the child alive.
    process.exit(0);
  }
  const gpus = nvidiaGpus();
  const gpuLine = gpus === null ? 'nvidia-smi: not found' : gpus.length === 0 ? 'nvidia-smi: no GPU' :
    gpus.map((g, i) => `GPU ${i}: ${g.name} (compute capability ${g.computeCap})`).join(', ');
  console.log(`gpu-smoke: node ${process.versions.node}, ${os.cpus()[0]?.model ?? 'unknown CPU'}; ${gpuLine}`);
  console.log(`throughput: ${o.model} width ${o.width}, batch ${o.batch}, ${o.steps} steps\n`);
  console.log(`${'check'.padEnd(14)} ${'status'.padEnd(8)} detail`);
  const results = await runChecks(o, gpus, printRow);
  const count = (s: Status) => results.filter((r) => r.status === s).length;
  const reasons = [...new Set(results.filter((r) => r.status === 'skipped').map((r) => r.detail))]
    .map((why) => `${results.filter((r) => r.status === 'skipped' && r.detail === why).map((r) => r.check).join(', ')}: ${why}`);
  console.log(`\n${count('pass')} passed, ${count('fail')} failed, ${count('skipped')} skipped${reasons.length > 0 ? ` (${reasons.join('; ')})` : ''}`);
  fs.mkdirSync(path.dirname(path.resolve(o.out)), { recursive: true });
  fs.writeFileSync(o.out, JSON.stringify({
    date: new Date().toISOString(), node: process.versions.node, cpu: os.cpus()[0]?.model ?? null, gpus,
    options: { model: o.model, width: o.width, batch: o.batch, steps: o.steps, backend: o.backend, skipMulti: o.skipMulti },
    summary: { pass: count('pass'), fail: count('fail'), skipped: count('skipped') }, checks: results,
  }, null, 2));
  console.log(`wrote ${o.out}`);
  process.exitCode = count('fail') > 0 ? 1 : 0;
});
