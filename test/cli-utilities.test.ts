// The tfjs-ddp utility subcommands as users run them: the compiled CLI in a
// child process, what it prints, the files it writes, and runtime errors as
// one line with exit 1. Whether evaluate's and predict's numbers are right is
// evaluate-predict.test.ts; --help and usage errors (exit 2) are
// cli-help.test.ts.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { beforeAll, describe, expect, test } from 'vitest';
import { CIFAR10_CLASSES } from '../src/common/data/cifar10.js';
import { GOLDEN_DIR } from './helpers/golden.js';
import { makeTempDir } from './helpers/data-fixtures.js';
import { root } from './helpers/node-process.js';
import { trainSmallCheckpoint, type SmallCheckpoint } from './helpers/small-checkpoint.js';

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

  test('models prints PyTorch parameter counts', () => {
    const r = cli('models');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^width 64, 10 classes, 3 input channels\nmodel +parameters +batchnorms\n/);
    for (const count of ['11,173,962', '21,282,122', '23,520,842', '42,512,970', '58,156,618']) expect(r.stdout).toContain(count);
  });

  test('evaluate prints accuracy, per-class accuracy and the confusion matrix, and writes confusion.png beside the checkpoint', () => {
    const r = cli('evaluate', ckpt.file, '--backend', 'wasm');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`accuracy ${ckpt.result.history[0].test_acc.toFixed(4)} (`);
    expect(r.stdout).toMatch(/\/40\), loss \d+\.\d{4}\nper-class accuracy:\n\s+0 wide-horizontal-stripes\s+\d\.\d{4}  \(\d\/4\)\n/);
    expect(r.stdout).toMatch(/confusion matrix \(rows: true class, columns: predicted class\):/);
    expect(r.stdout).toMatch(/^ +9 narrow-rings +\d+ +\d+/m); // last matrix row
    const png = path.join(ckpt.dir, 'confusion.png'); // no --out: the checkpoint's directory
    expect(r.stdout).toContain(`wrote ${png}`);
    expect(fs.existsSync(png)).toBe(true);
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

  test('runtime errors exit 1 with one line naming the problem and the fix', () => {
    expectOneLineError(cli('export', path.join(dir, 'none.safetensors'), '--format', 'tfjs', '--out', dir), 1,
      /^tfjs-ddp: error: checkpoint .*none\.safetensors does not exist; pass a ckpt-e\*-s\*\.safetensors file or the --out directory/);
    const corrupt = path.join(dir, 'ckpt-e0001-s000004.safetensors');
    fs.writeFileSync(corrupt, fs.readFileSync(ckpt.file).subarray(0, 2000));
    expectOneLineError(cli('evaluate', corrupt, '--backend', 'cpu'), 1, /truncated .*delete it/);
    expectOneLineError(cli('evaluate', FIXTURE, '--backend', 'cpu'), 1, /not a tfjs-ddp checkpoint.*run `tfjs-ddp import/);
    // What the message says about each kind of bad image: evaluate-predict.test.ts.
    expectOneLineError(cli('predict', ckpt.file, path.join(dir, 'notes.txt')), 1, /^tfjs-ddp: error: cannot read image .*notes\.txt: /);
  });
});
