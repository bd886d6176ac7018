// Workers that run on the coordinator's machine. They join through the same
// socket and handshake as remote workers, so there is one code path for both.
//
// - threads: a piscina pool with one long task per replica, for the cpu and
//   wasm backends (one single-threaded replica per core is how wasm uses the
//   cores: its own threading is off in Node). The threads share one memory
//   region (sharedRegion), through which a group of only them all-reduces.
// - processes: one `worker` child process per replica, for the tensorflow
//   backend, because the native binding is unreliable in worker threads and
//   picks its GPU only from CUDA_VISIBLE_DEVICES, which must be set before it
//   loads. Process i gets GPU gpus[i % gpus.length] (gpu-assignment.ts
//   chooses them), and TF_CPP_MIN_LOG_LEVEL=1 unless the user set it:
//   TensorFlow's info lines would drown the progress.
//
// They are watched for the whole run. One that fails before the run's first
// step is committed (a start-up crash: CUDA failing to start, a missing
// library, an out-of-memory in step 1) ends the run with its own message
// (`startupFailure`): the same machine would fail the same way again, so
// going on with fewer GPUs would only hide it. One that fails later is a
// lost worker like any other, and --on-worker-loss decides.

import { spawn, type ChildProcess } from 'node:child_process';
import { Piscina } from 'piscina';
import { installedTensorflowPackage, tensorflowInstalled } from '../common/backend/backend.js';
import { resolveWorkerScript } from '../common/fs/worker-script.js';
import type { BackendChoice } from '../common/backend/names.js';
import type { WorkerOptions } from '../worker/worker.js';
import { createSharedRegion, type SharedRegion } from '../common/allreduce/index.js';
import { TOKEN_ENV } from './admission.js';

export type LocalMode = 'thread' | 'process';

export interface LocalWorkerOptions extends Pick<WorkerOptions, 'connect' | 'token' | 'backend' | 'caPath'> {
  mode: LocalMode;
  /** For processes: GPU ids, assigned round robin through CUDA_VISIBLE_DEVICES. */
  gpus?: string[];
  log?: (line: string) => void;
  /**
   * Threads: the longest vector the run all-reduces (floats). With it, the
   * threads get one shared region sized for it, and a group made only of
   * them all-reduces through it (common/allreduce/shared-memory.ts).
   * TFJS_DDP_SHARED_MEMORY=0 turns that off (they use the ring).
   */
  sharedElements?: number;
}

/** Set to 0: local threads use the loopback ring even when they could share memory. */
export const SHARED_MEMORY_ENV = 'TFJS_DDP_SHARED_MEMORY';

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

/** Whether workers run the tensorflow backend: named, or what 'auto' will pick where the native package is installed. */
export function picksTensorflow(backend: BackendChoice): boolean {
  return backend === 'tensorflow' || (backend === 'auto' && tensorflowInstalled());
}

/** Processes for the tensorflow backend (also when 'auto' will pick it), threads otherwise. */
export function defaultLocalMode(backend: BackendChoice): LocalMode {
  return picksTensorflow(backend) ? 'process' : 'thread';
}

/**
 * Why local worker threads cannot run `backend`, or null when they can: the
 * native binding of @tensorflow/tfjs-node(-gpu) is unsafe in worker threads
 * (and picks its GPU only when the process starts). `installed`: the
 * tensorflow package that is installed, if any (for 'auto', which picks it).
 */
export function threadModeRefusal(backend: BackendChoice, installed: string | null = installedTensorflowPackage()): string | null {
  if (backend === 'tensorflow') {
    return '--local-mode thread cannot run --backend tensorflow: its native binding is unsafe in worker threads ' +
      '(and picks its GPU only when the process starts); use --local-mode process, the default for tensorflow';
  }
  if (backend === 'auto' && installed !== null) {
    return `--local-mode thread with --backend auto: auto would pick the native tensorflow backend (${installed} is installed), ` +
      'whose binding is unsafe in worker threads; use --local-mode process (the default here), or --backend wasm';
  }
  return null;
}

/** A local worker that failed before the run's first step; the message is its own (exit status, last stderr lines). */
export class LocalStartupError extends Error {
  override name = 'LocalStartupError';
}

/** How many of a child's last stderr lines a start-up failure quotes. */
const STDERR_LINES_KEPT = 8;

export class LocalWorkers {
  private readonly pool: Piscina | null = null;
  /** The threads' shared region (thread mode with sharedElements), or null. */
  readonly sharedRegion: SharedRegion | null = null;
  private readonly children: ChildProcess[] = [];
  private readonly finished: Promise<unknown>[] = [];
  private pastStartup = false;
  private failure: LocalStartupError | null = null;
  private readonly failureHeard = new Set<() => void>();
  /**
   * Rejects with a LocalStartupError when a local worker fails before
   * startupDone() (the run's first committed step); never resolves.
   */
  readonly startupFailure: Promise<never>;

  constructor(count: number, options: LocalWorkerOptions) {
    let reject: (err: Error) => void = () => {};
    this.startupFailure = new Promise<never>((_, r) => {
      reject = r;
    });
    this.startupFailure.catch(() => {}); // observed by whoever races it; not an unhandled rejection otherwise
    const { mode, gpus, log, sharedElements, ...worker } = options;
    // Only the first failure counts: the others are usually its echo (the group breaking up).
    const fail = (message: string): void => {
      if (this.failure !== null) return;
      this.failure = new LocalStartupError(message);
      reject(this.failure);
      for (const heard of this.failureHeard) heard();
    };
    if (mode === 'thread') {
      this.pool = new Piscina({
        filename: resolveWorkerScript(import.meta.url, '../worker/thread-entry.js'),
        minThreads: count, maxThreads: count, concurrentTasksPerWorker: 1, idleTimeout: 1000,
      });
      // What piscina cannot pin on a task; unheard, an 'error' event would end the coordinator.
      this.pool.on('error', (err: Error) => log?.(`local worker threads: ${err.message}`));
      if (sharedElements !== undefined && count > 1 && process.env[SHARED_MEMORY_ENV] !== '0') {
        this.sharedRegion = createSharedRegion(count, sharedElements);
        if (!this.sharedRegion) log?.(`local worker threads: no shared region for ${count} x ${sharedElements} floats (over 4 GiB); they use the ring`);
      }
      for (let i = 0; i < count; i++) {
        // The region travels in the task's message: a shared memory is shared, not copied.
        const task: WorkerOptions = { ...worker, cacheDir: null, sharedRegion: this.sharedRegion };
        this.finished.push(this.pool.run(task).catch((err: Error) => {
          if (this.pastStartup) log?.(`local worker thread ${i} failed: ${err.message}`);
          else fail(`local worker thread ${i} failed before the run's first step: ${err.message}`);
        }));
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
        const lastErrors: string[] = [];
        // Its output, a line at a time, named with its rank once it has one: its errors (stderr) say what went wrong there.
        let rank: string | null = null;
        const prefix = () => `${name}${rank === null ? '' : ` (rank ${rank})`}`;
        forEachLine(child.stdout!, (line) => {
          const m = /(?:joined as|now) rank (\d+) of \d+/.exec(line);
          if (m) rank = m[1]!;
          log?.(`${prefix()}: ${line}`);
        });
        forEachLine(child.stderr!, (line) => {
          lastErrors.push(line);
          if (lastErrors.length > STDERR_LINES_KEPT) lastErrors.shift();
          log?.(`${prefix()}: ${line}`);
        });
        this.finished.push(new Promise<void>((resolve) => {
          child.once('error', (err) => {
            fail(`${name} could not start: ${err.message}`);
            resolve();
          });
          // 'close', not 'exit': by then its last stderr lines have been read.
          child.once('close', (code, signal) => {
            resolve();
            if (code === 0) return;
            const status = signal !== null ? `was killed by ${signal}` : `exited with code ${code}`;
            if (this.pastStartup) {
              log?.(`${prefix()} ${status}`);
              return;
            }
            // Its rank leads, as the membership's messages name workers; every quoted line carries it too.
            const who = rank === null ? name : `rank ${rank} (${name})`;
            const tag = rank === null ? name : `rank ${rank}`;
            fail(`${who} ${status} before the run's first step: a worker that cannot start would fail the same way again, ` +
              'so the run stops instead of going on without it' +
              (lastErrors.length > 0 ? `; its last lines on stderr:\n${lastErrors.map((l) => `  ${tag}: ${l}`).join('\n')}` : '; it wrote nothing on stderr'));
          });
        }));
      }
    }
  }

  /**
   * The run's first step is committed: from now on a local worker that fails
   * is a lost worker, which --on-worker-loss handles (its exit is still logged).
   */
  startupDone(): void {
    this.pastStartup = true;
  }

  /**
   * The start-up failure, waiting up to `ms` for one: a child's exit is heard
   * a moment after its socket closed, which may already have ended the run
   * as "every worker was lost". Null if none (or past start-up).
   */
  async startupFailureWithin(ms: number): Promise<LocalStartupError | null> {
    if (this.failure !== null || this.pastStartup) return this.failure;
    let heard: () => void = () => {};
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      heard = resolve;
      this.failureHeard.add(heard);
      timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
    this.failureHeard.delete(heard);
    return this.failure;
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
