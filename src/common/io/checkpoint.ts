// Training checkpoints: safetensors files (so PyTorch can read the weights) written
// atomically and verified by a SHA-256 checksum on load.
//
// `__metadata__` holds two keys:
//   tfjs_ddp         JSON string { format, format_version, writer, meta } where `meta` is the
//                    caller's opaque object (config, epoch, step, RNG state, history, ...)
//   tfjs_ddp_sha256  hex SHA-256 over the tensor index, the tfjs_ddp JSON and the data section,
//                    so a flipped bit anywhere that matters is caught before training resumes.

import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import { writeFileAtomic } from '../fs/atomic-file.js';
import path from 'node:path';
import { encodeHeader, layoutTensors, readSafetensors, SafetensorsError, type SafetensorsLayout, type SafetensorsTensor } from './safetensors.js';
import { packageVersion } from '../fs/package-version.js';

export const CHECKPOINT_FORMAT = 'tfjs-ddp-checkpoint';
export const CHECKPOINT_FORMAT_VERSION = 1;
const META_KEY = 'tfjs_ddp';
const CHECKSUM_KEY = 'tfjs_ddp_sha256';
const CHECKPOINT_NAME = /^ckpt-e(\d+)-s(\d+)\.safetensors$/;
// Temp files start with a dot (hidden, never matched by CHECKPOINT_NAME) and carry the
// writer's pid so a later run can tell a crashed writer's leftovers from a live write.
const TEMP_NAME = /^\..+\.(\d+)\.[0-9a-f]+\.tmp$/;

export class CheckpointError extends Error {
  constructor(
    /** The checkpoint file (or directory) the problem is about. */
    readonly file: string,
    problem: string,
  ) {
    super(`checkpoint ${file}: ${problem}`);
    this.name = 'CheckpointError';
  }
}

export interface Checkpoint<Meta = unknown> {
  /** JSON-serialisable; round-trips with JSON semantics (NaN and Infinity become null). */
  meta: Meta;
  tensors: Record<string, Float32Array>;
  /** Optional tensor shapes (e.g. PyTorch layouts); tensors without one are stored 1-D. */
  shapes?: Record<string, number[]>;
}

export interface CheckpointEntry {
  path: string;
  name: string;
  epoch: number;
  step: number;
}

export interface LoadedCheckpoint<Meta = unknown> extends CheckpointEntry {
  meta: Meta;
  tensors: Record<string, Float32Array>;
  shapes: Record<string, number[]>;
}

/** `ckpt-e0003-s000391.safetensors`: zero-padded so names also sort sensibly in `ls`. */
export function checkpointFileName(epoch: number, step: number): string {
  if (!Number.isSafeInteger(epoch) || epoch < 0 || !Number.isSafeInteger(step) || step < 0) {
    throw new RangeError(`checkpoint epoch and step must be non-negative integers, got epoch=${epoch} step=${step}`);
  }
  return `ckpt-e${String(epoch).padStart(4, '0')}-s${String(step).padStart(6, '0')}.safetensors`;
}

export function parseCheckpointFileName(name: string): { epoch: number; step: number } | null {
  const m = CHECKPOINT_NAME.exec(name);
  return m ? { epoch: Number(m[1]), step: Number(m[2]) } : null;
}

// ---------------------------------------------------------------------------------------
// Checksum

/**
 * Covers the tensor index (names, shapes, offsets), the metadata JSON and every data byte.
 * Entries must be in data order: the writer lays them out that way and the reader returns
 * them that way, so the digest does not depend on the header's JSON key order.
 */
function checksum(layout: SafetensorsLayout, metaJson: string): string {
  const hash = createHash('sha256');
  hash.update(`${CHECKPOINT_FORMAT} v${CHECKPOINT_FORMAT_VERSION}\n`);
  hash.update(JSON.stringify(layout.entries.map((e) => [e.name, e.dtype, e.shape, e.begin, e.end])));
  hash.update('\n');
  hash.update(metaJson);
  hash.update('\n');
  for (const e of layout.entries) hash.update(e.bytes);
  return hash.digest('hex');
}

// ---------------------------------------------------------------------------------------
// Writing

function describeFsError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const hints: Record<string, string> = {
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EROFS: 'read-only file system',
    ENOSPC: 'no space left on the device',
    EDQUOT: 'disk quota exceeded',
    ENOTDIR: 'a path component is not a directory',
  };
  return e.code && hints[e.code] ? `${hints[e.code]} (${e.code})` : (e.message ?? String(err));
}

/**
 * Writes `dir/name` atomically: the data goes to a hidden temp file in the same directory,
 * is fsynced, then renamed over the final name. Readers therefore see either the previous
 * file or the complete new one, never a partial one. Creates `dir` if needed. Returns the
 * final path.
 */
export async function writeCheckpoint(dir: string, name: string, ckpt: Checkpoint): Promise<string> {
  const finalPath = path.join(dir, name);
  if (name !== path.basename(name) || !name.endsWith('.safetensors') || name.startsWith('.')) {
    throw new CheckpointError(finalPath, `name must be a plain file name ending in .safetensors (use checkpointFileName(epoch, step)), got ${JSON.stringify(name)}`);
  }

  const tensors: Record<string, SafetensorsTensor> = {};
  for (const [key, data] of Object.entries(ckpt.tensors)) {
    if (!(data instanceof Float32Array)) {
      throw new CheckpointError(finalPath, `tensor "${key}" must be a Float32Array, got ${(data as object)?.constructor?.name}`);
    }
    tensors[key] = { dtype: 'F32', shape: ckpt.shapes?.[key] ?? [data.length], data };
  }
  for (const key of Object.keys(ckpt.shapes ?? {})) {
    if (!(key in tensors)) throw new CheckpointError(finalPath, `shapes has "${key}" but tensors has no such entry`);
  }
  let layout: SafetensorsLayout;
  try {
    layout = layoutTensors(tensors);
  } catch (err) {
    throw new CheckpointError(finalPath, (err as Error).message);
  }

  if (ckpt.meta === undefined) throw new CheckpointError(finalPath, 'meta is undefined; pass an object (config, epoch, step, ...)');
  let metaJson: string;
  try {
    metaJson = JSON.stringify({ format: CHECKPOINT_FORMAT, format_version: CHECKPOINT_FORMAT_VERSION, writer: `tfjs-ddp ${packageVersion()}`, meta: ckpt.meta });
  } catch (err) {
    throw new CheckpointError(finalPath, `meta is not JSON-serialisable: ${(err as Error).message}`);
  }
  const header = encodeHeader(layout, { [META_KEY]: metaJson, [CHECKSUM_KEY]: checksum(layout, metaJson) });

  try {
    await mkdir(dir, { recursive: true });
  } catch (err) {
    throw new CheckpointError(dir, `cannot create the checkpoint directory: ${describeFsError(err)}; choose a writable output directory`);
  }
  try {
    await writeFileAtomic(dir, name, [header, ...layout.entries.map((e) => e.bytes)]);
  } catch (err) {
    throw new CheckpointError(finalPath, `write failed: ${describeFsError(err)}; the previous checkpoints are untouched`);
  }
  return finalPath;
}

// ---------------------------------------------------------------------------------------
// Reading

/** Reads and verifies a checkpoint; every problem becomes a CheckpointError naming the file. */
export async function readCheckpoint<Meta = unknown>(file: string): Promise<{ meta: Meta; tensors: Record<string, Float32Array>; shapes: Record<string, number[]> }> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CheckpointError(file, code === 'ENOENT' ? 'file does not exist' : `cannot read: ${describeFsError(err)}`);
  }

  let contents: ReturnType<typeof readSafetensors>;
  try {
    contents = readSafetensors(bytes, path.basename(file));
  } catch (err) {
    if (!(err instanceof SafetensorsError)) throw err;
    const advice =
      err.problem === 'truncated'
        ? 'the file is truncated (probably copied or written when a process stopped); delete it to resume from an older checkpoint'
        : 'the file is not a valid safetensors file';
    throw new CheckpointError(file, `${advice}: ${err.message}`);
  }

  const metaJson = contents.metadata[META_KEY];
  if (metaJson === undefined) {
    throw new CheckpointError(file, `not a tfjs-ddp checkpoint: its safetensors metadata has no "${META_KEY}" key`);
  }
  let envelope: { format?: unknown; format_version?: unknown; meta?: unknown };
  try {
    envelope = JSON.parse(metaJson);
  } catch (err) {
    throw new CheckpointError(file, `corrupt "${META_KEY}" metadata (not JSON: ${(err as Error).message})`);
  }
  if (typeof envelope !== 'object' || envelope === null || envelope.format !== CHECKPOINT_FORMAT) {
    throw new CheckpointError(file, `not a tfjs-ddp checkpoint: "${META_KEY}.format" is ${JSON.stringify(envelope?.format)}, expected "${CHECKPOINT_FORMAT}"`);
  }
  if (envelope.format_version !== CHECKPOINT_FORMAT_VERSION) {
    throw new CheckpointError(
      file,
      `unsupported checkpoint format version ${JSON.stringify(envelope.format_version)}; this tfjs-ddp ${packageVersion()} reads version ${CHECKPOINT_FORMAT_VERSION}` +
        (typeof envelope.format_version === 'number' && envelope.format_version > CHECKPOINT_FORMAT_VERSION ? ' (upgrade tfjs-ddp to read it)' : ''),
    );
  }

  const tensors: Record<string, Float32Array> = {};
  const shapes: Record<string, number[]> = {};
  const index: SafetensorsLayout = { entries: [], dataLength: 0 };
  for (const [name, t] of contents.tensors) {
    if (t.dtype !== 'F32') throw new CheckpointError(file, `tensor "${name}" has dtype ${t.dtype}; checkpoints hold only F32 tensors`);
    const data = t.data as Float32Array;
    const bytesOf = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const begin = index.dataLength;
    index.entries.push({ name, dtype: t.dtype, shape: t.shape, begin, end: begin + data.byteLength, bytes: bytesOf });
    index.dataLength += data.byteLength;
    tensors[name] = data;
    shapes[name] = t.shape;
  }

  const expected = contents.metadata[CHECKSUM_KEY];
  if (expected === undefined) throw new CheckpointError(file, `missing "${CHECKSUM_KEY}" checksum in metadata`);
  // The reader returns tensors in data order, so recomputing offsets reproduces the file's.
  const actual = checksum(index, metaJson);
  if (actual !== expected) {
    throw new CheckpointError(file, `checksum mismatch (stored ${expected.slice(0, 12)}..., computed ${actual.slice(0, 12)}...): the file is corrupt; delete it to resume from an older checkpoint`);
  }
  return { meta: envelope.meta as Meta, tensors, shapes };
}

// ---------------------------------------------------------------------------------------
// Directory management

/** Checkpoints in `dir`, newest (highest step) first; `[]` if the directory does not exist. */
export async function listCheckpoints(dir: string): Promise<CheckpointEntry[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new CheckpointError(dir, `cannot list the checkpoint directory: ${describeFsError(err)}`);
  }
  const entries: CheckpointEntry[] = [];
  for (const name of names) {
    const parsed = parseCheckpointFileName(name);
    if (parsed) entries.push({ path: path.join(dir, name), name, ...parsed });
  }
  // Step is the global progress counter; file mtimes are unreliable after copies and restores.
  return entries.sort((a, b) => b.step - a.step || b.epoch - a.epoch || (a.name < b.name ? 1 : -1));
}

function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Deletes all but the newest `keep` checkpoints, plus temp files left by writers that died
 * mid-write (those of live processes are left alone). Returns the paths it removed.
 */
export async function pruneCheckpoints(dir: string, keep = 3): Promise<string[]> {
  if (!Number.isSafeInteger(keep) || keep < 1) throw new RangeError(`pruneCheckpoints: keep must be an integer >= 1, got ${keep}`);
  const removed: string[] = [];
  for (const old of (await listCheckpoints(dir)).slice(keep)) {
    await unlink(old.path);
    removed.push(old.path);
  }
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const m = TEMP_NAME.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || isProcessAlive(pid)) continue;
    await unlink(path.join(dir, name)).catch(() => undefined);
    removed.push(path.join(dir, name));
  }
  return removed;
}

/**
 * Loads the newest checkpoint that verifies. A corrupt or truncated newer one is skipped with
 * a warning (it is typically the one being written when the previous run died).
 */
export async function loadNewestValidCheckpoint<Meta = unknown>(dir: string, warn: (message: string) => void): Promise<LoadedCheckpoint<Meta>> {
  const candidates = await listCheckpoints(dir);
  if (candidates.length === 0) {
    throw new CheckpointError(dir, 'no checkpoints found (expected files named like ckpt-e0003-s000391.safetensors)');
  }
  for (const entry of candidates) {
    try {
      return { ...entry, ...(await readCheckpoint<Meta>(entry.path)) };
    } catch (err) {
      if (!(err instanceof CheckpointError)) throw err;
      warn(`skipping ${err.message}`);
    }
  }
  throw new CheckpointError(dir, `none of the ${candidates.length} checkpoints is valid (see the warnings above); start without resuming or restore a backup`);
}
