// Unpacks the CIFAR-10 .tar.gz with node-tar (npm `tar`). On top of node-tar's
// own defences (no '..' or absolute paths, no writing through symlinks, a cap
// on the gzip decompression ratio) this module refuses an archive that names a
// path outside the target, extracts only regular files and directories (links,
// devices and FIFOs are skipped), and stages everything in a temporary folder
// first, so an interrupted or refused extraction never leaves a short file
// under a final name.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tar from 'tar';
import { DatasetError } from './errors.js';

/** Entry types that carry data we read; everything else is skipped. */
const EXTRACTED_TYPES = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory']);

/**
 * Gunzips and unpacks a .tar.gz into `destDir`, which is created if needed.
 * Each file is moved to its final name only once the whole archive has been
 * read and checked. Returns the extracted file paths, in archive order.
 */
export async function extractTarGz(archivePath: string, destDir: string): Promise<string[]> {
  await requireGzip(archivePath);
  const root = path.resolve(destDir);
  await fs.promises.mkdir(root, { recursive: true });
  const staging = await fs.promises.mkdtemp(path.join(root, '.extracting-'));
  try {
    const files = new Set<string>();
    const directories = new Set<string>();
    let unsafe: string | undefined;
    try {
      await tar.x({
        file: archivePath,
        cwd: staging,
        // Any warning (a bad checksum, a truncated entry) fails the extraction.
        strict: true,
        // As root, node-tar would otherwise give the files the archive's uid/gid.
        preserveOwner: false,
        filter: (name, entry) => {
          const relative = name.replace(/\/+$/, '');
          if (!isInside(staging, relative)) {
            unsafe ??= name;
            return false;
          }
          if (!('type' in entry) || !EXTRACTED_TYPES.has(entry.type)) return false;
          (entry.type === 'Directory' ? directories : files).add(relative);
          return true;
        },
      });
    } catch (err) {
      throw describeFailure(err, archivePath);
    }
    if (unsafe !== undefined) {
      throw new DatasetError(`${archivePath} contains an unsafe path "${unsafe}" that points outside ${root}; refusing to extract it.`);
    }
    for (const dir of directories) await fs.promises.mkdir(path.join(root, dir), { recursive: true });
    const written: string[] = [];
    for (const file of files) {
      const target = path.join(root, file);
      await fs.promises.mkdir(path.dirname(target), { recursive: true });
      await fs.promises.rename(path.join(staging, file), target);
      written.push(target);
    }
    return written;
  } finally {
    await fs.promises.rm(staging, { recursive: true, force: true });
  }
}

function isInside(root: string, name: string): boolean {
  if (name === '' || path.isAbsolute(name)) return false;
  const target = path.resolve(root, name);
  return target !== root && target.startsWith(root + path.sep);
}

/** node-tar would also read a plain tar; a .tar.gz that is not gzip is a broken download. */
async function requireGzip(archivePath: string): Promise<void> {
  let head: Buffer;
  try {
    const fh = await fs.promises.open(archivePath, 'r');
    try {
      head = Buffer.alloc(2);
      await fh.read(head, 0, 2, 0);
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw new DatasetError(`Cannot read ${archivePath}: ${(err as Error).message}`, { cause: err });
  }
  if (head[0] !== 0x1f || head[1] !== 0x8b) {
    throw new DatasetError(`Cannot decompress ${archivePath}: it is not gzip data. Delete it and download it again.`);
  }
}

/** node-tar's errors carry a `tarCode` (its warning class) or, from zlib, a `Z_*` code. */
function describeFailure(err: unknown, archivePath: string): DatasetError {
  const e = err as Error & { code?: string; tarCode?: string };
  const message = e.message.replace(/^TAR_[A-Z_]+: /, '');
  const again = 'Delete it and download it again.';
  if (e.code?.startsWith('Z_') || e.tarCode === 'TAR_ABORT') {
    return new DatasetError(`Cannot decompress ${archivePath}: ${message}. ${again}`, { cause: err });
  }
  if (e.tarCode === 'TAR_BAD_ARCHIVE' && /truncated/i.test(message)) {
    return new DatasetError(`${archivePath} is truncated: ${message}. ${again}`, { cause: err });
  }
  if (e.tarCode === 'TAR_ENTRY_INVALID' || e.tarCode === 'TAR_BAD_ARCHIVE') {
    return new DatasetError(`${archivePath} is corrupt: ${message}. ${again}`, { cause: err });
  }
  return new DatasetError(`Cannot extract ${archivePath}: ${message}`, { cause: err });
}
