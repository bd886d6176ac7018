// Makes sure the CIFAR-10 batch files are on disk: uses them if present,
// otherwise unpacks a cifar-10-binary.tar.gz found in the data dir, otherwise
// downloads and verifies the official tarball. Every failure ends in one
// message that says which files are needed, where we looked and what to do.

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

/** Overridable so tests can serve their own tarball from a local server. */
export interface Cifar10SourceOptions {
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
  const url = options.url ?? CIFAR10_URL;
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
    throw missingError(dataDir, missing, url, 'Downloading is disabled.');
  }

  await fs.promises.mkdir(dataDir, { recursive: true });
  try {
    await downloadFile({ url, destination: archive, expectedMd5: md5, log, idleTimeoutMs: options.idleTimeoutMs });
  } catch (err) {
    throw missingError(dataDir, missing, url, `The download failed: ${(err as Error).message}`, err);
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

function missingError(
  dataDir: string,
  missing: string[],
  url: string,
  reason: string,
  cause?: unknown,
): DatasetMissingError {
  const searched = cifar10SearchDirs(dataDir);
  const message = [
    `CIFAR-10 binary files are missing. ${reason}`,
    `  expected files: ${CIFAR10_ALL_FILES.join(', ')}`,
    `  searched: ${searched.join(' and ')}`,
    `  download URL: ${url}`,
    `To fix: on a machine with internet access download ${url} and extract it into ${dataDir} ` +
      `(tar xzf ${CIFAR10_ARCHIVE_NAME} -C ${dataDir}, which creates ${CIFAR10_TARBALL_FOLDER}/), ` +
      `or copy the ${CIFAR10_ARCHIVE_NAME} file itself into ${dataDir}; ` +
      `or pass --data-dir <dir> pointing at the files; ` +
      `or train on another dataset with --dataset fashion-mnist or --dataset synthetic.`,
  ].join('\n');
  return new DatasetMissingError(message, missing, searched, { cause });
}

async function md5OfFile(file: string): Promise<string> {
  const hash = crypto.createHash('md5');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
