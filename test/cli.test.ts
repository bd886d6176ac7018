// The coordinator command as users run it, a real process from the compiled
// build: it trains in one process and writes its outputs, and every runtime
// failure is one line on stderr and exit 1. Its --help and usage errors
// (exit 2) are in cli-help.test.ts, the tfjs-ddp subcommands in
// cli-utilities.test.ts.
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { root } from './helpers/node-process.js';

const bin = (name: string) => path.join(root, 'dist/src', name);
const run = (script: string, args: string[]) =>
  spawnSync(process.execPath, [bin(script), ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 });

/** Like run, but asynchronous, so this process can keep serving a socket meanwhile. */
function spawnAsync(script: string, args: string[]): Promise<{ status: number | null; stderr: string }> {
  const child = spawn(process.execPath, [bin(script), ...args], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (status) => resolve({ status, stderr })));
}

describe('coordinator', () => {
  test('trains in one process and writes its outputs', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-cli-'));
    const r = run('coordinator/cli.js', [
      '--workers', '1', '--model', 'resnet18', '--width', '4', '--dataset', 'synthetic', '--epochs', '1',
      '--batch-size', '32', '--train-limit', '64', '--test-limit', '32', '--backend', 'wasm', '--out', out,
    ]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/epoches: 1 train_loss: \d\.\d{4} train_acc: \d\.\d{4}  --> test_loss: \d+\.\d{4} test_acc: \d\.\d{4}/);
    for (const f of ['metrics.jsonl', 'curves.png', 'samples.png', 'ckpt-e0001-s000002.safetensors']) expect(fs.existsSync(path.join(out, f))).toBe(true);
  });

  test('a missing dataset exits 1 with one clear line, no stack trace', () => {
    const r = run('coordinator/cli.js', ['--dataset', 'cifar10', '--data-dir', '/nonexistent/cifar', '--no-download', '--backend', 'cpu', '--out', fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-cli-'))]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/coordinator: error: .*data_batch_1\.bin/s);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  test('the tensorflow backend, absent here, is explained in one line', () => {
    const r = run('coordinator/cli.js', ['--backend', 'tensorflow', '--dataset', 'synthetic', '--out', fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-cli-'))]);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/npm install @tensorflow\/tfjs-node-gpu/);
  });

  test('a port in use and an unwritable --out exit 1 with one line each', async () => {
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', () => resolve()));
    const port = (busy.address() as net.AddressInfo).port;
    const tiny = ['--model', 'resnet18', '--width', '2', '--dataset', 'synthetic', '--train-limit', '24', '--test-limit', '8', '--backend', 'cpu', '--no-plots'];
    try {
      const r = spawnAsync('coordinator/cli.js', ['--workers', '2', '--port', String(port), ...tiny, '--out', fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-cli-'))]);
      const { status, stderr } = await r;
      expect(status).toBe(1);
      expect(stderr.trim().split('\n')).toEqual([expect.stringMatching(/^coordinator: error: cannot listen on 127\.0\.0\.1:\d+: .*another program uses port \d+: pick another --port$/)]);
    } finally {
      busy.close();
    }
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-cli-')), 'a-file');
    fs.writeFileSync(file, 'not a directory');
    const w = run('coordinator/cli.js', [...tiny, '--out', path.join(file, 'run')]);
    expect(w.status).toBe(1);
    expect(w.stderr.trim().split('\n')).toHaveLength(1);
    expect(w.stderr).toMatch(/^coordinator: error: .*a-file/);
  });

  test('local worker processes take their GPUs from --gpus as indexes into CUDA_VISIBLE_DEVICES, and share them with TF_FORCE_GPU_ALLOW_GROWTH', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-cli-'));
    const r = spawnSync(process.execPath, [bin('coordinator/cli.js'),
      '--workers', '3', '--gpus', '1,0', '--local-mode', 'process', '--port', '0', '--dashboard', 'false', '--model', 'resnet18', '--width', '2',
      '--dataset', 'synthetic', '--train-limit', '24', '--test-limit', '8', '--batch-size', '12', '--max-steps', '1', '--backend', 'cpu', '--no-plots', '--out', out,
    ], { cwd: root, encoding: 'utf8', timeout: 120_000, env: { ...process.env, CUDA_VISIBLE_DEVICES: '4,5', TF_FORCE_GPU_ALLOW_GROWTH: 'true' } });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('3 local workers share 2 GPUs (--gpus 1,0 of CUDA_VISIBLE_DEVICES=4,5) round robin');
    // Process i gets entry gpus[i % 2] of the inherited list: 5, 4, 5. Ranks are handed out as they join, so count them.
    const ready = [...r.stdout.matchAll(/^rank \d: ready, backend cpu, CUDA_VISIBLE_DEVICES=(\S+)$/gm)].map((m) => m[1]).sort();
    expect(ready).toEqual(['4', '5', '5']);
  });
});
