// The coordinator of a data-parallel run. It owns the run's configuration and
// initial weights, admits N workers over a control WebSocket, forms them into
// a group wired for the all-reduce (group.ts), and then drives training epoch
// by epoch (training-loop.ts): workers exchange gradients among themselves
// and report only small per-step sums here, from which the coordinator writes
// metrics.jsonl and curves.png exactly as the single-process trainer does.
// Lost workers and late joiners change the group (membership.ts). See
// docs/PROTOCOL.md for the message order.

import fs from 'node:fs';
import path from 'node:path';
import type { TrainConfig } from '../common/training/config.js';
import { loadDataset } from '../common/data/load-dataset.js';
import { encodeDataset } from '../common/data/dataset-cache.js';
import { buildModelSpec } from '../common/model/spec.js';
import { learningRate } from '../common/optim/schedule.js';
import { freshState, resumeState, saveCheckpoint, type RunState } from '../common/training/run-state.js';
import { writeSamples } from '../common/io/plot/samples.js';
import { TensorboardLog } from '../common/io/tensorboard.js';
import type { ProgressStream } from '../common/io/progress.js';
import { CONTROL_PATH, type AllReduceKind, type HostPort } from '../common/protocol/index.js';
import type { BackendChoice } from '../common/backend/names.js';
import { Admission, resolveToken } from './admission.js';
import { Lobby } from './lobby.js';
import { Watchdog } from './watchdog.js';
import { listenControl } from './control-server.js';
import { RunFeed } from './dashboard/run-feed.js';
import type { TlsFiles } from './dashboard/http-server.js';
import { defaultLocalMode, LocalWorkers, type LocalMode } from './local-workers.js';
import { Group, MemberFailure, type GroupSetup } from './group.js';
import { Membership, type WorkerLossPolicy } from './membership.js';
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
  /** GPU ids for local child processes, one per process (round robin), set as CUDA_VISIBLE_DEVICES. */
  gpus?: string[];
  log?: (line: string) => void;
  progressStream?: ProgressStream;
  /** Serve https:// and wss:// with this PEM certificate and key (workers then connect with wss:// and --ca). */
  tls?: TlsFiles;
  /** What a lost worker does to the run: re-form with the survivors (default), wait for a replacement, or checkpoint and stop. */
  onWorkerLoss?: WorkerLossPolicy;
  /** A worker is lost when it sends nothing for this long (plus twice the longest step); default 30 s. */
  workerTimeoutMs?: number;
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
  const worldSize = options.workers;
  const localCount = options.localWorkers ?? worldSize;
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new Error(`--workers must be a positive integer, got ${worldSize}`);
  if (!Number.isInteger(localCount) || localCount < 0 || localCount > worldSize) {
    throw new Error(`--local-workers must be an integer in [0, ${worldSize}] (the --workers count), got ${localCount}`);
  }
  const cfg = options.perWorkerBatch ? linearScaling(requested, worldSize, log) : requested;
  const checksumEvery = options.checksumEvery ?? 50;
  const allreduce = options.allreduce ?? 'ring';
  const token = resolveToken(options.token, worldSize - localCount);
  const admission = new Admission(token);

  // Workers receive the data from here (or from their cache), so only the coordinator needs the files.
  const data = await loadDataset({
    name: cfg.dataset, dataDir: cfg.dataDir, trainLimit: cfg.trainLimit, testLimit: cfg.testLimit,
    seed: cfg.seed, download: cfg.download, log,
  });
  // The blob is dropped once the first group has it: for CIFAR-10 it is a second 184 MB copy of the data.
  const encoded = encodeDataset(data);
  let blob: Uint8Array | null = encoded.bytes;
  const { hash: datasetHash } = encoded;
  const datasetBytes = encoded.bytes.byteLength;
  const spec = buildModelSpec({
    name: cfg.model, width: cfg.width, norm: cfg.norm, numClasses: data.classes.length, inChannels: data.train.channels,
  });
  fs.mkdirSync(cfg.out, { recursive: true });
  const tensorboard = cfg.tensorboard ? await TensorboardLog.open(cfg.tensorboard, log) : null;
  const state = cfg.resume ? await resumeState(cfg, spec, log) : freshState(cfg, spec);
  if (!cfg.resume) fs.rmSync(path.join(cfg.out, 'metrics.jsonl'), { force: true });
  if (cfg.plots && !cfg.resume) await writeSamples(cfg, data);
  log(`data: ${data.name}, ${data.train.count} train / ${data.test.count} test images; model: ${cfg.model} width ${cfg.width}, ` +
    `${spec.paramCount.toLocaleString('en-US')} parameters; ${worldSize} worker${worldSize === 1 ? '' : 's'}, ${allreduce} all-reduce`);

  const stepsPerEpoch = Math.ceil(data.train.count / cfg.batchSize);
  const feed = options.dashboard === false ? null : new RunFeed(cfg, worldSize, allreduce, plannedSchedule(cfg, stepsPerEpoch));
  // The largest message a worker sends is rank 0's state; 1 MiB covers the rest of it.
  const maxMessageBytes = 4 * (2 * spec.paramCount + spec.runningStatsSize) + (1 << 20);
  const server = await listenControl(options.host ?? '127.0.0.1', options.port ?? 0, feed, maxMessageBytes, log, options.tls ?? null);
  const actual = { host: options.host ?? '127.0.0.1', port: server.port };
  const scheme = options.tls ? 'wss' : 'ws';
  const connectArg = options.tls ? `wss://${actual.host}:${actual.port} --ca <the certificate or its CA>` : `${actual.host}:${actual.port}`;
  log(`listening on ${scheme}://${actual.host}:${actual.port}${CONTROL_PATH}, waiting for ${worldSize} worker${worldSize === 1 ? '' : 's'}` +
    (worldSize > localCount ? ` (${worldSize - localCount} to join with: worker --connect ${connectArg} --token <token>)` : ''));
  log(`messages from workers are limited to ${(maxMessageBytes / 1e6).toFixed(1)} MB (the model's state plus 1 MiB)`);
  if (feed) log(`dashboard: ${options.tls ? 'https' : 'http'}://${actual.host}:${actual.port}/`);
  options.onListening?.(actual);

  const lobby = new Lobby(worldSize, admission, log, feed, options.helloTimeoutMs);
  server.wss.on('connection', (ws, req) => void lobby.admit(ws, req));
  const local = localCount > 0
    ? new LocalWorkers(localCount, {
      connect: `${options.tls ? 'wss://' : ''}${actual.host}:${actual.port}`, caPath: options.tls?.certPath, token, backend: options.localBackend,
      mode: options.localMode ?? defaultLocalMode(options.localBackend ?? cfg.backend), gpus: options.gpus, log,
    })
    : null;
  const workerTimeoutMs = options.workerTimeoutMs ?? 30_000;
  const policy = options.onWorkerLoss ?? 'shrink';
  const setup: GroupSetup = {
    cfg, allreduce, checksumEvery, heartbeatMs: Math.min(5000, Math.max(100, Math.round(workerTimeoutMs / 6))), hubHost: actual.host,
    datasetHash, datasetBytes, log, feed,
    // Needed again only for a worker that joins later without the data in its cache.
    datasetBlob: () => {
      const bytes = blob ?? encodeDataset(data).bytes;
      blob = null;
      return bytes;
    },
  };
  let membership: Membership | null = null;
  let watchdog: Watchdog | null = null;
  try {
    const first = await (local ? Promise.race([lobby.full, local.failed]) : lobby.full);
    feed?.ranksAssigned(first.flatMap((m) => (m.view ? [m.view] : [])));
    const checkpoint = async (): Promise<void> => {
      await saveCheckpoint(cfg, spec, state);
    };
    membership = new Membership(Group.unformed(first), state, { setup, lobby, policy, target: worldSize, checkpoint });
    lobby.started(() => worldSize - membership!.group.size - lobby.spares);
    watchdog = new Watchdog(() => membership!.members.map((m) => m.conn), workerTimeoutMs);
    try {
      membership.group = await Group.form(first, state, setup);
    } catch (err) {
      if (!(err instanceof MemberFailure)) throw err;
      await membership.reform(err);
    }

    const run = await trainingLoop(cfg, spec, state, membership, {
      trainCount: data.train.count, testCount: data.test.count, checksumEvery, log, progressStream: options.progressStream,
      feed, tensorboard, watchdog,
    });
    await membership.group.close();
    // The work is saved: a member lost at this point no longer matters.
    for (const m of membership.members) {
      try {
        m.conn.send({ type: 'done' });
      } catch {
        log(`${m.conn.peer} left before the end of the run`);
      }
    }
    await Promise.all(membership.members.map((m) => m.conn.closed));
    feed?.finished('finished');
    return { ...run, state, config: cfg, groupChanges: membership.changes };
  } catch (err) {
    feed?.finished('failed', (err as Error).message);
    if (membership) throw new Error(`run aborted: ${(err as Error).message}`, { cause: err });
    throw err;
  } finally {
    watchdog?.stop();
    await membership?.group.close();
    await Promise.all([...lobby.waiting(), ...(membership?.members ?? []).map((m) => m.conn)].map((c) => c.close(1011, 'coordinator stopped')));
    feed?.close();
    await server.close();
    await local?.stop();
  }
}

/** --per-worker-batch: each worker keeps --batch-size, so the global batch and the lr scale by N (Goyal et al. 2017). */
function linearScaling(cfg: TrainConfig, worldSize: number, log: (line: string) => void): TrainConfig {
  const scaled = { ...cfg, batchSize: cfg.batchSize * worldSize, lr: cfg.lr * worldSize };
  log(`per-worker batch ${cfg.batchSize} x ${worldSize} workers: global batch ${scaled.batchSize}, lr ${cfg.lr} x ${worldSize} = ${scaled.lr}` +
    (cfg.warmupEpochs > 0 ? `, ${cfg.warmupEpochs} warmup epoch(s)` : ' (consider --warmup-epochs, as Goyal et al. do)'));
  return scaled;
}


/** The learning rate the schedule will give, four points per epoch, for the dashboard. */
function plannedSchedule(cfg: TrainConfig, stepsPerEpoch: number): [number, number][] {
  const schedule = { lr: cfg.lr, tMax: cfg.tMax, warmupEpochs: cfg.warmupEpochs };
  const points: [number, number][] = [];
  for (let epoch = 0; epoch < cfg.epochs; epoch++) {
    for (let q = 0; q < 4; q++) {
      const step = Math.floor((q * stepsPerEpoch) / 4);
      points.push([epoch + step / stepsPerEpoch, learningRate(epoch, step, stepsPerEpoch, schedule)]);
    }
  }
  points.push([cfg.epochs, learningRate(cfg.epochs - 1, stepsPerEpoch - 1, stepsPerEpoch, schedule)]);
  return points;
}

