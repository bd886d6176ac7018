// A worker whose step throws says why before it leaves, and the coordinator
// prints that error with the rank: when every rank fails the same way at the
// same step the run ends with that error (resuming would fail again, so no
// --resume advice); when only some do, the group shrinks and the run goes on.
// The single-process trainer shows the real error too. TFJS_DDP_THROW_AT
// makes a step throw. A local worker process that dies before its first
// step without a word to the coordinator (TFJS_DDP_EXIT_AT_START, as a
// CUDA start-up crash) ends the run with its exit status and its last stderr
// lines, not a shrink. Real processes: needs the build (npx tsc -p .).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { DEFAULTS, type TrainConfig } from '../src/common/training/config.js';
import { runCoordinator } from '../src/coordinator/coordinator.js';
import type { HostPort } from '../src/common/protocol/index.js';
import { EXIT_AT_START_CODE, EXIT_AT_START_FAULT_ENV, THROW_FAULT_ENV } from '../src/common/training/faults.js';
import { startCli } from './helpers/node-process.js';

const TOKEN = 'worker-errors-7c2e';
const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-worker-errors-'));
const tiny = (trainLimit: number) => [
  '--model', 'resnet18', '--width', '4', '--dataset', 'synthetic', '--backend', 'wasm', '--train-limit', String(trainLimit),
  '--test-limit', '16', '--batch-size', '24', '--epochs', '1', '--no-plots', '--out', tempDir(),
];
const injected = (step: number) => `injected failure at step ${step} \\(${THROW_FAULT_ENV}\\)`;

/** The coordinator CLI run to its end: exit code, stdout and stderr interleaved, and stderr alone. */
async function runCoordinatorCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; output: string; stderr: string }> {
  const p = startCli('coordinator/cli.js', args, env);
  let stderr = '';
  p.child.stderr!.on('data', (d) => (stderr += d));
  const code = await p.exited;
  return { code, output: p.output(), stderr };
}

describe('a step that throws', () => {
  test.each(['process', 'thread'])('on both local workers (%s): exit 1 with the real error and the ranks, no --resume', async (mode) => {
    const { code, output, stderr } = await runCoordinatorCli(
      ['--workers', '2', '--local-mode', mode, '--port', '0', '--dashboard', 'false', ...tiny(96)],
      { [THROW_FAULT_ENV]: '*:1' },
    );
    expect(code).toBe(1);
    // The run's end: one line naming the ranks and the workers' own error.
    const lines = stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(
      `^coordinator: error: run aborted: rank [01] \\(worker 127\\.0\\.0\\.1:\\d+\\)( and rank [01] \\(worker 127\\.0\\.0\\.1:\\d+\\))? failed at step 1: ${injected(1)}$`,
    ));
    expect(stderr).not.toMatch(/--resume|every worker was lost/);
    // Each rank's failure is printed as it is heard (its message over the control channel)...
    const heard = output.match(new RegExp(`rank [01] \\(worker 127\\.0\\.0\\.1:\\d+\\):? failed at step 1: ${injected(1)}`, 'g')) ?? [];
    expect(new Set(heard.map((h) => /worker [\d.:]+/.exec(h)![0])).size).toBe(2);
    // ...and each process's own stderr is passed on, named.
    if (mode === 'process') {
      expect(output).toMatch(new RegExp(`local worker process 0 \\(rank [01]\\): worker: error: ${injected(1)}`));
      expect(output).toMatch(new RegExp(`local worker process 1 \\(rank [01]\\): worker: error: ${injected(1)}`));
    }
    expect(output).not.toMatch(/Unexpected message from Worker|Float32Array/);
  }, 120_000);

  test('on one of three workers: its error is printed with its rank, and the other two finish the run', async () => {
    const out = tempDir();
    const cfg: TrainConfig = {
      ...DEFAULTS, model: 'resnet18', width: 4, dataset: 'synthetic', backend: 'wasm', trainLimit: 96, testLimit: 24,
      batchSize: 24, lr: 0.05, epochs: 1, tMax: 1, seed: 3, plots: false, out,
    };
    const log: string[] = [];
    let onListening: (a: HostPort) => void = () => {};
    const address = new Promise<HostPort>((resolve) => (onListening = resolve));
    const run = runCoordinator(cfg, {
      workers: 3, localWorkers: 0, port: 0, token: TOKEN, onWorkerLoss: 'shrink', dashboard: false, log: (l) => log.push(l), onListening,
    });
    run.catch(() => {}); // awaited below
    const { host, port } = await address;
    // Only the second process to start carries the fault, whichever rank it gets.
    const envs: Record<string, string>[] = [{}, { [THROW_FAULT_ENV]: '*:2' }, {}];
    const procs = envs.map((env) =>
      startCli('worker/cli.js', ['--connect', `${host}:${port}`, '--no-cache'], { TFJS_DDP_TOKEN: TOKEN, ...env }));
    const result = await run;

    expect(result.steps).toBe(4);
    expect(result.groupChanges).toEqual([{ step: 1, from: 3, to: 2, lost: [expect.stringMatching(/^worker 127\.0\.0\.1:\d+$/)] }]);
    expect(result.history.map((m) => m.train_images)).toEqual([96]);
    expect(log).toContainEqual(expect.stringMatching(new RegExp(`^(lost )?rank [012] \\(worker 127\\.0\\.0\\.1:\\d+\\):? failed at step 2: ${injected(2)}`)));
    expect(log).toContainEqual(expect.stringMatching(/^group re-formed at step 1: 2 worker\(s\), 1 lost$/));
    expect(await Promise.all(procs.map((p) => p.exited))).toEqual([0, 1, 0]);
    expect(procs[1].output()).toMatch(new RegExp(`worker: error: ${injected(2)}`));
  }, 120_000);

  test('in the single-process trainer (--workers 1): the real error, no piscina noise', async () => {
    const { code, output, stderr } = await runCoordinatorCli(['--workers', '1', ...tiny(120)], { [THROW_FAULT_ENV]: '0:2' });
    expect(code).toBe(1);
    expect(stderr.trim()).toBe(`coordinator: error: injected failure at step 2 (${THROW_FAULT_ENV})`);
    expect(output).not.toMatch(/Unexpected message from Worker|Float32Array|\n\s+at /);
  }, 120_000);
});

describe('a local worker process that crashes at start-up', () => {
  // Two workers: the crash must not shrink the run onto the survivor. One: its lost socket must not end the
  // run as "every worker was lost ... --resume" before its exit is heard.
  test.each([
    { workers: 2, rank: 1 },
    { workers: 1, rank: 0 },
  ])('of $workers ends the run with its exit code and its stderr, prefixed with its rank: exit 1, no --resume', async ({ workers, rank }) => {
    const { code, output, stderr } = await runCoordinatorCli(
      ['--workers', String(workers), '--local-mode', 'process', '--port', '0', '--dashboard', 'false', ...tiny(96)],
      { [EXIT_AT_START_FAULT_ENV]: String(rank) },
    );
    expect(code).toBe(1);
    const crash = `injected start-up crash of rank ${rank} \\(${EXIT_AT_START_FAULT_ENV}\\)`;
    expect(stderr).toMatch(new RegExp(
      `^coordinator: error: run aborted: rank ${rank} \\(local worker process [01]\\) exited with code ${EXIT_AT_START_CODE} before the run's first step: ` +
        `a worker that cannot start would fail the same way again, so the run stops instead of going on without it; its last lines on stderr:\\n` +
        `  rank ${rank}: ${crash}\\n$`,
    ));
    expect(stderr).not.toMatch(/--resume|every worker was lost/);
    // The line was passed on as it came, too, named with the process and its rank.
    expect(output).toMatch(new RegExp(`local worker process [01] \\(rank ${rank}\\): ${crash}`));
    expect(output).not.toMatch(/epoches: 1/);
  }, 120_000);
});
