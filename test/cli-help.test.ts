// Every command users run, as a process from the compiled build: the
// package's bins, tfjs-ddp's subcommands and every script in scripts/.
// `--help` exits 0 with its usage and the choices of the one list of models,
// datasets and backends; a usage error (a bad flag, a missing or
// contradictory one) exits 2 with one line on stderr that names the flag,
// and no stack trace. Runtime errors (exit 1) are each command's own test.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { BACKEND_CHOICES } from '../src/common/backend/names.js';
import { DATASET_NAMES } from '../src/common/data/types.js';
import { MODEL_NAMES } from '../src/common/model/spec.js';
import { makeTempDir } from './helpers/data-fixtures.js';
import { GOLDEN_DIR } from './helpers/golden.js';
import { root, runScript, startCli } from './helpers/node-process.js';

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A bin, `dist/src/<file>`; `env` is added to the test's environment. */
async function bin(file: string, args: string[], env: Record<string, string> = {}): Promise<Result> {
  const p = startCli(file, args, env);
  let stdout = '';
  let stderr = '';
  p.child.stdout!.on('data', (d) => (stdout += d));
  p.child.stderr!.on('data', (d) => (stderr += d));
  return { code: await p.exited, stdout, stderr };
}

/** A script, `dist/scripts/<file>`. */
async function script(file: string, args: string[]): Promise<Result> {
  try {
    return { code: 0, stdout: await runScript(file, args), stderr: '' };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

interface Case {
  /** As the usage line names it. */
  name: string;
  run: (args: string[]) => Promise<Result>;
  /** Arguments with one bad value, and the flag the error must name. */
  bad: string[];
  flag: string;
  /** What the one line must say, when the command has no flag with a value to get wrong. */
  message?: RegExp;
  /** The flags whose choices must be the one list of models, datasets, backends. */
  lists?: ('--model' | '--dataset' | '--backend')[];
}

const tfjsDdp = (sub: string) => (args: string[]) => bin('cli/tfjs-ddp.js', [sub, ...args]);

const CASES: Case[] = [
  { name: 'coordinator', run: (a) => bin('coordinator/cli.js', a), bad: ['--batch-size', 'zero'], flag: '--batch-size', lists: ['--model', '--dataset', '--backend'] },
  { name: 'worker', run: (a) => bin('worker/cli.js', a), bad: ['--ring-port', '70000'], flag: '--ring-port', lists: ['--backend'] },
  { name: 'tfjs-ddp models', run: tfjsDdp('models'), bad: ['--width', '0'], flag: '--width' },
  // export and predict take no numbers: a bad choice instead.
  { name: 'tfjs-ddp export', run: tfjsDdp('export'), bad: ['ckpt', '--format', 'onnx', '--out', 'x'], flag: '--format' },
  { name: 'tfjs-ddp import', run: tfjsDdp('import'), bad: ['f.safetensors', '--out', 'x', '--width', 'x'], flag: '--width', lists: ['--model', '--dataset'] },
  { name: 'tfjs-ddp evaluate', run: tfjsDdp('evaluate'), bad: ['ckpt', '--test-limit', '0'], flag: '--test-limit', lists: ['--dataset', '--backend'] },
  { name: 'tfjs-ddp predict', run: tfjsDdp('predict'), bad: ['ckpt', 'a.png', '--backend', 'gpu'], flag: '--backend', lists: ['--backend'] },
  { name: 'bench-allreduce', run: (a) => script('bench-allreduce.js', a), bad: ['--iters', '0'], flag: '--iters' },
  { name: 'bench-local-allreduce', run: (a) => script('bench-local-allreduce.js', a), bad: ['--workers', '1'], flag: '--workers' },
  { name: 'bench-conv-grads', run: (a) => script('bench-conv-grads.js', a), bad: ['--batch', '0'], flag: '--batch' },
  { name: 'bench-train', run: (a) => script('bench-train.js', a), bad: ['--batch', '0'], flag: '--batch' },
  { name: 'bench-step', run: (a) => script('bench-step.js', a), bad: ['--steps', '0'], flag: '--steps', lists: ['--model'] },
  { name: 'bench-host-overhead', run: (a) => script('bench-host-overhead.js', a), bad: ['--steps', '0'], flag: '--steps', lists: ['--model', '--backend'] },
  { name: 'build-wasm-kernels', run: (a) => script('build-wasm-kernels.js', a), bad: ['--bogus'], flag: '--bogus', message: /unknown option '--bogus'/ },
  { name: 'gpu-smoke', run: (a) => script('gpu-smoke.js', a), bad: ['--steps', '0'], flag: '--steps', lists: ['--model'] },
  { name: 'cost-model', run: (a) => script('cost-model.js', a), bad: ['--params', '1.5'], flag: '--params' },
  { name: 'scale-test', run: (a) => script('scale-test.js', a), bad: ['--workers', '1,0'], flag: '--workers', lists: ['--model', '--dataset', '--backend'] },
];

const LISTS: Record<string, readonly string[]> = { '--model': MODEL_NAMES, '--dataset': DATASET_NAMES, '--backend': BACKEND_CHOICES };

/** The choices `--help` lists for a flag (commander: `(choices: "a", "b", default: "a")`), or undefined. */
function helpChoices(help: string, flag: string): string[] | undefined {
  const m = new RegExp(`${flag} <\\w+> .*?\\(choices: ([^)]*)\\)`).exec(help.replace(/\s+/g, ' '));
  return m ? [...m[1].split(', default:')[0].matchAll(/"([^"]+)"/g)].map((c) => c[1]) : undefined;
}

/** One line on stderr naming `flag`, nothing on stdout, exit 2. */
function expectUsageError(r: Result, prefix: string, flag: RegExp | string): void {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stdout).toBe('');
  expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`^${prefix}: error: `))]);
  expect(r.stderr).toMatch(flag);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

describe('every command', () => {
  test('is in the table: each bin of package.json and each script in scripts/', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    const names = CASES.map((c) => c.name.split(' ')[0]);
    for (const b of Object.keys(pkg.bin)) expect(names).toContain(b);
    // A script runs through runMain; the others (peak-rss.ts, seeded-step.ts) are modules the scripts import.
    const scripts = fs.readdirSync(path.join(root, 'scripts'))
      .filter((f) => f.endsWith('.ts') && fs.readFileSync(path.join(root, 'scripts', f), 'utf8').includes('await runMain('))
      .map((f) => f.slice(0, -3));
    expect(scripts.length).toBeGreaterThanOrEqual(6);
    for (const s of scripts) expect(names).toContain(s);
  });

  test.concurrent.each(CASES)('$name --help exits 0 with its usage', async ({ name, run, lists = [] }) => {
    const r = await run(['--help']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Usage: ${name} \\[options\\]`));
    expect(r.stdout).toMatch(/^ {2}-h, --help +display help for command$/m);
    for (const flag of lists) expect(helpChoices(r.stdout, flag), flag).toEqual([...LISTS[flag]]);
  }, 60_000);

  test.concurrent.each(CASES)('$name exits 2 with one line naming a bad flag', async ({ name, run, bad, flag, message }) => {
    expectUsageError(await run(bad), name.split(' ')[0], message ?? new RegExp(`'${flag} <\\w+>' argument .* is invalid`));
  }, 60_000);
});

describe('tfjs-ddp', () => {
  test('--help lists the subcommands', async () => {
    const r = await bin('cli/tfjs-ddp.js', ['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: tfjs-ddp \[options\] \[command\]/);
    for (const c of ['models', 'export', 'import', 'evaluate', 'predict']) expect(r.stdout).toMatch(new RegExp(`^  ${c} `, 'm'));
  });

  test('an unknown subcommand, a missing required flag and a flag the file needs exit 2 with one line', async () => {
    expectUsageError(await bin('cli/tfjs-ddp.js', ['train']), 'tfjs-ddp', /unknown command 'train'/);
    expectUsageError(await bin('cli/tfjs-ddp.js', ['export', 'ckpt', '--format', 'tfjs']), 'tfjs-ddp', /required option '--out <dir>'/);
    const out = makeTempDir('cli-help-import');
    const fixture = path.join(GOLDEN_DIR, 'resnet18-w4.safetensors');
    expectUsageError(await bin('cli/tfjs-ddp.js', ['import', fixture, '--prefix', 'init/', '--out', out]), 'tfjs-ddp', /pass --dataset cifar10 or --dataset synthetic/);
  });
});

describe('coordinator', () => {
  test('a bad choice lists the choices', async () => {
    expectUsageError(await bin('coordinator/cli.js', ['--model', 'resnet19']), 'coordinator', `Allowed choices are ${MODEL_NAMES.join(', ')}.`);
    expectUsageError(await bin('coordinator/cli.js', ['--workers', '2', '--on-worker-loss', 'retry']), 'coordinator', /--on-worker-loss.*Allowed choices are shrink, wait, abort/);
  });

  test('flags that contradict each other exit 2 with one line', async () => {
    expectUsageError(await bin('coordinator/cli.js', ['--workers', '2', '--local-workers', '3']), 'coordinator',
      /--local-workers must be an integer from 0 to --workers \(2\), got 3/);
    expectUsageError(await bin('coordinator/cli.js', ['--workers', '2', '--local-workers', '1']), 'coordinator', /1 remote worker\(s\) need a shared secret: pass --token/);
  });

  test('local worker threads cannot run the tensorflow backend: the error says why and what to use', async () => {
    const r = await bin('coordinator/cli.js', ['--workers', '2', '--backend', 'tensorflow', '--local-mode', 'thread']);
    expectUsageError(r, 'coordinator', /--local-mode thread cannot run --backend tensorflow: its native binding is unsafe in worker threads/);
    expect(r.stderr).toMatch(/use --local-mode process, the default for tensorflow/);
  });

  test('thread mode with --backend auto is refused when a tensorflow package is installed: auto would pick it', async () => {
    // A stand-in package on NODE_PATH, which require.resolve consults like node_modules. Its
    // index.js throws: the refusal must come from resolving it, without loading it.
    const modules = makeTempDir('cli-help-fake-tfjs-node');
    const pkg = path.join(modules, '@tensorflow', 'tfjs-node');
    fs.mkdirSync(pkg, { recursive: true });
    fs.writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ name: '@tensorflow/tfjs-node', version: '4.22.0', main: 'index.js' }));
    fs.writeFileSync(path.join(pkg, 'index.js'), "throw new Error('the stand-in @tensorflow/tfjs-node was loaded');\n");
    try {
      const r = await bin('coordinator/cli.js', ['--workers', '2', '--local-mode', 'thread'], { NODE_PATH: modules });
      expectUsageError(r, 'coordinator', '--local-mode thread with --backend auto: auto would pick the native tensorflow backend ' +
        '(@tensorflow/tfjs-node is installed), whose binding is unsafe in worker threads; use --local-mode process (the default here), or --backend wasm');
      // Naming a backend threads can run is the way out: the run starts, and stops only at the missing dataset (exit 1).
      const wasm = await bin('coordinator/cli.js', [
        '--workers', '2', '--local-mode', 'thread', '--backend', 'wasm', '--dataset', 'cifar10', '--data-dir', '/nonexistent', '--no-download',
      ], { NODE_PATH: modules });
      expect(wasm.code, wasm.stderr).toBe(1);
      expect(wasm.stderr).toMatch(/^coordinator: error: .*\/nonexistent/);
      expect(wasm.stderr).not.toMatch(/local-mode|stand-in/);
    } finally {
      fs.rmSync(modules, { recursive: true, force: true });
    }
  });

  test('--first-step-timeout takes seconds >= 0', async () => {
    for (const bad of ['-1', 'ten', '']) {
      expectUsageError(await bin('coordinator/cli.js', ['--workers', '2', '--first-step-timeout', bad]), 'coordinator',
        new RegExp(`'--first-step-timeout <seconds>' argument '${bad}' is invalid\\. expected a number >= 0, got "${bad}"`));
    }
  });

  test('--wire is one of fp32, bf16, fp16, and needs the ring', async () => {
    expectUsageError(await bin('coordinator/cli.js', ['--workers', '2', '--wire', 'int8']), 'coordinator', /'--wire <format>' argument 'int8' is invalid/);
    expectUsageError(await bin('coordinator/cli.js', ['--workers', '2', '--wire', 'bf16', '--allreduce', 'star']), 'coordinator',
      /--wire bf16 needs --allreduce ring: the star sums in fp32/);
  });

  test('--gpus takes GPU UUIDs and MIG ids, indexes into an inherited CUDA_VISIBLE_DEVICES, and refuses more workers than GPUs', async () => {
    expectUsageError(await bin('coordinator/cli.js', ['--gpus', '0,gpu1']), 'coordinator',
      /'--gpus <ids>' argument '0,gpu1' is invalid\. expected GPU ids like 0,1,2,3, GPU-<uuid> or MIG-<uuid>, got "gpu1"/);
    // The GPU ids below pass the flag's check, so it is the assignment that refuses: before any data is loaded.
    const noGrowth = { TF_FORCE_GPU_ALLOW_GROWTH: 'false' };
    const procs = ['--backend', 'cpu', '--local-mode', 'process', '--dataset', 'cifar10', '--data-dir', '/nonexistent', '--no-download'];
    expectUsageError(await bin('coordinator/cli.js', ['--workers', '3', '--gpus', 'GPU-8932f937,MIG-3b2d5ea0', ...procs], { ...noGrowth, CUDA_VISIBLE_DEVICES: 'GPU-8932f937,MIG-3b2d5ea0' }),
      'coordinator', /3 local workers but 2 GPUs \(--gpus GPU-8932f937,MIG-3b2d5ea0 of CUDA_VISIBLE_DEVICES=GPU-8932f937,MIG-3b2d5ea0\): .*TF_FORCE_GPU_ALLOW_GROWTH=true/);
    expectUsageError(await bin('coordinator/cli.js', ['--workers', '1', '--gpus', '2', ...procs], { ...noGrowth, CUDA_VISIBLE_DEVICES: '4,5' }),
      'coordinator', /--gpus 2: CUDA_VISIBLE_DEVICES=4,5 makes 2 GPUs visible/);
    // --backend tensorflow takes its GPUs from CUDA_VISIBLE_DEVICES when --gpus is not given.
    expectUsageError(await bin('coordinator/cli.js', ['--workers', '2', '--backend', 'tensorflow', '--dataset', 'synthetic'], { ...noGrowth, CUDA_VISIBLE_DEVICES: '7' }),
      'coordinator', /2 local workers but 1 GPU \(CUDA_VISIBLE_DEVICES=7\)/);
  });
});
