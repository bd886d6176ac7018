// Fetching CIFAR-10 when its files are missing: download, MD5, extraction,
// and the failures (network, HTTP, stall, corrupt tarball), each leaving
// nothing behind and explaining what to do; library calls and the real
// coordinator CLI. Every byte comes from a local server serving generated
// files: nothing here touches the internet.
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CIFAR10_ARCHIVE_NAME, CIFAR10_MD5, CIFAR10_URL_ENV, ensureCifar10 } from '../src/common/data/cifar10-download.js';
import { loadDataset } from '../src/common/data/load-dataset.js';
import { buildCifarTarGz, cifarLabel, cifarPixel, makeTempDir } from './helpers/data-fixtures.js';
import { type LocalServer, startLocalServer, unusedLocalUrl } from './helpers/data-http-server.js';
import { root } from './helpers/node-process.js';

const RECORDS = 12;
const tarball = buildCifarTarGz(RECORDS);
const tarballMd5 = crypto.createHash('md5').update(tarball).digest('hex');

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
function tempDir(): string {
  const dir = makeTempDir('cifar-dl');
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}
async function server(handler: Parameters<typeof startLocalServer>[0]): Promise<LocalServer> {
  const s = await startLocalServer(handler);
  cleanups.push(() => s.close());
  return s;
}

/** Serves the tarball at /cifar-10-binary.tar.gz, and a redirect to it at /moved. */
function tarballServer(): Promise<LocalServer> {
  return server((req, res) => {
    if (req.url === '/moved') {
      res.writeHead(302, { location: '/cifar-10-binary.tar.gz' });
      res.end();
    } else if (req.url === '/cifar-10-binary.tar.gz') {
      res.writeHead(200, { 'content-length': tarball.length, 'content-type': 'application/gzip' });
      res.end(tarball);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
}

describe('CIFAR-10 download', () => {
  it('downloads (following a redirect), verifies, extracts and loads the tarball', async () => {
    const dir = path.join(tempDir(), 'not-yet-created');
    const local = await tarballServer();
    const lines: string[] = [];

    const dataset = await loadDataset({
      name: 'cifar10',
      dataDir: dir,
      seed: 1,
      log: (line) => lines.push(line),
      cifar10Source: { url: `${local.url}/moved`, md5: tarballMd5 },
    });

    expect(local.requests).toEqual(['/moved', '/cifar-10-binary.tar.gz']);
    expect(dataset.train.count).toBe(5 * RECORDS);
    expect(dataset.test.count).toBe(RECORDS);
    // Last training image = file 4, last record; pixel (y=31, x=0) blue.
    const last = 5 * RECORDS - 1;
    expect(dataset.train.labels[last]).toBe(cifarLabel(4, RECORDS - 1));
    expect(dataset.train.images[last * 3072 + 31 * 32 * 3 + 2]).toBe(cifarPixel(4, RECORDS - 1, 2, 31 * 32));
    expect(dataset.test.labels[3]).toBe(cifarLabel(5, 3));

    // The batches stay where the tarball put them; the downloaded tarball is gone.
    expect(fs.readdirSync(dir).sort()).toEqual(['cifar-10-batches-bin']);
    expect(fs.readdirSync(path.join(dir, 'cifar-10-batches-bin')).sort()).toEqual([
      'batches.meta.txt',
      'data_batch_1.bin',
      'data_batch_2.bin',
      'data_batch_3.bin',
      'data_batch_4.bin',
      'data_batch_5.bin',
      'test_batch.bin',
    ]);
    expect(lines.some((line) => line.includes('redirected to'))).toBe(true);
    expect(lines.some((line) => /^\s+100% /.test(line))).toBe(true);
    expect(lines.some((line) => line.startsWith('extracted 7 files'))).toBe(true);

    // A second load finds the files and does not download again.
    await loadDataset({ name: 'cifar10', dataDir: dir, seed: 1, cifar10Source: { url: `${local.url}/moved`, md5: tarballMd5 } });
    expect(local.requests).toHaveLength(2);
  });

  it('reports progress in 10% steps for a large download', async () => {
    const dir = tempDir();
    // 2 MB of incompressible padding makes the body arrive in many socket reads.
    const big = buildCifarTarGz(RECORDS, 2 * 1024 * 1024);
    const bigMd5 = crypto.createHash('md5').update(big).digest('hex');
    const local = await server((_req, res) => {
      res.writeHead(200, { 'content-length': big.length });
      res.end(big);
    });
    const lines: string[] = [];
    await ensureCifar10({ dataDir: dir, download: true, url: `${local.url}/x`, md5: bigMd5, log: (l) => lines.push(l) });
    const percents = lines.filter((l) => /^\s+\d+% /.test(l)).map((l) => Number(/(\d+)%/.exec(l)![1]));
    expect(percents.at(-1)).toBe(100);
    expect(percents.length).toBeGreaterThanOrEqual(2);
    expect(percents.length).toBeLessThanOrEqual(11);
    expect([...percents].sort((a, b) => a - b)).toEqual(percents);
  });

  it('rejects a download with the wrong MD5 and leaves no files behind', async () => {
    const dir = tempDir();
    const local = await tarballServer();
    const wrongMd5 = '0123456789abcdef0123456789abcdef';

    const error = (await ensureCifar10({
      dataDir: dir,
      download: true,
      url: `${local.url}/cifar-10-binary.tar.gz`,
      md5: wrongMd5,
    }).catch((e: Error) => e)) as Error;

    expect(error.message).toContain('MD5 mismatch');
    expect(error.message).toContain(`expected ${wrongMd5}, got ${tarballMd5}`);
    expect(error.message).toContain('test_batch.bin');
    expect(error.message).toContain(`${local.url}/cifar-10-binary.tar.gz`);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('turns a network failure into instructions: files, directory, URL and alternatives', async () => {
    const dir = tempDir();
    const url = await unusedLocalUrl();
    const error = (await loadDataset({ name: 'cifar10', dataDir: dir, seed: 1, cifar10Source: { url } }).catch(
      (e: Error) => e,
    )) as Error;

    const message = error.message;
    expect(message).toContain(`CIFAR-10 is not in ${dir}, and the download failed: `);
    expect(message).toContain('ECONNREFUSED');
    expect(message).toContain('data_batch_1.bin, data_batch_2.bin, data_batch_3.bin, data_batch_4.bin, data_batch_5.bin, test_batch.bin');
    expect(message).toContain(`searched: ${dir} and ${path.join(dir, 'cifar-10-batches-bin')}`);
    expect(message).toContain(`download URL: ${url}`);
    expect(message).toContain(`extract it into ${dir}`);
    expect(message).toContain('--dataset fashion-mnist or --dataset synthetic');
    expect(message).toContain('npm run demo');
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('removes the folders it created for a download that failed', async () => {
    const parent = tempDir();
    const dir = path.join(parent, 'data', 'cifar10');
    const url = await unusedLocalUrl();
    await expect(ensureCifar10({ dataDir: dir, download: true, url })).rejects.toThrow('ECONNREFUSED');
    expect(fs.readdirSync(parent)).toEqual([]);
  });

  it('reports an HTTP error status', async () => {
    const dir = tempDir();
    const local = await tarballServer();
    await expect(
      ensureCifar10({ dataDir: dir, download: true, url: `${local.url}/nothing-here`, md5: tarballMd5 }),
    ).rejects.toThrow(`HTTP 404 Not Found from ${local.url}/nothing-here`);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('gives up on a stalled transfer and deletes the partial file', async () => {
    const dir = tempDir();
    const local = await server((_req, res) => {
      res.writeHead(200, { 'content-length': tarball.length });
      res.write(tarball.subarray(0, 1000)); // ...and never the rest
    });
    const error = (await ensureCifar10({
      dataDir: dir,
      download: true,
      url: `${local.url}/slow`,
      md5: tarballMd5,
      idleTimeoutMs: 300,
    }).catch((e: Error) => e)) as Error;
    expect(error.message).toContain('Timed out: no data from 127.0.0.1');
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('extracts a tarball copied into the data dir by hand, without any network, and keeps it', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, CIFAR10_ARCHIVE_NAME), tarball);
    const url = await unusedLocalUrl();
    const found = await ensureCifar10({ dataDir: dir, download: false, url, md5: tarballMd5 });
    expect(found).toBe(path.join(dir, 'cifar-10-batches-bin'));
    expect(fs.existsSync(path.join(dir, CIFAR10_ARCHIVE_NAME))).toBe(true);

    const other = tempDir();
    fs.writeFileSync(path.join(other, CIFAR10_ARCHIVE_NAME), tarball.subarray(0, tarball.length - 100));
    await expect(ensureCifar10({ dataDir: other, download: false, url, md5: tarballMd5 })).rejects.toThrow(
      /cifar-10-binary\.tar\.gz has MD5 [0-9a-f]{32}, expected [0-9a-f]{32}.*Delete it/,
    );
  });
});

/** Runs the compiled coordinator in `cwd` (needs npx tsc -p .), asynchronously so this process can serve HTTP meanwhile. */
function coordinator(cwd: string, args: string[], env: Record<string, string>): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [path.join(root, 'dist/src/coordinator/cli.js'), ...args], {
    cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })));
}

/** Every file under `dir` with its content, to show that a run changed nothing. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const file = path.join(entry.parentPath, entry.name);
    out[path.relative(dir, file)] = entry.isFile() ? fs.readFileSync(file, 'utf8') : '<dir>';
  }
  return out;
}

describe('coordinator CLI without the CIFAR-10 files', () => {
  // The recipe's own defaults (--dataset cifar10, --data-dir data/cifar10 in the
  // working directory); only the backend is pinned, to skip probing for the
  // native one. The download URL comes from TFJS_DDP_CIFAR10_URL.
  const ARGS = ['--backend', 'cpu'];

  it('runs the recipe by default: offline, it exits 1 with the instructions and writes or loses nothing', async () => {
    const cwd = fs.realpathSync(tempDir());
    const previousRun = path.join(cwd, 'runs', 'latest');
    fs.mkdirSync(previousRun, { recursive: true });
    fs.writeFileSync(path.join(previousRun, 'metrics.jsonl'), '{"epoch":1}\n');
    fs.writeFileSync(path.join(previousRun, 'ckpt-e0001-s000010.safetensors'), 'an earlier checkpoint');
    const before = snapshot(cwd);
    const url = await unusedLocalUrl();

    const r = await coordinator(cwd, ARGS, { [CIFAR10_URL_ENV]: url });

    const dataDir = path.join(cwd, 'data', 'cifar10');
    expect(r.status).toBe(1);
    expect(r.stdout).toContain(`CIFAR-10 is not in ${dataDir}: downloading it`);
    const err = r.stderr;
    expect(err.startsWith(`coordinator: error: CIFAR-10 is not in ${dataDir}, and the download failed: `)).toBe(true);
    expect(err.split('\n')[0]).toContain('ECONNREFUSED');
    expect(err).toContain('needed: data_batch_1.bin, data_batch_2.bin, data_batch_3.bin, data_batch_4.bin, data_batch_5.bin, test_batch.bin');
    expect(err).toContain(`searched: ${dataDir} and ${path.join(dataDir, 'cifar-10-batches-bin')}`);
    expect(err).toContain(`download URL: ${url} (cifar-10-binary.tar.gz, 170 MB, MD5 ${CIFAR10_MD5})`);
    expect(err).toContain(`copy cifar-10-binary.tar.gz into ${dataDir}`);
    expect(err).toContain(`tar xzf cifar-10-binary.tar.gz -C ${dataDir}`);
    expect(err).toContain('--data-dir <dir>');
    expect(err).toContain('npm run demo');
    expect(err).toContain('--dataset fashion-mnist or --dataset synthetic');
    expect(err).not.toMatch(/\n\s+at /); // no stack trace
    // No data/ folder, no partial tarball, and the earlier run is as it was.
    expect(snapshot(cwd)).toEqual(before);
  });

  it('with --no-download, asks the network nothing and says downloading is off', async () => {
    const cwd = fs.realpathSync(tempDir());
    const local = await tarballServer();
    const r = await coordinator(cwd, [...ARGS, '--no-download'], { [CIFAR10_URL_ENV]: `${local.url}/cifar-10-binary.tar.gz` });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`coordinator: error: CIFAR-10 is not in ${path.join(cwd, 'data', 'cifar10')}, and downloading is disabled (--no-download).`);
    expect(r.stderr).toContain('test_batch.bin');
    expect(r.stderr).toContain('npm run demo');
    expect(local.requests).toEqual([]);
    expect(fs.readdirSync(cwd)).toEqual([]);
  });

  it('verifies what it downloads: a tarball that is not the official one is rejected and deleted', async () => {
    const cwd = fs.realpathSync(tempDir());
    const local = await tarballServer(); // a generated tarball: a valid CIFAR layout, but not the official MD5
    const r = await coordinator(cwd, ARGS, { [CIFAR10_URL_ENV]: `${local.url}/cifar-10-binary.tar.gz` });
    expect(r.status).toBe(1);
    expect(local.requests).toEqual(['/cifar-10-binary.tar.gz']);
    expect(r.stderr).toMatch(/MD5/);
    expect(r.stderr).toContain(tarballMd5); // what arrived...
    expect(r.stderr).toContain(CIFAR10_MD5); // ...and what was expected
    expect(r.stderr).toContain('needed: data_batch_1.bin');
    expect(fs.readdirSync(cwd)).toEqual([]);
  });
});
