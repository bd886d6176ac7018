// The coordinator of a data-parallel run. It owns the run's configuration and
// initial weights, admits N workers over a control WebSocket, forms them into
// a group wired for the all-reduce (group.ts), and then drives training epoch
// by epoch (training-loop.ts): workers exchange gradients among themselves
// and report only small per-step sums here, from which the coordinator writes
// metrics.jsonl and curves.png exactly as the single-process trainer does.
// Lost workers and late joiners change the group (membership.ts). See
// docs/PROTOCOL.md for the message order.

import type { WireName } from '../common/allreduce/wire-format.js';
import type { TrainConfig } from '../common/training/config.js';
import { encodeDataset } from '../common/data/dataset-cache.js';
import type { Dataset } from '../common/data/types.js';
import type { ModelSpec } from '../common/model/spec.js';
import { plannedLearningRates, scheduleOf } from '../common/optim/schedule.js';
import { saveCheckpoint, type RunState } from '../common/training/run-state.js';
import { prepareRun } from '../common/training/run-setup.js';
import type { ProgressStream } from '../common/io/progress.js';
import { CONTROL_PATH, type AllReduceKind, type HostPort } from '../common/protocol/index.js';
import type { BackendChoice } from '../common/backend/names.js';
import { Admission, resolveToken } from './admission.js';
import { Lobby } from './lobby.js';
import { Watchdog } from './watchdog.js';
import { listenControl, type ControlServer } from './control-server.js';
import { RunFeed } from './dashboard/run-feed.js';
import type { TlsFiles } from './dashboard/http-server.js';
import { DEFAULT_BUCKET_CAP_MB } from '../common/allreduce/index.js';
import { defaultLocalMode, LocalStartupError, LocalWorkers, picksTensorflow, type LocalMode } from './local-workers.js';
import { Group, MemberFailure, type GroupSetup, type Member } from './group.js';
import { Membership, WorkersLostError, type WorkerLossPolicy } from './membership.js';
import { trainingLoop, type LoopResult } from './training-loop.js';

export type { StepBreakdown } from './training-loop.js';

export interface CoordinatorOptions {
  /** World size N. */
  workers: number;
  /** How many of the N run on this machine (threads or processes, see localMode); default N. The rest join with `worker --connect`. */
  localWorkers?: number;
  host?: string;
  /** 0 = any free port (see onListening). */
  port?: number;
  /** Shared secret; default $TFJS_DDP_TOKEN, or a random one when every worker is local. */
  token?: string;
  allreduce?: AllReduceKind;
  /** The ring's wire format; default fp32. bf16 and fp16 are compressed (lossy sums), and the run's log says so. */
  wire?: WireName;
  /** Compare the replicas' weight checksums every this many steps (and at the end); default 50. */
  checksumEvery?: number;
  /**
   * Goyal et al.'s mode: --batch-size is each worker's batch, so the global
   * batch and the learning rate grow N-fold (linear scaling rule).
   */
  perWorkerBatch?: boolean;
  /** Backend override for the local workers (default: the config's). */
  localBackend?: BackendChoice;
  /** Local workers as threads or as child processes (default: processes for the tensorflow backend, else threads). */
  localMode?: LocalMode;
  /** GPU ids for local child processes, one per process (round robin), set as CUDA_VISIBLE_DEVICES; the CLI picks them (gpu-assignment.ts). */
  gpus?: string[];
  log?: (line: string) => void;
  progressStream?: ProgressStream;
  /** Serve https:// and wss:// with this PEM certificate and key (workers then connect with wss:// and --ca). */
  tls?: TlsFiles;
  /** What a lost worker does to the run: re-form with the survivors (default), wait for a replacement, or checkpoint and stop. */
  onWorkerLoss?: WorkerLossPolicy;
  /** A worker is lost when it sends nothing for this long (plus twice the longest step); default 30 s. */
  workerTimeoutMs?: number;
  /**
   * Until a step has been measured, what the watchdog allows on top of
   * workerTimeoutMs (backend start-up, kernel compilation, the first step); default 10 min.
   */
  firstStepTimeoutMs?: number;
  /** How long a new connection may take to send its hello (default 30 s); slower ones are dropped. */
  helloTimeoutMs?: number;
  /** Serve the live dashboard on the control port (default true). */
  dashboard?: boolean;
  /** Called once the control server listens, with its actual address. */
  onListening?: (address: HostPort) => void;
}

export interface CoordinatorResult extends LoopResult {
  /** Final state (rank 0's; every rank's checksum agreed): weights, momentum, BatchNorm statistics, step. */
  state: RunState;
  /** The configuration actually run (after --per-worker-batch scaling). */
  config: TrainConfig;
  /** Each time the group was re-formed: at which committed step, its size before and after, and who was lost. */
  groupChanges: Membership['changes'];
}

/** Runs a whole distributed training job; rejects with a message naming the failing rank. */
export async function runCoordinator(requested: TrainConfig, options: CoordinatorOptions): Promise<CoordinatorResult> {
  const log = options.log ?? (() => {});
  const { worldSize, localCount } = workerCounts(options);
  const scaled = options.perWorkerBatch ? linearScaling(requested, worldSize, log) : requested;
  // Overlap pays where compute is off the CPU (the GPU); on wasm/cpu the communication thread takes cores from
  // compute instead (docs/BENCHMARKS.md, section 6: 2 wasm workers train 14% slower with it on 2 cores).
  const cfg: TrainConfig = { ...scaled, overlap: scaled.overlap ?? picksTensorflow(options.localBackend ?? scaled.backend) };
  const checksumEvery = options.checksumEvery ?? 50;
  const allreduce = options.allreduce ?? 'ring';
  const wire = options.wire ?? 'fp32';
  if (allreduce !== 'ring' && wire !== 'fp32') throw new Error(`--wire ${wire} needs the ring all-reduce: the star sums in fp32 (drop --wire or --allreduce star)`);
  const token = resolveToken(options.token, worldSize - localCount);

  // Workers receive the data from here (or from their cache), so only the coordinator needs the files.
  const exchange = worldSize === 1 ? '' : cfg.overlap ? `, buckets of ${cfg.bucketMb ?? DEFAULT_BUCKET_CAP_MB} MB reduced during backward` : ', one all-reduce after backward';
  const { data, spec, state, outputs } = await prepareRun(cfg, log, `${worldSize} worker${worldSize === 1 ? '' : 's'}, ${allreduce} all-reduce` +
    (wire === 'fp32' ? '' : `, ${wire} wire (compressed: lossy sums)`) + exchange);
  const dataset = datasetForWorkers(data);
  const feed = options.dashboard === false
    ? null
    : new RunFeed(cfg, worldSize, allreduce, plannedLearningRates(scheduleOf(cfg), cfg.epochs, outputs.stepsPerEpoch));
  if (feed) outputs.onEpoch.push((m) => feed.epochEnded(m));
  const { server, address } = await serveControl(options, spec, feed, localCount, log);

  const lobby = new Lobby(worldSize, new Admission(token), log, feed, options.helloTimeoutMs);
  server.wss.on('connection', (ws, req) => void lobby.admit(ws, req));
  const local = localCount > 0
    ? new LocalWorkers(localCount, {
      connect: `${options.tls ? 'wss://' : ''}${address.host}:${address.port}`, caPath: options.tls?.certPath, token, backend: options.localBackend,
      mode: options.localMode ?? defaultLocalMode(options.localBackend ?? cfg.backend), gpus: options.gpus, log,
      sharedElements: allreduce === 'ring' ? Math.max(spec.paramCount, spec.runningStatsSize) : undefined,
    })
    : null;
  const workerTimeoutMs = options.workerTimeoutMs ?? 30_000;
  // A local worker that fails before the first committed step ends the run with its own message (local-workers.ts).
  const watched = async <T>(work: Promise<T>): Promise<T> => {
    if (!local) return work;
    work.catch(() => {}); // when the start-up failure wins the race, this one's rejection comes later
    try {
      return await Promise.race([work, local.startupFailure]);
    } catch (err) {
      if (!(err instanceof LocalStartupError)) throw err;
      // A worker whose step threw sent its error (rank, step, message) before its thread or process
      // ended; the run fails on that a moment later, and it is the better message.
      throw (await rejectionWithin(work, 2000)) ?? err;
    }
  };
  const setup: GroupSetup = {
    cfg, allreduce, wire, checksumEvery, heartbeatMs: Math.min(5000, Math.max(100, Math.round(workerTimeoutMs / 6))), hubHost: address.host,
    ...dataset, log, feed, sharedRegion: local?.sharedRegion ?? null,
  };
  let membership: Membership | null = null;
  let watchdog: Watchdog | null = null;
  try {
    const first = await watched(lobby.full);
    feed?.ranksAssigned(first.flatMap((m) => (m.view ? [m.view] : [])));
    membership = new Membership(Group.unformed(first), state, {
      setup, lobby, policy: options.onWorkerLoss ?? 'shrink', target: worldSize, checkpoint: () => saveCheckpoint(cfg, spec, state),
    });
    const members = membership;
    lobby.started(() => worldSize - members.group.size - lobby.spares);
    watchdog = new Watchdog(() => members.members.map((m) => m.conn), workerTimeoutMs, {
      firstStepAllowanceMs: options.firstStepTimeoutMs, backend: options.localBackend ?? cfg.backend,
    });
    await watched(formFirstGroup(members, first, state, setup));

    const run = await watched(trainingLoop(cfg, state, membership, {
      outputs, testCount: data.test.count, checksumEvery, log, progressStream: options.progressStream, feed, watchdog,
      onCommit: () => local?.startupDone(),
    }));
    await sayDone(membership, log);
    feed?.finished('finished');
    return { ...run, state, config: cfg, groupChanges: membership.changes };
  } catch (caught) {
    let err = caught;
    // A crashed local worker's socket closes a moment before its exit is heard: if that loss ended the
    // run ("every worker was lost", with --resume advice), its own message is the better one.
    if (local && err instanceof WorkersLostError) err = (await local.startupFailureWithin(2000)) ?? err;
    feed?.finished('failed', (err as Error).message);
    if (membership) throw new Error(`run aborted: ${(err as Error).message}`, { cause: err });
    throw err;
  } finally {
    watchdog?.stop();
    // The trace so far, also when the run failed: it shows what the ranks were doing.
    await outputs.flushTrace().catch((err: Error) => log(`timeline: could not write ${cfg.timeline}: ${err.message}`));
    await membership?.group.close();
    await Promise.all([...lobby.waiting(), ...(membership?.members ?? []).map((m) => m.conn)].map((c) => c.close(1011, 'coordinator stopped')));
    feed?.close();
    await server.close();
    await local?.stop();
  }
}

/** N and how many of them run here, checked. */
function workerCounts(options: CoordinatorOptions): { worldSize: number; localCount: number } {
  const worldSize = options.workers;
  const localCount = options.localWorkers ?? worldSize;
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new Error(`--workers must be a positive integer, got ${worldSize}`);
  if (!Number.isInteger(localCount) || localCount < 0 || localCount > worldSize) {
    throw new Error(`--local-workers must be an integer in [0, ${worldSize}] (the --workers count), got ${localCount}`);
  }
  return { worldSize, localCount };
}

/** --per-worker-batch: each worker keeps --batch-size, so the global batch and the lr scale by N (Goyal et al. 2017). */
function linearScaling(cfg: TrainConfig, worldSize: number, log: (line: string) => void): TrainConfig {
  const scaled = { ...cfg, batchSize: cfg.batchSize * worldSize, lr: cfg.lr * worldSize };
  log(`per-worker batch ${cfg.batchSize} x ${worldSize} workers: global batch ${scaled.batchSize}, lr ${cfg.lr} x ${worldSize} = ${scaled.lr}` +
    (cfg.warmupEpochs > 0 ? `, ${cfg.warmupEpochs} warmup epoch(s)` : ' (consider --warmup-epochs, as Goyal et al. do)'));
  return scaled;
}

/** The dataset as the workers get it: its hash and size in `init`, the blob for those without it in their cache. */
function datasetForWorkers(data: Dataset): Pick<GroupSetup, 'datasetHash' | 'datasetBytes' | 'datasetBlob'> {
  const encoded = encodeDataset(data);
  // The blob is dropped once the first group has it: for CIFAR-10 it is a second 184 MB copy of the data.
  let blob: Uint8Array | null = encoded.bytes;
  return {
    datasetHash: encoded.hash,
    datasetBytes: encoded.bytes.byteLength,
    // Needed again only for a worker that joins later without the data in its cache.
    datasetBlob: () => {
      const bytes = blob ?? encodeDataset(data).bytes;
      blob = null;
      return bytes;
    },
  };
}

/** The one port: the control WebSocket and the dashboard. Logs how to join and calls onListening. */
async function serveControl(
  options: CoordinatorOptions, spec: ModelSpec, feed: RunFeed | null, localCount: number, log: (line: string) => void,
): Promise<{ server: ControlServer; address: HostPort }> {
  const worldSize = options.workers;
  // The largest message a worker sends is rank 0's state; 1 MiB covers the rest of it.
  const maxMessageBytes = 4 * (2 * spec.paramCount + spec.runningStatsSize) + (1 << 20);
  const server = await listenControl(options.host ?? '127.0.0.1', options.port ?? 0, feed, maxMessageBytes, log, options.tls ?? null);
  const address = { host: options.host ?? '127.0.0.1', port: server.port };
  const scheme = options.tls ? 'wss' : 'ws';
  const connectArg = options.tls ? `wss://${address.host}:${address.port} --ca <the certificate or its CA>` : `${address.host}:${address.port}`;
  log(`listening on ${scheme}://${address.host}:${address.port}${CONTROL_PATH}, waiting for ${worldSize} worker${worldSize === 1 ? '' : 's'}` +
    (worldSize > localCount ? ` (${worldSize - localCount} to join with: worker --connect ${connectArg} --token <token>)` : ''));
  log(`messages from workers are limited to ${(maxMessageBytes / 1e6).toFixed(1)} MB (the model's state plus 1 MiB)`);
  if (feed) log(`dashboard: ${options.tls ? 'https' : 'http'}://${address.host}:${address.port}/`);
  options.onListening?.(address);
  return { server, address };
}

/** Wires the first members into a group; a member lost while forming it re-forms it at once. */
async function formFirstGroup(membership: Membership, first: Member[], state: RunState, setup: GroupSetup): Promise<void> {
  try {
    membership.group = await Group.form(first, state, setup);
  } catch (err) {
    if (!(err instanceof MemberFailure)) throw err;
    await membership.reform(err);
  }
}

/** Ends the run on every worker. The work is saved: a member lost at this point no longer matters. */
async function sayDone(membership: Membership, log: (line: string) => void): Promise<void> {
  await membership.group.close();
  for (const m of membership.members) {
    try {
      m.conn.send({ type: 'done' });
    } catch {
      log(`${m.conn.peer} left before the end of the run`);
    }
  }
  await Promise.all(membership.members.map((m) => m.conn.closed));
}

/** The error `work` rejects with within `ms`, or null if it does not (or resolves). */
async function rejectionWithin(work: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    return await Promise.race([work.then(() => null, (err: unknown) => err), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
