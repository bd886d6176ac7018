// A minimal reader for ustar / GNU tar archives, enough to unpack the CIFAR-10
// tarball without adding an npm dependency. It understands regular files and
// directories (including the ustar name prefix), skips pax and other special
// entries, verifies every header checksum, and refuses entries whose paths
// would escape the extraction directory.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { promisify } from 'node:util';
import { DatasetError } from './errors.js';

const BLOCK = 512;
const gunzip = promisify(zlib.gunzip);

export interface TarEntry {
  /** Path inside the archive, with '/' separators and no trailing slash. */
  name: string;
  type: 'file' | 'directory';
  /** File contents (a view into the archive buffer); empty for directories. */
  data: Uint8Array;
}

/** Parses an uncompressed tar archive held in memory. */
export function readTarEntries(archive: Uint8Array, archiveName = 'tar archive'): TarEntry[] {
  const entries: TarEntry[] = [];
  let offset = 0;
  while (offset + BLOCK <= archive.length) {
    const header = archive.subarray(offset, offset + BLOCK);
    if (header.every((b) => b === 0)) return entries; // end-of-archive marker
    verifyChecksum(header, offset, archiveName);

    const size = readOctal(header, 124, 12, offset, archiveName);
    const typeFlag = String.fromCharCode(header[156]);
    const dataStart = offset + BLOCK;
    const dataEnd = dataStart + size;
    if (dataEnd > archive.length) {
      throw new DatasetError(
        `${archiveName} is truncated: the entry at byte ${offset} needs ${size} bytes but the archive ends at byte ${archive.length}.`,
      );
    }
    const name = entryName(header);
    if (typeFlag === '0' || typeFlag === '\0' || typeFlag === '7') {
      entries.push({ name, type: 'file', data: archive.subarray(dataStart, dataEnd) });
    } else if (typeFlag === '5') {
      entries.push({ name: name.replace(/\/+$/, ''), type: 'directory', data: new Uint8Array(0) });
    }
    // Other types (pax headers 'x'/'g', links, devices) carry nothing we need.
    offset = dataStart + Math.ceil(size / BLOCK) * BLOCK;
  }
  // Archives are normally closed by zero blocks, but a missing trailer alone
  // does not lose data, so only a partial header counts as truncation.
  if (offset !== archive.length) {
    throw new DatasetError(`${archiveName} is truncated: it ends inside a header at byte ${offset}.`);
  }
  return entries;
}

/**
 * Gunzips and unpacks a .tar.gz into `destDir`. Each file is written under a
 * temporary name and renamed, so an interrupted extraction never leaves a
 * file that looks complete but is short. Returns the extracted file paths.
 */
export async function extractTarGz(archivePath: string, destDir: string): Promise<string[]> {
  let tar: Buffer;
  try {
    tar = await gunzip(await fs.promises.readFile(archivePath));
  } catch (err) {
    throw new DatasetError(
      `Cannot decompress ${archivePath}: ${(err as Error).message}. Delete it and download it again.`,
      { cause: err },
    );
  }
  const root = path.resolve(destDir);
  const written: string[] = [];
  for (const entry of readTarEntries(tar, archivePath)) {
    const target = safeTarget(root, entry.name, archivePath);
    if (entry.type === 'directory') {
      await fs.promises.mkdir(target, { recursive: true });
      continue;
    }
    await fs.promises.mkdir(path.dirname(target), { recursive: true });
    const partial = `${target}.partial-${process.pid}`;
    await fs.promises.writeFile(partial, entry.data);
    await fs.promises.rename(partial, target);
    written.push(target);
  }
  return written;
}

function entryName(header: Uint8Array): string {
  const name = readString(header, 0, 100);
  // Only POSIX ustar ("ustar\0") has a prefix field; GNU tar ("ustar  ")
  // uses those bytes for other things.
  const isPosixUstar = readString(header, 257, 6) === 'ustar' && header[262] === 0;
  const prefix = isPosixUstar ? readString(header, 345, 155) : '';
  return prefix ? `${prefix}/${name}` : name;
}

function safeTarget(root: string, name: string, archiveName: string): string {
  const target = path.resolve(root, name);
  if (path.isAbsolute(name) || (target !== root && !target.startsWith(root + path.sep))) {
    throw new DatasetError(`${archiveName} contains an unsafe path "${name}" that points outside ${root}; refusing to extract it.`);
  }
  return target;
}

function verifyChecksum(header: Uint8Array, offset: number, archiveName: string): void {
  const stored = readOctal(header, 148, 8, offset, archiveName);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i];
  if (sum !== stored) {
    throw new DatasetError(
      `${archiveName} is corrupt: the tar header at byte ${offset} has checksum ${stored} but its bytes sum to ${sum}.`,
    );
  }
}

function readString(header: Uint8Array, start: number, length: number): string {
  const field = header.subarray(start, start + length);
  const end = field.indexOf(0);
  return Buffer.from(field.subarray(0, end < 0 ? length : end)).toString('utf8');
}

function readOctal(header: Uint8Array, start: number, length: number, offset: number, archiveName: string): number {
  const text = readString(header, start, length).trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) {
    throw new DatasetError(`${archiveName} is corrupt: the tar header at byte ${offset} has a malformed number field "${text}".`);
  }
  return parseInt(text, 8);
}
