// Downloads one file with Node's global fetch (undici), streaming it to a
// temporary file: redirects followed one at a time (so each is logged and
// capped), progress lines in 10 % steps, an idle timeout, and a size and MD5
// check. The file only appears under its final name once it is complete and
// verified; on any failure the partial file is removed.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';

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
  const idle = new IdleTimeout(options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS);
  try {
    const response = await openFollowingRedirects(options, idle);
    const result = await saveResponse(response, partial, options, idle);
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
    // fetch reports an abort as a bare AbortError; the timeout's own error says what happened.
    throw idle.signal.aborted ? idle.signal.reason : err;
  } finally {
    idle.stop();
  }
}

/** Aborts the request when neither headers nor body bytes arrive for `ms`; `touch()` restarts the clock. */
class IdleTimeout {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private host = '';
  readonly signal = this.controller.signal;

  constructor(private readonly ms: number) {}

  start(url: URL): void {
    this.host = url.host;
    this.touch();
  }

  touch(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.controller.abort(new Error(`Timed out: no data from ${this.host} for ${this.ms / 1000} s`));
    }, this.ms);
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}

async function openFollowingRedirects(options: DownloadFileOptions, idle: IdleTimeout): Promise<Response> {
  const maxRedirects = options.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
  let url = new URL(options.url);
  for (let redirects = 0; ; redirects++) {
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`Unsupported URL protocol ${url.protocol} in ${url.href}`);
    idle.start(url);
    const response = await fetch(url, {
      redirect: 'manual',
      signal: idle.signal,
      // The bytes must be the file itself: a transfer encoding fetch undoes would change size and MD5.
      headers: { 'accept-encoding': 'identity' },
    });
    const location = response.headers.get('location');
    if (response.status >= 300 && response.status < 400 && location) {
      await response.body?.cancel(); // release the connection
      if (redirects >= maxRedirects) {
        throw new Error(`Too many redirects (more than ${maxRedirects}) while downloading ${options.url}.`);
      }
      url = new URL(location, url);
      options.log?.(`redirected to ${url.href}`);
      continue;
    }
    if (response.status !== 200 || !response.body) {
      await response.body?.cancel();
      throw new Error(`HTTP ${response.status} ${response.statusText} from ${url.href}`.trim());
    }
    return response;
  }
}

async function saveResponse(response: Response, file: string, options: DownloadFileOptions, idle: IdleTimeout): Promise<DownloadResult> {
  const lengthHeader = response.headers.get('content-length');
  const encoded = (response.headers.get('content-encoding') ?? 'identity') !== 'identity';
  // Content-Length counts encoded bytes, so it only predicts the file's size without an encoding.
  const expectedBytes = lengthHeader === null || encoded ? undefined : Number(lengthHeader);
  const hash = crypto.createHash('md5');
  const log = options.log;
  let bytes = 0;
  let nextReport = expectedBytes ? expectedBytes / 10 : UNKNOWN_SIZE_PROGRESS_STEP;
  log?.(`downloading ${options.url}${expectedBytes ? ` (${formatMb(expectedBytes)})` : ''}`);

  const counter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      idle.touch();
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
  const body = Readable.fromWeb(response.body as WebReadableStream<Uint8Array>);
  await pipeline(body, counter, fs.createWriteStream(file));
  if (expectedBytes !== undefined && bytes !== expectedBytes) {
    throw new Error(`Download of ${options.url} ended early: got ${bytes} of ${expectedBytes} bytes.`);
  }
  log?.(`  100% (${formatMb(bytes)})`);
  return { bytes, md5: hash.digest('hex') };
}

function formatMb(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}
