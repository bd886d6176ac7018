// The tfjs-ddp utility subcommands as users run them: the compiled CLI in a
// child process, its stdout, and its exit codes (0 ok, 1 runtime, 2 usage).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { beforeAll, describe, expect, test } from 'vitest';
import { CIFAR10_CLASSES } from '../src/common/data/cifar10.js';
import { GOLDEN_DIR } from './helpers/golden.js';
import { makeTempDir } from './helpers/data-fixtures.js';
import { trainSmallCheckpoint, type SmallCheckpoint } from './helpers/small-checkpoint.js';

const root = path.resolve(import.meta.dirname, '..');
const cli = (...args: string[]) =>
  spawnSync(process.execPath, [path.join(root, 'dist/src/cli/tfjs-ddp.js'), ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });
const FIXTURE = path.join(GOLDEN_DIR, 'resnet18-w4.safetensors');

/** One line on stderr, and no stack trace. */
function expectOneLineError(r: ReturnType<typeof cli>, status: number, message: RegExp): void {
  expect(r.status, r.stderr).toBe(status);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(message);
}

describe('tfjs-ddp utility commands', () => {
  let ckpt: SmallCheckpoint;
  let dir: string;
  beforeAll(async () => {
    ckpt = await trainSmallCheckpoint();
    dir = makeTempDir('cli-utils');
    const png = new PNG({ width: 32, height: 32 });
    png.data.fill(200);
    fs.writeFileSync(path.join(dir, 'grey.png'), PNG.sync.write(png));
    const rgba = Buffer.alloc(48 * 40 * 4, 90);
    fs.writeFileSync(path.join(dir, 'photo.jpg'), jpeg.encode({ data: rgba, width: 48, height: 40 }, 90).data);
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'not an image');
  });

  test('help lists the subcommands', () => {
    const r = cli('--help');
    expect(r.status).toBe(0);
    for (const c of ['models', 'export', 'import', 'evaluate', 'predict']) expect(r.stdout).toMatch(new RegExp(`^  ${c} `, 'm'));
  });

  test('evaluate prints accuracy, per-class accuracy and the confusion matrix, and writes confusion.png', () => {
    const out = makeTempDir('cli-eval');
    const r = cli('evaluate', ckpt.file, '--backend', 'wasm', '--out', out);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`accuracy ${ckpt.result.history[0].test_acc.toFixed(4)} (`);
    expect(r.stdout).toMatch(/\/40\), loss \d+\.\d{4}\nper-class accuracy:\n/);
    expect(r.stdout).toMatch(/^ +9 narrow-rings +\d+ +\d+/m); // last matrix row
    expect(r.stdout).toContain(`wrote ${path.join(out, 'confusion.png')}`);
    expect(fs.existsSync(path.join(out, 'confusion.png'))).toBe(true);
  });

  test('predict prints the top 3 for a PNG and a JPEG', () => {
    const r = cli('predict', ckpt.file, path.join(dir, 'grey.png'), path.join(dir, 'photo.jpg'), '--backend', 'cpu');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(8);
    expect(lines[0]).toBe(path.join(dir, 'grey.png'));
    for (const l of [...lines.slice(1, 4), ...lines.slice(5, 8)]) expect(l).toMatch(/^ {2}[123]\. [a-z-]+ +[01]\.\d{4}$/);
  });

  test('export writes both formats; import makes a checkpoint that predict uses', () => {
    const tfjsOut = makeTempDir('cli-tfjs');
    const t = cli('export', ckpt.dir, '--format', 'tfjs', '--out', tfjsOut);
    expect(t.status, t.stderr).toBe(0);
    expect(fs.readdirSync(tfjsOut).sort()).toEqual(['group1-shard1of1.bin', 'model.json']);
    const stOut = makeTempDir('cli-st');
    expect(cli('export', ckpt.file, '--format', 'safetensors', '--out', stOut).status).toBe(0);

    const imported = makeTempDir('cli-import');
    const i = cli('import', FIXTURE, '--prefix', 'step2/', '--dataset', 'cifar10', '--out', imported);
    expect(i.status, i.stderr).toBe(0);
    expect(i.stdout).toMatch(/resnet18 width 4, 10 classes, 3 input channel\(s\), BatchNorm, dataset cifar10, step 2/);
    const p = cli('predict', imported, path.join(dir, 'grey.png'), '--backend', 'cpu');
    expect(p.status, p.stderr).toBe(0);
    const names = p.stdout.split('\n').slice(1, 4).map((l) => l.trim().split(/\s+/)[1]);
    expect(names.every((n) => CIFAR10_CLASSES.includes(n))).toBe(true);
  });

  test('usage errors exit 2 with one line naming the flag', () => {
    expectOneLineError(cli('export', ckpt.file, '--format', 'onnx', '--out', dir), 2, /'onnx' is invalid\. Allowed choices are tfjs, safetensors/);
    expectOneLineError(cli('export', ckpt.file, '--format', 'tfjs'), 2, /required option '--out <dir>'/);
    expectOneLineError(cli('import', FIXTURE, '--prefix', 'init/', '--out', makeTempDir('cli-imp2')), 2, /pass --dataset cifar10 or --dataset synthetic/);
    expectOneLineError(cli('evaluate', ckpt.file, '--test-limit', '0'), 2, /--test-limit.*expected an integer >= 1/);
  });

  test('runtime errors exit 1 with one line naming the problem and the fix', () => {
    expectOneLineError(cli('export', path.join(dir, 'none.safetensors'), '--format', 'tfjs', '--out', dir), 1, /^tfjs-ddp: error: checkpoint .*none\.safetensors does not exist; pass a ckpt-/);
    const corrupt = path.join(dir, 'ckpt-e0001-s000004.safetensors');
    fs.writeFileSync(corrupt, fs.readFileSync(ckpt.file).subarray(0, 2000));
    expectOneLineError(cli('evaluate', corrupt, '--backend', 'cpu'), 1, /truncated .*delete it/);
    expectOneLineError(cli('evaluate', FIXTURE, '--backend', 'cpu'), 1, /not a tfjs-ddp checkpoint.*run `tfjs-ddp import/);
    expectOneLineError(cli('predict', ckpt.file, path.join(dir, 'notes.txt')), 1, /notes\.txt: not a PNG or JPEG file .*convert it to PNG or JPEG/);
  });
});
