import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  checkpointFileName,
  CheckpointError,
  listCheckpoints,
  loadNewestValidCheckpoint,
  parseCheckpointFileName,
  pruneCheckpoints,
  readCheckpoint,
  writeCheckpoint,
} from '../src/common/io/checkpoint.js';
import { encodeSafetensors, readSafetensors } from '../src/common/io/safetensors.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'tfjs-ddp-ckpt-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function sampleCheckpoint(step: number) {
  const weights = new Float32Array(4 * 3 * 3 * 3).map((_, i) => Math.sin(i + step));
  return {
    meta: { epoch: Math.floor(step / 10), step, rng: [1, 2, 3, step], config: { model: 'resnet18', lr: 0.1 }, history: [{ test_acc: 0.5 }] },
    tensors: {
      'conv1.weight': weights,
      'momentum/conv1.weight': weights.map((v) => v * 0.5),
      'bn1.running_mean': new Float32Array([0.25, -1, 3.5, 1e-8]),
    },
    shapes: { 'conv1.weight': [4, 3, 3, 3], 'momentum/conv1.weight': [4, 3, 3, 3] },
  };
}

async function expectCheckpointError(promise: Promise<unknown>, pattern: RegExp): Promise<CheckpointError> {
  const err = await promise.then(
    () => {
      throw new Error('expected a CheckpointError');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CheckpointError);
  expect((err as Error).message).toMatch(pattern);
  return err as CheckpointError;
}

/** A pid that certainly belonged to a process that has exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', '0']);
  return child.pid!;
}

describe('checkpoint file names', () => {
  it('formats and parses epoch and step', () => {
    expect(checkpointFileName(3, 391)).toBe('ckpt-e0003-s000391.safetensors');
    expect(parseCheckpointFileName('ckpt-e0003-s000391.safetensors')).toEqual({ epoch: 3, step: 391 });
    expect(parseCheckpointFileName('ckpt-e12345-s1234567.safetensors')).toEqual({ epoch: 12345, step: 1234567 });
    expect(parseCheckpointFileName('.ckpt-e0003-s000391.safetensors.123.ab.tmp')).toBeNull();
    expect(parseCheckpointFileName('model.safetensors')).toBeNull();
    expect(() => checkpointFileName(-1, 0)).toThrow(/non-negative integers/);
  });
});

describe('writeCheckpoint / readCheckpoint', () => {
  it('round-trips meta, tensors and shapes', async () => {
    const ckpt = sampleCheckpoint(391);
    const file = await writeCheckpoint(dir, checkpointFileName(39, 391), ckpt);
    expect(file).toBe(path.join(dir, 'ckpt-e0039-s000391.safetensors'));

    const back = await readCheckpoint(file);
    expect(back.meta).toEqual(ckpt.meta);
    expect(Object.keys(back.tensors)).toEqual(Object.keys(ckpt.tensors));
    for (const [name, data] of Object.entries(ckpt.tensors)) {
      expect(back.tensors[name]).toBeInstanceOf(Float32Array);
      expect(Array.from(back.tensors[name])).toEqual(Array.from(data));
    }
    expect(back.shapes['conv1.weight']).toEqual([4, 3, 3, 3]);
    expect(back.shapes['bn1.running_mean']).toEqual([4]);
    // Only the final file is left behind: no temp files.
    expect(await readdir(dir)).toEqual(['ckpt-e0039-s000391.safetensors']);
  });

  it('is a plain safetensors file that other tools (PyTorch) can read', async () => {
    const file = await writeCheckpoint(dir, 'ckpt-e0001-s000010.safetensors', sampleCheckpoint(10));
    const plain = readSafetensors(await readFile(file));
    expect(plain.tensors.get('conv1.weight')!.dtype).toBe('F32');
    expect(plain.tensors.get('conv1.weight')!.shape).toEqual([4, 3, 3, 3]);
    expect(JSON.parse(plain.metadata.tfjs_ddp)).toMatchObject({ format: 'tfjs-ddp-checkpoint', format_version: 1, meta: { step: 10 } });
    expect(plain.metadata.tfjs_ddp_sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('replaces an existing checkpoint of the same name', async () => {
    await writeCheckpoint(dir, 'ckpt-e0001-s000010.safetensors', sampleCheckpoint(10));
    const file = await writeCheckpoint(dir, 'ckpt-e0001-s000010.safetensors', sampleCheckpoint(11));
    expect((await readCheckpoint<{ step: number }>(file)).meta.step).toBe(11);
  });

  it('rejects bad names, non-Float32 tensors, mismatched shapes and unserialisable meta', async () => {
    const ok = sampleCheckpoint(1);
    await expectCheckpointError(writeCheckpoint(dir, '../escape.safetensors', ok), /plain file name/);
    await expectCheckpointError(writeCheckpoint(dir, 'ckpt.bin', ok), /ending in \.safetensors/);
    await expectCheckpointError(
      writeCheckpoint(dir, 'a.safetensors', { meta: {}, tensors: { w: new Float64Array(2) as unknown as Float32Array } }),
      /tensor "w" must be a Float32Array, got Float64Array/,
    );
    await expectCheckpointError(
      writeCheckpoint(dir, 'a.safetensors', { meta: {}, tensors: { w: new Float32Array(6) }, shapes: { w: [4, 2] } }),
      /shape \[4,2\] does not match its 6 elements/,
    );
    await expectCheckpointError(writeCheckpoint(dir, 'a.safetensors', { meta: { n: 1n }, tensors: {} }), /meta is not JSON-serialisable/);
    expect(await readdir(dir)).toEqual([]);
  });

  it('reports an unwritable directory clearly', async () => {
    const notADir = path.join(dir, 'file');
    await writeFile(notADir, 'x');
    await expectCheckpointError(writeCheckpoint(path.join(notADir, 'ckpts'), 'a.safetensors', sampleCheckpoint(1)), /cannot create the checkpoint directory: a path component is not a directory \(ENOTDIR\)/);
  });
});

describe('crash safety', () => {
  it('a writer that died mid-write leaves the previous checkpoint loadable, and prune clears its temp file', async () => {
    const previous = await writeCheckpoint(dir, checkpointFileName(1, 100), sampleCheckpoint(100));
    // What a writer killed mid-write leaves behind: half of the next checkpoint under a temp name.
    const next = await writeCheckpoint(path.join(dir, 'scratch'), checkpointFileName(2, 200), sampleCheckpoint(200));
    const half = (await readFile(next)).subarray(0, 300);
    const orphan = `.${checkpointFileName(2, 200)}.${deadPid()}.0badc0de.tmp`;
    await writeFile(path.join(dir, orphan), half);

    expect((await listCheckpoints(dir)).map((e) => e.path)).toEqual([previous]);
    const warnings: string[] = [];
    const loaded = await loadNewestValidCheckpoint<{ step: number }>(dir, (m) => warnings.push(m));
    expect(loaded.meta.step).toBe(100);
    expect(warnings).toEqual([]);

    expect(await pruneCheckpoints(dir)).toEqual([path.join(dir, orphan)]);
    expect((await readdir(dir)).sort()).toEqual([checkpointFileName(1, 100), 'scratch']);
  });

  it('prune leaves temp files of live writers alone', async () => {
    const live = `.${checkpointFileName(2, 200)}.${process.pid}.0123abcd.tmp`;
    await writeFile(path.join(dir, live), 'partial');
    expect(await pruneCheckpoints(dir)).toEqual([]);
    expect(await readdir(dir)).toEqual([live]);
  });

  it('a failed write removes its temp file and keeps the previous checkpoint intact', async () => {
    const previous = await writeCheckpoint(dir, checkpointFileName(1, 100), sampleCheckpoint(100));
    const before = await readFile(previous);
    // A non-empty directory where the new file should go makes the final rename fail.
    const blocked = checkpointFileName(2, 200);
    await mkdir(path.join(dir, blocked, 'inside'), { recursive: true });
    await expectCheckpointError(writeCheckpoint(dir, blocked, sampleCheckpoint(200)), /write failed: .*the previous checkpoints are untouched/);

    expect((await readdir(dir)).sort()).toEqual([checkpointFileName(1, 100), blocked]);
    expect(Buffer.compare(await readFile(previous), before)).toBe(0);
  });
});

describe('corruption detection', () => {
  it('flipping one data byte gives a checksum error', async () => {
    const file = await writeCheckpoint(dir, 'ckpt-e0001-s000010.safetensors', sampleCheckpoint(10));
    const bytes = await readFile(file);
    bytes[bytes.length - 5] ^= 0x01;
    await writeFile(file, bytes);
    const err = await expectCheckpointError(readCheckpoint(file), /checksum mismatch/);
    expect(err.file).toBe(file);
    expect(err.message).toContain(file);
  });

  it('editing the meta in the header gives a checksum error', async () => {
    const file = await writeCheckpoint(dir, 'ckpt-e0001-s000010.safetensors', sampleCheckpoint(10));
    const text = (await readFile(file)).toString('latin1');
    // Same length, still valid JSON: only the checksum can catch it.
    await writeFile(file, Buffer.from(text.replace('\\"lr\\":0.1', '\\"lr\\":0.9'), 'latin1'));
    await expectCheckpointError(readCheckpoint(file), /checksum mismatch/);
  });

  it('a truncated file gives a clear "truncated" error', async () => {
    const file = await writeCheckpoint(dir, 'ckpt-e0001-s000010.safetensors', sampleCheckpoint(10));
    const bytes = await readFile(file);
    await writeFile(file, bytes.subarray(0, bytes.length - 100));
    await expectCheckpointError(readCheckpoint(file), /is truncated/);
    await writeFile(file, bytes.subarray(0, 50));
    await expectCheckpointError(readCheckpoint(file), /is truncated/);
  });

  it('a plain safetensors file is "not a tfjs-ddp checkpoint"', async () => {
    const file = path.join(dir, 'model.safetensors');
    await writeFile(file, encodeSafetensors({ w: { dtype: 'F32', shape: [1], data: new Float32Array(1) } }, { framework: 'pt' }));
    await expectCheckpointError(readCheckpoint(file), /not a tfjs-ddp checkpoint/);
  });

  it('a newer format version is "unsupported"', async () => {
    const file = path.join(dir, 'future.safetensors');
    const envelope = JSON.stringify({ format: 'tfjs-ddp-checkpoint', format_version: 2, meta: {} });
    await writeFile(file, encodeSafetensors({}, { tfjs_ddp: envelope, tfjs_ddp_sha256: '0'.repeat(64) }));
    await expectCheckpointError(readCheckpoint(file), /unsupported checkpoint format version 2.*upgrade tfjs-ddp/);
  });

  it('a missing file is reported as such', async () => {
    await expectCheckpointError(readCheckpoint(path.join(dir, 'nope.safetensors')), /nope\.safetensors: file does not exist/);
  });
});

describe('listing, pruning and loading the newest', () => {
  async function writeSteps(steps: Array<[number, number]>): Promise<void> {
    for (const [epoch, step] of steps) await writeCheckpoint(dir, checkpointFileName(epoch, step), sampleCheckpoint(step));
  }

  it('lists newest first by step number, not by write order or name', async () => {
    // Written out of order; step 1000000 outgrows the zero padding, so names alone would mislead.
    await writeSteps([[5, 1_000_000], [1, 10], [4, 999_999], [2, 20]]);
    await writeFile(path.join(dir, 'notes.txt'), 'ignored');
    expect((await listCheckpoints(dir)).map((e) => e.step)).toEqual([1_000_000, 999_999, 20, 10]);
    expect(await listCheckpoints(path.join(dir, 'missing'))).toEqual([]);
  });

  it('prune keeps the newest three by default', async () => {
    await writeSteps([[1, 10], [2, 20], [3, 30], [4, 40], [5, 50]]);
    const removed = await pruneCheckpoints(dir);
    expect(removed.map((p) => path.basename(p)).sort()).toEqual([checkpointFileName(1, 10), checkpointFileName(2, 20)]);
    expect((await listCheckpoints(dir)).map((e) => e.step)).toEqual([50, 40, 30]);
    expect(await pruneCheckpoints(dir, 1)).toHaveLength(2);
    expect((await listCheckpoints(dir)).map((e) => e.step)).toEqual([50]);
    await expect(pruneCheckpoints(dir, 0)).rejects.toThrow(/keep must be an integer >= 1/);
  });

  it('falls back past a corrupt newest checkpoint with a warning', async () => {
    await writeSteps([[1, 10], [2, 20], [3, 30]]);
    const newest = path.join(dir, checkpointFileName(3, 30));
    const bytes = await readFile(newest);
    await writeFile(newest, bytes.subarray(0, bytes.length / 2));

    const warnings: string[] = [];
    const loaded = await loadNewestValidCheckpoint<{ step: number }>(dir, (m) => warnings.push(m));
    expect(loaded.step).toBe(20);
    expect(loaded.epoch).toBe(2);
    expect(loaded.meta.step).toBe(20);
    expect(loaded.path).toBe(path.join(dir, checkpointFileName(2, 20)));
    expect(Array.from(loaded.tensors['bn1.running_mean'])).toEqual(Array.from(sampleCheckpoint(20).tensors['bn1.running_mean']));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/skipping checkpoint .*ckpt-e0003-s000030\.safetensors: the file is truncated/);
  });

  it('errors clearly when nothing valid is left', async () => {
    await expectCheckpointError(loadNewestValidCheckpoint(dir, () => undefined), /no checkpoints found/);
    await writeFile(path.join(dir, checkpointFileName(1, 10)), 'garbage');
    const warnings: string[] = [];
    await expectCheckpointError(loadNewestValidCheckpoint(dir, (m) => warnings.push(m)), /none of the 1 checkpoints is valid/);
    expect(warnings).toHaveLength(1);
  });
});
