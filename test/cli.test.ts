// The commands users type, run as real processes from the compiled build.
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');
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

describe('command line', () => {
  test('tfjs-ddp models prints PyTorch parameter counts', () => {
    const r = run('cli/tfjs-ddp.js', ['models']);
    expect(r.status).toBe(0);
    for (const count of ['11,173,962', '21,282,122', '23,520,842', '42,512,970', '58,156,618']) expect(r.stdout).toContain(count);
  });

  test('coordinator trains in one process and writes its outputs', () => {
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

  test('bad flags exit 2 with a message naming the flag', () => {
    const r = run('coordinator/cli.js', ['--batch-size', 'zero']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--batch-size/);
    const m = run('coordinator/cli.js', ['--model', 'resnet19']);
    expect(m.status).toBe(2);
    expect(m.stderr).toMatch(/resnet18, resnet34/);
    const p = run('coordinator/cli.js', ['--workers', '2', '--on-worker-loss', 'retry']);
    expect(p.status).toBe(2);
    expect(p.stderr).toMatch(/--on-worker-loss.*Allowed choices are shrink, wait, abort/);
  });

  test('a missing dataset exits 1 with one clear line, no stack trace', () => {
    const r = run('coordinator/cli.js', ['--dataset', 'cifar10', '--data-dir', '/nonexistent/cifar', '--no-download', '--backend', 'cpu', '--out', fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-cli-'))]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/coordinator: error: .*data_batch_1\.bin/s);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  test('the tensorflow backend, absent here, is explained in one line', () => {
    const r = run('coordinator/cli.js', ['--backend', 'tensorflow', '--out', fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-cli-'))]);
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
});
