// The project's compiled CLIs as real child processes, for tests of what
// users run: output captured, exit awaited. Needs the build (npx tsc -p .).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

export const root = path.resolve(import.meta.dirname, '../..');

export interface NodeProcess {
  child: ChildProcess;
  /** stdout and stderr so far, interleaved. */
  output: () => string;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
}

/** Runs `dist/src/<script>` with `args`; `env` is added to the test's environment. */
export function startCli(script: string, args: string[], env: Record<string, string> = {}): NodeProcess {
  const child = spawn(process.execPath, [path.join(root, 'dist/src', script), ...args], {
    cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env },
  });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  return { child, output: () => output, exited: new Promise((resolve) => child.on('close', resolve)) };
}

/**
 * Runs `dist/scripts/<script>` to its end; rejects with the exit code and
 * stderr (execFile's error) when it fails.
 */
export async function runScript(script: string, args: string[], cwd = root): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, [path.join(root, 'dist/scripts', script), ...args], { cwd, encoding: 'utf8' });
  return stdout;
}

/**
 * Like runScript, and also returns the script process's peak resident memory
 * as the kernel counts it (getrusage's maxRSS, read when it exits by a module
 * preloaded into its main thread): a measurement independent of any the
 * script makes itself.
 */
export async function runScriptWithPeakRss(script: string, args: string[], cwd = root): Promise<{ stdout: string; maxRssMb: number }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-rss-'));
  try {
    const preload = path.join(dir, 'max-rss.mjs');
    const result = path.join(dir, 'max-rss-kib');
    // Worker threads and child processes of the script load the preload too: only the script's own main thread writes.
    fs.writeFileSync(preload, [
      "import fs from 'node:fs';",
      "import { isMainThread } from 'node:worker_threads';",
      `if (isMainThread && process.ppid === ${process.pid}) {`,
      `  process.on('exit', () => fs.writeFileSync(${JSON.stringify(result)}, String(process.resourceUsage().maxRSS)));`,
      '}',
    ].join('\n'));
    const { stdout } = await promisify(execFile)(
      process.execPath, ['--import', pathToFileURL(preload).href, path.join(root, 'dist/scripts', script), ...args], { cwd, encoding: 'utf8' },
    );
    return { stdout, maxRssMb: Number(fs.readFileSync(result, 'utf8')) / 1024 };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
