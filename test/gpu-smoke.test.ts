// scripts/gpu-smoke as a user without a GPU runs it (this machine has no
// @tensorflow/tfjs-node(-gpu)): load fails with the install advice, the
// checks that need the native backend are skipped with that reason, the
// failing-worker check still runs for real on wasm, the JSON lists every
// check, and the exit code is 1 because a check failed.
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, describe, expect, test } from 'vitest';
import { tensorflowInstalled } from '../src/common/backend/backend.js';
import { makeTempDir } from './helpers/data-fixtures.js';
import { root } from './helpers/node-process.js';

const out = makeTempDir('gpu-smoke');
afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

interface Check { check: string; status: 'pass' | 'fail' | 'skipped'; detail: string; numbers: Record<string, number> }

async function smoke(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [path.join(root, 'dist/scripts/gpu-smoke.js'), ...args], { cwd: root, encoding: 'utf8' });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe.skipIf(tensorflowInstalled())('scripts/gpu-smoke without the tensorflow backend', () => {
  test('load fails with the install advice, the rest is skipped or runs on wasm, exit 1', async () => {
    const json = path.join(out, 'gpu-smoke.json');
    const r = await smoke(['--model', 'resnet18', '--width', '4', '--batch', '8', '--steps', '2', '--out', json]);
    expect(r.code, r.stderr).toBe(1);

    const report = JSON.parse(fs.readFileSync(json, 'utf8')) as { checks: Check[]; summary: Record<string, number> };
    const byName = new Map(report.checks.map((c) => [c.check, c]));
    expect(report.checks.map((c) => c.check)).toEqual(['load', 'agree', 'throughput', 'two-workers', 'tensorboard', 'killed-worker']);

    expect(byName.get('load')).toMatchObject({ status: 'fail', numbers: { loaded: 0 } });
    expect(byName.get('load')!.detail).toMatch(/needs @tensorflow\/tfjs-node-gpu \(or @tensorflow\/tfjs-node\): run "npm install @tensorflow\/tfjs-node-gpu"/);
    for (const c of ['agree', 'throughput', 'two-workers', 'tensorboard']) {
      expect(byName.get(c), c).toMatchObject({ status: 'skipped', detail: 'needs the tensorflow backend (see load)' });
    }
    const killed = byName.get('killed-worker')!;
    expect(killed.status, killed.detail).toBe('pass');
    expect(killed.detail).toMatch(/^on wasm, as tensorflow does not load here: exit 1 with "coordinator: error: .*injected failure at step 1 \(TFJS_DDP_THROW_AT\)"$/);
    expect(report.summary).toEqual({ pass: 1, fail: 1, skipped: 4 });

    // The table: one row per check, then the summary with the reason for the skips.
    for (const c of report.checks) expect(r.stdout).toMatch(new RegExp(`^${c.check} +${c.status} +\\S`, 'm'));
    expect(r.stdout).toMatch(/^1 passed, 1 failed, 4 skipped \(agree, throughput, two-workers, tensorboard: needs the tensorflow backend \(see load\)\)$/m);
    expect(r.stdout).toContain(`wrote ${json}`);
  }, 120_000);

  test('--skip-multi skips the multi-worker checks with that reason', async () => {
    const json = path.join(out, 'skip-multi.json');
    const r = await smoke(['--skip-multi', '--out', json]);
    expect(r.code, r.stderr).toBe(1);
    const report = JSON.parse(fs.readFileSync(json, 'utf8')) as { checks: Check[] };
    expect(report.checks.map((c) => [c.check, c.status, c.detail.split(' (')[0]])).toEqual([
      ['load', 'fail', expect.stringMatching(/^backend "tensorflow" needs/)],
      ['agree', 'skipped', 'needs the tensorflow backend'],
      ['throughput', 'skipped', 'needs the tensorflow backend'],
      ['two-workers', 'skipped', '--skip-multi'],
      ['tensorboard', 'skipped', '--skip-multi'],
      ['killed-worker', 'skipped', '--skip-multi'],
    ]);
  }, 60_000);
});
