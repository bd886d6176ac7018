// The coordinator is killed mid-run (SIGKILL) and restarted with --resume:
// the remote worker processes notice the crash, rejoin the new coordinator,
// and the run finishes with the epochs before the kill unchanged.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect, test } from 'vitest';
import { readMetrics } from '../src/common/io/metrics.js';
import { freePort, startCli } from './helpers/node-process.js';

const TOKEN = 'restart-secret-0c42';
const start = (script: string, args: string[]) => startCli(script, args, { TFJS_DDP_TOKEN: TOKEN });

test('a killed coordinator restarted with --resume finishes the run with its workers', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-restart-'));
  const port = await freePort();
  const coordinatorArgs = [
    '--workers', '2', '--local-workers', '0', '--port', String(port), '--dashboard', 'false', '--model', 'resnet18', '--width', '2',
    '--dataset', 'synthetic', '--train-limit', '96', '--test-limit', '12', '--batch-size', '12', '--epochs', '3',
    '--backend', 'wasm', '--checkpoint-every', '3', '--no-plots', '--out', out,
  ];
  const first = start('coordinator/cli.js', coordinatorArgs);
  const workers = [0, 1].map(() => start('worker/cli.js', ['--connect', `127.0.0.1:${port}`, '--no-cache', '--reconnect-timeout', '60']));

  // Kill it once epoch 1 is recorded and a checkpoint after it exists (steps 9-19 of 24: epoch 2 or early epoch 3).
  const metricsFile = path.join(out, 'metrics.jsonl');
  let firstExit: number | null | undefined;
  void first.exited.then((code) => (firstExit = code));
  while (!(fs.existsSync(metricsFile) && fs.readdirSync(out).some((f) => /^ckpt-e0001-s0000(09|1\d)/.test(f)))) {
    if (firstExit !== undefined) throw new Error(`the first coordinator exited (${firstExit}) before it could be killed mid-run:\n${first.output()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  first.child.kill('SIGKILL');
  const before = await readMetrics(metricsFile);
  // Epoch 1 is recorded; epoch 3 cannot be (it ends at step 24).
  expect([[1], [1, 2]]).toContainEqual(before.map((m) => m.epoch));
  expect(await first.exited).toBeNull();

  const second = start('coordinator/cli.js', [...coordinatorArgs, '--resume']);
  expect(await second.exited).toBe(0);
  expect(second.output()).toMatch(/resumed from .*ckpt-e0001/);
  const codes = await Promise.all(workers.map((w) => w.exited));
  expect(codes).toEqual([0, 0]);
  for (const w of workers) expect(w.output()).toMatch(/lost the coordinator[\s\S]*joined as rank [01] of 2[\s\S]*worker: done/);

  const after = await readMetrics(metricsFile);
  expect(after.map((m) => m.epoch)).toEqual([1, 2, 3]);
  // The epochs finished before the kill keep their metrics.
  expect(after.slice(0, before.length)).toEqual(before);
}, 120_000);
