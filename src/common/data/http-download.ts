// Downloads one file over http(s) with redirects, progress lines, an idle
// timeout and an MD5 check. The file only appears under its final name once
// it is complete and verified; on any failure the partial file is removed.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export interface DownloadFileOptions {
  url: string;
  /** Final path; the data is streamed to `<destination>.download` first. */
  destination: string;
  /** Lower-case hex MD5 the content must have; checked before the rename. */
  expectedMd5?: string;
  log?: (line: string) => void;
  /** Abort when no bytes arrive for this long (default 30 s). */
  idleTimeoutMs?: number;
  maxRedirects?: number;
}

export interface DownloadResult {
  bytes: number;
  md5: string;
}

const DEFAULT_IDLE_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_REDIRECTS = 5;
/** Progress step when the server does not send Content-Length. */
const UNKNOWN_SIZE_PROGRESS_STEP = 16 * 1024 * 1024;

export async function downloadFile(options: DownloadFileOptions): Promise<DownloadResult> {
  const partial = `${options.destination}.download`;
  try {
    const response = await openFollowingRedirects(options);
    const result = await saveResponse(response, partial, options);
    if (options.expectedMd5 && result.md5 !== options.expectedMd5.toLowerCase()) {
      throw new Error(
        `MD5 mismatch for ${options.url}: expected ${options.expectedMd5}, got ${result.md5} ` +
          `(${result.bytes} bytes). The download is corrupt or the file changed; it was deleted.`,
      );
    }
    await fs.promises.rename(partial, options.destination);
    return result;
  } catch (err) {
    await fs.promises.rm(partial, { force: true });
    throw err;
  }
}

async function openFollowingRedirects(options: DownloadFileOptions): Promise<http.IncomingMessage> {
  const maxRedirects = options.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
  let url = new URL(options.url);
  for (let redirects = 0; ; redirects++) {
    const response = await request(url, options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS);
    const status = response.statusCode ?? 0;
    if (status >= 300 && status < 400 && response.headers.location) {
      response.resume(); // drain the redirect body so the socket is released
      if (redirects >= maxRedirects) {
        throw new Error(`Too many redirects (more than ${maxRedirects}) while downloading ${options.url}.`);
      }
      url = new URL(response.headers.location, url);
      options.log?.(`redirected to ${url.href}`);
      continue;
    }
    if (status !== 200) {
      response.resume();
      throw new Error(`HTTP ${status} ${response.statusMessage ?? ''} from ${url.href}`.trim());
    }
    return response;
  }
}

function request(url: URL, idleTimeoutMs: number): Promise<http.IncomingMessage> {
  const client = url.protocol === 'https:' ? https : url.protocol === 'http:' ? http : undefined;
  if (!client) return Promise.reject(new Error(`Unsupported URL protocol ${url.protocol} in ${url.href}`));
  return new Promise((resolve, reject) => {
    let response: http.IncomingMessage | undefined;
    const req = client.get(url, (res) => {
      response = res;
      resolve(res);
    });
    // The socket timeout keeps running while the body streams, so a stalled
    // transfer fails too; the response is destroyed with the same error so
    // the caller sees "timed out" rather than a bare "aborted".
    req.setTimeout(idleTimeoutMs, () => {
      const err = new Error(`Timed out: no data from ${url.host} for ${idleTimeoutMs / 1000} s`);
      response?.destroy(err);
      req.destroy(err);
    });
    req.on('error', reject);
  });
}

async function saveResponse(
  response: http.IncomingMessage,
  file: string,
  options: DownloadFileOptions,
): Promise<DownloadResult> {
  const lengthHeader = response.headers['content-length'];
  const expectedBytes = lengthHeader === undefined ? undefined : Number(lengthHeader);
  const hash = crypto.createHash('md5');
  const log = options.log;
  let bytes = 0;
  let nextReport = expectedBytes ? expectedBytes / 10 : UNKNOWN_SIZE_PROGRESS_STEP;
  log?.(`downloading ${options.url}${expectedBytes ? ` (${formatMb(expectedBytes)})` : ''}`);

  const counter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      bytes += chunk.length;
      while (bytes >= nextReport && (!expectedBytes || bytes < expectedBytes)) {
        log?.(
          expectedBytes
            ? `  ${Math.round((100 * bytes) / expectedBytes)}% (${formatMb(bytes)} of ${formatMb(expectedBytes)})`
            : `  ${formatMb(bytes)}`,
        );
        nextReport += expectedBytes ? expectedBytes / 10 : UNKNOWN_SIZE_PROGRESS_STEP;
      }
      done(null, chunk);
    },
  });
  await pipeline(response, counter, fs.createWriteStream(file));
  if (expectedBytes !== undefined && bytes !== expectedBytes) {
    throw new Error(`Download of ${options.url} ended early: got ${bytes} of ${expectedBytes} bytes.`);
  }
  log?.(`  100% (${formatMb(bytes)})`);
  return { bytes, md5: hash.digest('hex') };
}

function formatMb(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}
