// Workers that run on the coordinator's machine. They join through the same
// socket and handshake as remote workers, so there is one code path for both.
//
// - threads: a piscina pool with one long task per replica, for the cpu and
//   wasm backends (one single-threaded replica per core is how wasm uses the
//   cores: its own threading is off in Node).
// - processes: one `worker` child process per replica, for the tensorflow
//   backend, because the native binding is unreliable in worker threads and
//   picks its GPU only from CUDA_VISIBLE_DEVICES, which must be set before it
//   loads. Process i gets GPU gpus[i % gpus.length] (gpu-assignment.ts
//   chooses them), and TF_CPP_MIN_LOG_LEVEL=1 unless the user set it:
//   TensorFlow's info lines would drown the progress.

import { spawn, type ChildProcess } from 'node:child_process';
import { Piscina } from 'piscina';
import { tensorflowInstalled } from '../common/backend/backend.js';
import { resolveWorkerScript } from '../common/fs/worker-script.js';
import type { BackendChoice } from '../common/backend/names.js';
import type { WorkerOptions } from '../worker/worker.js';
import { TOKEN_ENV } from './admission.js';

export type LocalMode = 'thread' | 'process';

export interface LocalWorkerOptions extends Pick<WorkerOptions, 'connect' | 'token' | 'backend' | 'caPath'> {
  mode: LocalMode;
  /** For processes: GPU ids, assigned round robin through CUDA_VISIBLE_DEVICES. */
  gpus?: string[];
  log?: (line: string) => void;
}

/**
 * The environment of a local worker process: this one's, plus the token, its
 * GPU, and TF_CPP_MIN_LOG_LEVEL=1 (warnings and errors only) where unset.
 */
export function childEnv(base: NodeJS.ProcessEnv, token: string, gpu: string | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base, [TOKEN_ENV]: token };
  if (env.TF_CPP_MIN_LOG_LEVEL === undefined) env.TF_CPP_MIN_LOG_LEVEL = '1';
  if (gpu !== undefined) env.CUDA_VISIBLE_DEVICES = gpu;
  return env;
}

/** Processes for the tensorflow backend (also when 'auto' will pick it), threads otherwise. */
export function defaultLocalMode(backend: BackendChoice): LocalMode {
  return backend === 'tensorflow' || (backend === 'auto' && tensorflowInstalled()) ? 'process' : 'thread';
}

export class LocalWorkers {
  private readonly pool: Piscina | null = null;
  private readonly children: ChildProcess[] = [];
  private readonly finished: Promise<unknown>[] = [];
  /** Rejects when a local worker fails; never resolves. */
  readonly failed: Promise<never>;

  constructor(count: number, options: LocalWorkerOptions) {
    let fail: (err: Error) => void = () => {};
    this.failed = new Promise<never>((_, reject) => {
      fail = reject;
    });
    this.failed.catch(() => {}); // observed by whoever races it; not an unhandled rejection otherwise
    const { mode, gpus, log, ...worker } = options;
    if (mode === 'thread') {
      this.pool = new Piscina({
        filename: resolveWorkerScript(import.meta.url, '../worker/thread-entry.js'),
        minThreads: count, maxThreads: count, concurrentTasksPerWorker: 1, idleTimeout: 1000,
      });
      // What piscina cannot pin on a task; unheard, an 'error' event would end the coordinator.
      this.pool.on('error', (err: Error) => log?.(`local worker threads: ${err.message}`));
      for (let i = 0; i < count; i++) {
        const task: WorkerOptions = { ...worker, cacheDir: null };
        this.finished.push(this.pool.run(task).catch((err: Error) => fail(new Error(`local worker thread ${i} failed: ${err.message}`))));
      }
    } else {
      const cli = resolveWorkerScript(import.meta.url, '../worker/cli.js');
      for (let i = 0; i < count; i++) {
        const gpu = gpus && gpus.length > 0 ? gpus[i % gpus.length] : undefined;
        const env = childEnv(process.env, worker.token, gpu);
        // No reconnecting: a local worker's coordinator is its parent, so it is gone for good.
        const args = [
          cli, '--connect', worker.connect, '--no-cache', '--reconnect-timeout', '0',
          ...(worker.backend ? ['--backend', worker.backend] : []), ...(worker.caPath ? ['--ca', worker.caPath] : []),
        ];
        const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
        this.children.push(child);
        const name = `local worker process ${i}${gpu !== undefined ? ` (GPU ${gpu})` : ''}`;
        let lastError = '';
        // Its output, a line at a time, named with its rank once it has one: its errors (stderr) say what went wrong there.
        let rank = '';
        forEachLine(child.stdout!, (line) => {
          const m = /(?:joined as|now) rank (\d+) of \d+/.exec(line);
          if (m) rank = ` (rank ${m[1]})`;
          log?.(`${name}${rank}: ${line}`);
        });
        forEachLine(child.stderr!, (line) => {
          lastError = line;
          log?.(`${name}${rank}: ${line}`);
        });
        this.finished.push(new Promise<void>((resolve) => {
          child.once('error', (err) => {
            fail(new Error(`${name} could not start: ${err.message}`));
            resolve();
          });
          child.once('exit', (code, signal) => {
            if (code !== 0) fail(new Error(`${name} exited with ${signal ?? `code ${code}`}${lastError ? `: ${lastError}` : ''}`));
            resolve();
          });
        }));
      }
    }
  }

  /** Waits for the workers to finish on their own, then stops any that have not. */
  async stop(graceMs = 10_000): Promise<void> {
    const timer = setTimeout(() => this.terminate(), graceMs);
    await Promise.all(this.finished);
    clearTimeout(timer);
    await this.pool?.destroy();
  }

  terminate(): void {
    void this.pool?.destroy();
    for (const child of this.children) child.kill('SIGKILL');
  }
}

/** Calls `onLine` for every non-empty line of `stream`, joining lines cut across chunks. */
function forEachLine(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let partial = '';
  stream.on('data', (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) if (line.trim() !== '') onLine(line.trimEnd());
  });
  stream.on('end', () => {
    if (partial.trim() !== '') onLine(partial.trimEnd());
    partial = '';
  });
}
