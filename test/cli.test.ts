// The commands users type, run as real processes from the compiled build.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');
const bin = (name: string) => path.join(root, 'dist/src', name);
const run = (script: string, args: string[]) =>
  spawnSync(process.execPath, [bin(script), ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 });

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
});
