// Remote workers as real processes (`worker --connect`) on loopback, the
// handshake's refusals, and a worker lost mid-run. Needs the compiled build
// (npx tsc -p tsconfig.json), as the users' commands do.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { DEFAULTS, type TrainConfig } from '../src/common/training/config.js';
import { runCoordinator, type CoordinatorOptions } from '../src/coordinator/coordinator.js';
import { runWorker } from '../src/worker/worker.js';
import type { HostPort } from '../src/common/protocol/index.js';

const root = path.resolve(import.meta.dirname, '..');
const workerBin = path.join(root, 'dist/src/worker/cli.js');
const TOKEN = 'loopback-secret-7f3a';

const cfg = (): TrainConfig => ({
  ...DEFAULTS, model: 'resnet18', width: 2, dataset: 'synthetic', backend: 'wasm', trainLimit: 24, testLimit: 8,
  batchSize: 12, epochs: 1, seed: 1, plots: false, out: fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-remote-')),
});

interface Exited { code: number | null; stdout: string; stderr: string }

/** Every worker process of this file caches received datasets here, never in the user's home. */
const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-remote-cache-'));

function startWorker(address: HostPort, token: string): { child: ChildProcess; exited: Promise<Exited> } {
  const child = spawn(process.execPath, [workerBin, '--connect', `${address.host}:${address.port}`, '--token', token], {
    cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TFJS_DDP_TOKEN: '', TFJS_DDP_CACHE: cacheDir },
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<Exited>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  return { child, exited };
}

/** Starts a coordinator and resolves its address once it listens. */
function startCoordinator(workers: number, localWorkers: number, log: string[], epochs = 1, more: Partial<CoordinatorOptions> = {}) {
  let onListening: (a: HostPort) => void = () => {};
  const listening = new Promise<HostPort>((resolve) => (onListening = resolve));
  const run = runCoordinator({ ...cfg(), epochs }, {
    workers, localWorkers, port: 0, token: TOKEN, log: (l) => log.push(l), onListening, ...more,
  });
  run.catch(() => {}); // awaited by the test
  return { listening, run };
}

describe('remote workers', () => {
  test('bad tokens and protocol versions are refused while two worker processes complete the run', async () => {
    const log: string[] = [];
    const { listening, run } = startCoordinator(2, 0, log);
    const address = await listening;

    const intruder = await startWorker(address, 'not-the-secret').exited;
    expect(intruder.code).toBe(1);
    expect(intruder.stderr).toMatch(/refused this worker: wrong token/);
    await expect(runWorker({ connect: `${address.host}:${address.port}`, token: TOKEN, protocolVersion: 99 }))
      .rejects.toThrow(/refused this worker: protocol version 99 is not supported: this coordinator speaks version 2/);
    expect(log.filter((l) => l.startsWith('refused worker'))).toEqual([
      expect.stringMatching(/wrong token/),
      expect.stringMatching(/protocol version 99/),
    ]);

    const workers = [startWorker(address, TOKEN), startWorker(address, TOKEN)];
    const result = await run;
    const exits = await Promise.all(workers.map((w) => w.exited));
    for (const e of exits) {
      expect(e.stderr).toBe('');
      expect(e.code).toBe(0);
      expect(e.stdout).toMatch(/joined as rank [01] of 2[\s\S]*worker: done/);
    }
    // The coordinator sent the data (the workers have no dataset of their own) ...
    expect(log).toContainEqual(expect.stringMatching(/^dataset [0-9a-f]{12} \([\d.]+ MB\): sent to 2 worker\(s\), cached on 0$/));
    expect(exits.map((e) => e.stdout).join('')).toMatch(/dataset [0-9a-f]{12} received/);
    expect(fs.readdirSync(path.join(cacheDir, 'datasets'))).toHaveLength(1);
    expect(result.steps).toBe(2);
    expect(result.history).toHaveLength(1);
    expect(result.history[0].workers).toBe(2);
    // The secret never reaches the log, not even the wrong one.
    expect(log.join('\n')).not.toMatch(/loopback-secret|not-the-secret/);
  }, 60_000);

  test('workers that cached the dataset are not sent it again', async () => {
    const log: string[] = [];
    const { listening, run } = startCoordinator(2, 0, log);
    const address = await listening;
    const workers = [startWorker(address, TOKEN), startWorker(address, TOKEN)];
    await run;
    const exits = await Promise.all(workers.map((w) => w.exited));
    expect(exits.map((e) => e.code)).toEqual([0, 0]);
    expect(log).toContainEqual(expect.stringMatching(/sent to 0 worker\(s\), cached on 2$/));
    for (const e of exits) expect(e.stdout).toMatch(/dataset [0-9a-f]{12} from the cache/);
  }, 60_000);

  test('--on-worker-loss abort: a worker lost mid-run stops the coordinator with an error naming it', async () => {
    const log: string[] = [];
    // 20 epochs: far more training than the moment between "ready" and the kill.
    const { listening, run } = startCoordinator(2, 1, log, 20, { onWorkerLoss: 'abort' });
    const remote = startWorker(await listening, TOKEN);
    // Kill the remote worker as soon as both ranks are ready, before training ends.
    const killer = setInterval(() => {
      if (log.filter((l) => / ready, /.test(l)).length === 2) remote.child.kill('SIGKILL');
    }, 5);
    try {
      await expect(run).rejects.toThrow(/run aborted: lost worker 127\.0\.0\.1:\d+ \(--on-worker-loss abort\): checkpoint written at step \d+/);
    } finally {
      clearInterval(killer);
    }
    expect(log).toContainEqual(expect.stringMatching(/^lost rank [01] \(worker 127\.0\.0\.1:\d+\): .*closed the connection/));
    expect((await remote.exited).code).toBeNull();
  }, 60_000);

  test('a worker that stops answering (SIGSTOP) is detected within --worker-timeout, named, and the run goes on without it', async () => {
    const log: string[] = [];
    const { listening, run } = startCoordinator(2, 1, log, 4, { workerTimeoutMs: 1500 });
    const remote = startWorker(await listening, TOKEN);
    for (let i = 0; i < 400 && !log.some((l) => l.startsWith('epoches: 1 ')); i++) await new Promise((r) => setTimeout(r, 25));
    const stoppedAt = Date.now();
    remote.child.kill('SIGSTOP');
    const stalled = /^lost rank [01] \(worker 127\.0\.0\.1:\d+\): .*sent nothing for [\d.]+ s \(--worker-timeout 1\.5 s plus twice the longest step.*\): hung, stopped or cut off/;
    try {
      while (!log.some((l) => stalled.test(l))) await new Promise((r) => setTimeout(r, 25));
      // The allowance is 1.5 s plus twice the longest step (the first one, a few seconds here): noticed, not waited on forever.
      expect(Date.now() - stoppedAt).toBeLessThan(40_000);
      const result = await run;
      expect(result.groupChanges).toMatchObject([{ from: 2, to: 1 }]);
      expect(result.history.at(-1)!.workers).toBe(1);
    } finally {
      remote.child.kill('SIGKILL');
    }
  }, 60_000);
});
