// Makes sure the CIFAR-10 batch files are on disk: uses them if present,
// otherwise unpacks a cifar-10-binary.tar.gz found in the data dir, otherwise
// downloads and verifies the official tarball. Every failure ends in one
// message that says which files are needed, where we looked, where they come
// from and what to do (including training offline). A failed download leaves
// nothing behind.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CIFAR10_ALL_FILES, CIFAR10_TARBALL_FOLDER, cifar10SearchDirs, findCifar10Dir } from './cifar10.js';
import { DatasetError, DatasetMissingError } from './errors.js';
import { downloadFile } from './http-download.js';
import { extractTarGz } from './tar.js';

export const CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz';
export const CIFAR10_MD5 = 'c32a1d4ab5d03f1284b67883e8d87530';
export const CIFAR10_ARCHIVE_NAME = 'cifar-10-binary.tar.gz';
/** The official tarball's size, for the messages (170,052,171 bytes). */
const CIFAR10_ARCHIVE_SIZE = '170 MB';
/**
 * Downloads from this URL instead of the official one (a mirror or a proxy
 * serving the same file: the MD5 is still checked).
 */
export const CIFAR10_URL_ENV = 'TFJS_DDP_CIFAR10_URL';

/** Overridable so tests can serve their own tarball from a local server. */
export interface Cifar10SourceOptions {
  /** Default: $TFJS_DDP_CIFAR10_URL, else CIFAR10_URL. */
  url?: string;
  md5?: string;
  /** Abort the download when no bytes arrive for this long. */
  idleTimeoutMs?: number;
}

export interface EnsureCifar10Options extends Cifar10SourceOptions {
  dataDir: string;
  /** Whether the tarball may be fetched from the network when files are missing. */
  download: boolean;
  log?: (line: string) => void;
}

/** Returns the directory holding the six batch files, fetching them if needed and allowed. */
export async function ensureCifar10(options: EnsureCifar10Options): Promise<string> {
  const dataDir = path.resolve(options.dataDir);
  const url = options.url ?? (process.env[CIFAR10_URL_ENV] || CIFAR10_URL);
  const md5 = (options.md5 ?? CIFAR10_MD5).toLowerCase();
  const log = options.log ?? (() => {});
  let missing: string[];
  try {
    return findCifar10Dir(dataDir);
  } catch (err) {
    if (!(err instanceof DatasetMissingError)) throw err;
    missing = err.missing;
  }

  const archive = path.join(dataDir, CIFAR10_ARCHIVE_NAME);
  if (fs.existsSync(archive)) {
    // Someone copied the tarball in by hand; unpack it, but never delete it.
    log(`found ${archive}; verifying and extracting it`);
    const actual = await md5OfFile(archive);
    if (actual !== md5) {
      throw new DatasetError(
        `${archive} has MD5 ${actual}, expected ${md5}: it is incomplete or not the CIFAR-10 binary version. ` +
          `Delete it and download ${url} again.`,
      );
    }
    await extractAndFind(archive, dataDir, log);
    return findCifar10Dir(dataDir);
  }

  if (!options.download) {
    throw missingError({ dataDir, missing, url, md5, problem: 'and downloading is disabled (--no-download)' });
  }

  log(`CIFAR-10 is not in ${dataDir}: downloading it (${CIFAR10_ARCHIVE_SIZE}, checked against MD5 ${md5})`);
  const before = new Set(listDir(dataDir));
  const created = await fs.promises.mkdir(dataDir, { recursive: true });
  try {
    await downloadFile({ url, destination: archive, expectedMd5: md5, log, idleTimeoutMs: options.idleTimeoutMs });
  } catch (err) {
    // A failed download leaves nothing behind: no partial tarball, no empty folders we made.
    await removeLeftovers(dataDir, before, created);
    throw missingError({ dataDir, missing, url, md5, problem: `and the download failed: ${describeFailure(err)}`, cause: err });
  }
  await extractAndFind(archive, dataDir, log);
  // The extracted batches are all we read; the 170 MB tarball we fetched
  // ourselves would only waste disk.
  await fs.promises.rm(archive, { force: true });
  return findCifar10Dir(dataDir);
}

async function extractAndFind(archive: string, dataDir: string, log: (line: string) => void): Promise<void> {
  const files = await extractTarGz(archive, dataDir);
  log(`extracted ${files.length} files into ${dataDir}`);
  try {
    findCifar10Dir(dataDir);
  } catch (err) {
    if (!(err instanceof DatasetMissingError)) throw err;
    throw new DatasetError(
      `${archive} was extracted but did not contain the CIFAR-10 batch files (${err.missing.join(', ')} missing). ` +
        `Is it the binary version (${CIFAR10_ARCHIVE_NAME}), not the Python or MATLAB one?`,
    );
  }
}

interface MissingErrorParts {
  dataDir: string;
  missing: string[];
  url: string;
  md5: string;
  /** Completes "CIFAR-10 is not in <dir>, ...". */
  problem: string;
  cause?: unknown;
}

/**
 * The one message for "the files are not here and we cannot fetch them":
 * which files, where they were looked for, where they come from, and every way
 * on (put them there, point --data-dir at them, or train offline).
 */
function missingError({ dataDir, missing, url, md5, problem, cause }: MissingErrorParts): DatasetMissingError {
  const searched = cifar10SearchDirs(dataDir);
  const partly = missing.length < CIFAR10_ALL_FILES.length;
  const lines = [
    `CIFAR-10 is not in ${dataDir}, ${problem.replace(/\.+$/, '')}.`,
    `  needed: ${CIFAR10_ALL_FILES.join(', ')} (the binary version)`,
    ...(partly ? [`  missing: ${missing.join(', ')} (the other files are there)`] : []),
    `  searched: ${searched.join(' and ')}`,
    `  download URL: ${url} (${CIFAR10_ARCHIVE_NAME}, ${CIFAR10_ARCHIVE_SIZE}, MD5 ${md5})`,
    'To fix it, do one of these:',
    `  - on a machine with internet access, download ${url} and copy ${CIFAR10_ARCHIVE_NAME} into ${dataDir}: ` +
      'the next run checks its MD5 and extracts it there;',
    `    or extract it into ${dataDir} yourself: tar xzf ${CIFAR10_ARCHIVE_NAME} -C ${dataDir} (creates ${CIFAR10_TARBALL_FOLDER}/)`,
    '  - if the files are elsewhere, pass --data-dir <dir> (the folder holding them or their cifar-10-batches-bin/)',
    `  - behind a mirror or proxy, set ${CIFAR10_URL_ENV}=<url of the same tarball>`,
    '  - train without CIFAR-10: npm run demo (the offline quick start: synthetic data, about 30 s), ' +
      'or --dataset fashion-mnist or --dataset synthetic',
  ];
  return new DatasetMissingError(lines.join('\n'), missing, searched, { cause });
}

/** An error and its causes in one line: fetch's "fetch failed" alone says nothing. */
export function describeFailure(err: unknown): string {
  const parts: string[] = [];
  let current: unknown = err;
  for (let depth = 0; current !== undefined && current !== null && depth < 6; depth++) {
    let text = current instanceof Error ? current.message : String(current);
    if (!text && current instanceof AggregateError) text = current.errors.map((e) => describeFailure(e)).join('; ');
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && !text.includes(code)) text = text ? `${text} (${code})` : code;
    if (text && !parts.some((p) => p.includes(text))) parts.push(text);
    if (!(current instanceof Error)) break;
    current = current.cause;
  }
  // undici's own words add nothing once the cause is known.
  if (parts.length > 1 && parts[0] === 'fetch failed') parts.shift();
  return parts.join(': ') || 'unknown error';
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** Removes the download's own files and the folders mkdir created for it, if they are empty. */
async function removeLeftovers(dataDir: string, before: Set<string>, created: string | undefined): Promise<void> {
  for (const name of listDir(dataDir)) {
    if (!before.has(name) && name.startsWith(CIFAR10_ARCHIVE_NAME)) {
      await fs.promises.rm(path.join(dataDir, name), { force: true, recursive: true });
    }
  }
  if (created === undefined) return;
  const stop = path.dirname(path.resolve(created));
  for (let dir = dataDir; dir !== stop && dir.length > stop.length; dir = path.dirname(dir)) {
    if (listDir(dir).length > 0) return;
    await fs.promises.rmdir(dir).catch(() => {});
  }
}

async function md5OfFile(file: string): Promise<string> {
  const hash = crypto.createHash('md5');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
