// The coordinator of a data-parallel run. It owns the run's configuration and
// initial weights, admits N workers over a control WebSocket, wires their
// all-reduce, and then drives training epoch by epoch: workers exchange
// gradients among themselves and report only small per-step sums here, from
// which the coordinator writes metrics.jsonl and curves.png exactly as the
// single-process trainer does. See docs/PROTOCOL.md for the message order.

import fs from 'node:fs';
import path from 'node:path';
import { randomInt } from 'node:crypto';
import type { TrainConfig } from '../common/config.js';
import { loadDataset } from '../common/data/load-dataset.js';
import { encodeDataset } from '../common/data/dataset-cache.js';
import { buildModelSpec, type ModelSpec } from '../common/model/spec.js';
import { learningRate } from '../common/optim/schedule.js';
import { freshState, resumeState, saveCheckpoint, type TrainState } from '../common/train-state.js';
import { writeSamples } from '../common/samples.js';
import { TensorboardLog } from '../common/tensorboard.js';
import { appendMetrics, formatEpochLine, type EpochMetrics } from '../common/metrics.js';
import { ProgressBar, type ProgressStream } from '../common/progress.js';
import { writeCurvesPng } from '../common/plot.js';
import { StarHub, StarHubServer } from '../common/allreduce/index.js';
import {
  configHash, CONTROL_PATH, ControlConnection,
  type AllReduceKind, type ControlMessage, type HostPort, type MessageOfType,
} from '../common/protocol/index.js';
import type { BackendChoice } from '../common/types.js';
import { Admission, resolveToken } from './admission.js';
import { Lobby, refuseLate } from './lobby.js';
import { Watchdog } from './watchdog.js';
import { listenControl } from './control-server.js';
import { RunFeed, type WorkerView } from './dashboard/run-feed.js';
import type { TlsFiles } from './dashboard/http-server.js';
import { defaultLocalMode, LocalWorkers, type LocalMode } from './local-workers.js';

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
  /** Abort when a worker sends nothing for this long (plus twice the longest step); default 30 s. */
  workerTimeoutMs?: number;
  /** How long a new connection may take to send its hello (default 30 s); slower ones are dropped. */
  helloTimeoutMs?: number;
  /** Serve the live dashboard on the control port (default true). */
  dashboard?: boolean;
  /** Called once the control server listens, with its actual address. */
  onListening?: (address: HostPort) => void;
}

export interface StepBreakdown {
  dataMs: number;
  gradMs: number;
  reduceMs: number;
  optimMs: number;
}

export interface CoordinatorResult {
  history: EpochMetrics[];
  /** Final state (rank 0's; every rank's checksum agreed): weights, momentum, BatchNorm statistics, step. */
  state: TrainState;
  /** The configuration actually run (after --per-worker-batch scaling). */
  config: TrainConfig;
  steps: number;
  trainMs: number;
  /** Share of the workers' step time spent in the gradient all-reduce (mean over ranks and steps). */
  allReduceShare: number;
  /** Time the workers waited for augmented batches, as a share of step time plus that wait. */
  dataWaitShare: number;
  /** Mean milliseconds per step and rank: data wait, forward+backward, all-reduce, optimizer + weight upload. */
  breakdown: StepBreakdown;
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
  // The blob is dropped once every worker has it: for CIFAR-10 it is a second 184 MB copy of the data.
  let blob: Uint8Array | null;
  let datasetHash: string;
  ({ bytes: blob, hash: datasetHash } = encodeDataset(data));
  const datasetBytes = blob.byteLength;
  const spec = buildModelSpec({
    name: cfg.model, width: cfg.width, norm: cfg.norm, numClasses: data.classes.length, inChannels: data.train.channels,
  });
  fs.mkdirSync(cfg.out, { recursive: true });
  const tensorboard = cfg.tensorboard ? await TensorboardLog.open(cfg.tensorboard, log) : null;
  const state = cfg.resume ? await resumeState(cfg, spec, log) : freshState(cfg, spec);
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
  let hub: StarHub | null = null;
  let serving: Promise<void> | null = null;
  let ranks: ControlConnection[] = [];
  let started = false;
  let watchdog: Watchdog | null = null;
  const workerTimeoutMs = options.workerTimeoutMs ?? 30_000;
  try {
    ranks = await (local ? Promise.race([lobby.full, local.failed]) : lobby.full);
    server.wss.removeAllListeners('connection');
    server.wss.on('connection', (ws) => refuseLate(ws, log));
    started = true;
    const views = ranks.map((conn) => lobby.views.get(conn)!);
    watchdog = new Watchdog(ranks, workerTimeoutMs);
    feed?.ranksAssigned(views);

    const tag = randomInt(1, 0xffff_ffff);
    const hash = configHash(cfg);
    ranks.forEach((conn, rank) => {
      conn.peer = `rank ${rank} (${conn.peer})`;
      conn.send({
        type: 'init', rank, worldSize, config: cfg, configHash: hash, datasetHash, datasetBytes,
        weights: state.weights, momentum: state.momentum, runningStats: state.runningStats, step: state.step,
        allreduce, tag, checksumEvery, heartbeatMs: Math.min(5000, Math.max(100, Math.round(workerTimeoutMs / 6))),
      });
    });
    const statuses = await gather(ranks, 'data-status');
    statuses.forEach((status, rank) => {
      if (!status.cached) ranks[rank].send({ type: 'dataset', hash: datasetHash, blob: blob! });
    });
    const cachedCount = statuses.filter((st) => st.cached).length;
    blob = null;
    log(`dataset ${datasetHash.slice(0, 12)} (${(datasetBytes / 1e6).toFixed(1)} MB): sent to ${worldSize - cachedCount} worker(s), cached on ${cachedCount}`);
    const hubServer = allreduce === 'star' && worldSize > 1 ? await StarHubServer.listen({ worldSize, host: actual.host, port: 0, tag }) : null;
    const readies = await gather(ranks, 'ready');
    readies.forEach((r, rank) => {
      log(`rank ${rank}: ready, backend ${r.backend}`);
      feed?.workerUpdate(views[rank], { backend: r.backend, state: 'ready' });
    });
    ranks.forEach((conn, rank) => {
      const peer = worldSize === 1 ? null : hubServer ? hubServer.address : readies[(rank - 1 + worldSize) % worldSize].ringAddress;
      conn.send({ type: 'connect', peer });
    });
    if (hubServer) {
      hub = new StarHub(await hubServer.accept(), { tag });
      serving = hub.serve();
      serving.catch(() => {}); // a hub failure also fails the workers, whose errors are reported
    }

    const run = await drive(cfg, spec, state, ranks, {
      trainCount: data.train.count, testCount: data.test.count, checksumEvery, log, progressStream: options.progressStream,
      feed: feed ? { feed, views } : null, tensorboard, watchdog,
    });
    if (hub) {
      await hub.close();
      await serving;
    }
    for (const conn of ranks) conn.send({ type: 'done' });
    await Promise.all(ranks.map((c) => c.closed));
    feed?.finished('finished');
    return { ...run, state, config: cfg };
  } catch (err) {
    feed?.finished('failed', (err as Error).message);
    // A lost or failed worker ends the run: the others cannot go on without its shard.
    if (started) throw new Error(`run aborted: ${(err as Error).message}`, { cause: err });
    throw err;
  } finally {
    watchdog?.stop();
    await hub?.close();
    await Promise.all([...lobby.waiting(), ...ranks].map((c) => c.close(1011, 'coordinator stopped')));
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

interface DriveOptions {
  trainCount: number;
  testCount: number;
  checksumEvery: number;
  log: (line: string) => void;
  progressStream?: ProgressStream;
  /** The dashboard's state, and each rank's row in it. */
  feed: { feed: RunFeed; views: WorkerView[] } | null;
  tensorboard: TensorboardLog | null;
  watchdog: Watchdog;
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

/**
 * The epoch loop, in the trainer's order: steps, evaluation, metrics, plots,
 * checkpoint. The workers train segments of an epoch (up to the next
 * checkpoint or --max-steps); between segments the coordinator takes a
 * snapshot from rank 0 and writes the checkpoint itself. `state` is updated
 * in place and ends as the run's final state.
 */
async function drive(
  cfg: TrainConfig, spec: ModelSpec, state: TrainState, ranks: ControlConnection[], o: DriveOptions,
): Promise<Omit<CoordinatorResult, 'state' | 'config'>> {
  const metricsFile = path.join(cfg.out, 'metrics.jsonl');
  if (!cfg.resume) fs.rmSync(metricsFile, { force: true });
  const stepsPerEpoch = Math.ceil(o.trainCount / cfg.batchSize);
  const schedule = { lr: cfg.lr, tMax: cfg.tMax, warmupEpochs: cfg.warmupEpochs };
  const trainStart = Date.now();
  let reduceMs = 0;
  let stepMs = 0;
  let dataMs = 0;
  let gradMs = 0;
  let rankSteps = 0;
  let badSteps = 0;
  // The run's first step sets up kernels and buffers: it is kept out of the timing breakdown.
  const warmupStep = state.step + 1;
  const stopAt = cfg.maxSteps > 0 ? cfg.maxSteps : Infinity;
  while (state.epoch < cfg.epochs && state.step < stopAt) {
    const epoch = state.epoch;
    const epochStart = Date.now() - state.epochTotals.seconds * 1000;
    const bar = new ProgressBar({ epoch: epoch + 1, epochs: cfg.epochs, total: o.trainCount, stream: o.progressStream });
    const totals = state.epochTotals;
    o.feed?.feed.epochStarted(epoch, o.trainCount, totals.seen);
    o.feed?.views.forEach((view) => o.feed!.feed.workerUpdate(view, { state: 'training' }));
    while (state.stepInEpoch < stepsPerEpoch && state.step < stopAt) {
      // A segment ends at the epoch's end, at --max-steps, or at the next --checkpoint-every step.
      const untilCheckpoint = cfg.checkpointEvery > 0 ? cfg.checkpointEvery - (state.step % cfg.checkpointEvery) : Infinity;
      const steps = Math.min(stepsPerEpoch - state.stepInEpoch, stopAt - state.step, untilCheckpoint);
      for (const conn of ranks) conn.send({ type: 'epoch', epoch, from: state.stepInEpoch, steps });
      for (let s = 0; s < steps; s++) {
        const reports = await gather(ranks, 'step');
        state.step++;
        state.stepInEpoch++;
        reports.forEach((r, rank) => {
          if (r.step !== state.step) throw new Error(`rank ${rank} reported step ${r.step} where the run is at step ${state.step}`);
        });
        if (state.step % o.checksumEvery === 0) compareChecksums(reports.map((r) => r.checksum), `step ${state.step}`);
        if (reports.some((r) => r.skipped !== reports[0].skipped)) {
          throw new Error(`the ranks disagree whether step ${state.step} was skipped (${reports.map((r, rank) => `rank ${rank}: ${r.skipped}`).join(', ')})`);
        }
        if (reports[0].skipped) {
          badSteps++;
          const ranksWithNaN = reports.flatMap((r, rank) => (r.localNonFinite ? [rank] : []));
          o.log(`step ${state.step} skipped on every replica: non-finite gradient ` +
            (ranksWithNaN.length > 0 ? `from rank(s) ${ranksWithNaN.join(', ')}` : '(the sum overflowed)') + ` (${badSteps} in a row)`);
          if (badSteps >= cfg.maxBadSteps) {
            totals.seconds = (Date.now() - epochStart) / 1000;
            await snapshot(ranks, state, `step ${state.step}`);
            await saveCheckpoint(cfg, spec, state);
            throw new Error(`${badSteps} consecutive steps had non-finite gradients (--max-bad-steps ${cfg.maxBadSteps}); ` +
              `checkpoint written at step ${state.step}: lower --lr or check the data, then --resume`);
          }
          continue;
        }
        badSteps = 0;
        for (const r of reports) {
          o.watchdog.noteStep(r.stepMs + r.dataMs);
          totals.lossSum += r.lossSum;
          totals.correct += r.correct;
          totals.seen += r.count;
          if (state.step === warmupStep) continue;
          reduceMs += r.reduceMs;
          stepMs += r.stepMs;
          dataMs += r.dataMs;
          gradMs += r.gradMs;
          rankSteps++;
        }
        bar.update(totals.seen, totals.lossSum / totals.seen);
        if (o.feed) showStep(o.feed, reports, state, stepsPerEpoch);
      }
      if (state.stepInEpoch < stepsPerEpoch) {
        // Mid-epoch: a --checkpoint-every boundary, or stopped by --max-steps. Either way keep the exact state.
        totals.seconds = (Date.now() - epochStart) / 1000;
        await snapshot(ranks, state, `step ${state.step}`);
        await saveCheckpoint(cfg, spec, state);
      }
    }
    bar.finish();
    if (state.stepInEpoch < stepsPerEpoch) break; // stopped mid-epoch by --max-steps: no partial-epoch evaluation
    o.feed?.views.forEach((view) => o.feed!.feed.workerUpdate(view, { state: 'evaluating' }));

    const evals = await gather(ranks, 'eval');
    const test = evals.reduce((t, e) => ({ lossSum: t.lossSum + e.lossSum, correct: t.correct + e.correct, count: t.count + e.count }), { lossSum: 0, correct: 0, count: 0 });
    if (test.count !== o.testCount) throw new Error(`the ranks evaluated ${test.count} test images, the test set has ${o.testCount}`);
    const seconds = (Date.now() - epochStart) / 1000;
    const m: EpochMetrics = {
      epoch: epoch + 1,
      lr: learningRate(epoch, stepsPerEpoch - 1, stepsPerEpoch, schedule),
      train_loss: totals.lossSum / totals.seen,
      train_acc: totals.correct / totals.seen,
      test_loss: test.lossSum / test.count,
      test_acc: test.correct / test.count,
      seconds,
      images_per_s: totals.seen / seconds,
      workers: ranks.length,
    };
    state.history.push(m);
    await appendMetrics(metricsFile, m);
    o.log(formatEpochLine(m));
    o.feed?.feed.epochEnded(m);
    o.tensorboard?.epoch(m);
    if (cfg.plots) await writeCurvesPng(path.join(cfg.out, 'curves.png'), state.history, `${cfg.model} on ${cfg.dataset}, ${ranks.length} workers`);

    state.epoch = epoch + 1;
    state.stepInEpoch = 0;
    state.epochTotals = { lossSum: 0, correct: 0, seen: 0, seconds: 0 };
    // This is a sync point: every rank averages its BatchNorm statistics and rank 0 sends the state.
    await snapshot(ranks, state, `the end of epoch ${epoch + 1}`);
    await saveCheckpoint(cfg, spec, state);
  }
  const allReduceShare = stepMs > 0 ? reduceMs / stepMs : 0;
  const dataWaitShare = stepMs + dataMs > 0 ? dataMs / (stepMs + dataMs) : 0;
  const per = (ms: number) => (rankSteps > 0 ? ms / rankSteps : 0);
  const breakdown = { dataMs: per(dataMs), gradMs: per(gradMs), reduceMs: per(reduceMs), optimMs: per(stepMs - gradMs - reduceMs) };
  o.log(`step time (mean over ranks, first step excluded): forward+backward ${breakdown.gradMs.toFixed(1)} ms, ` +
    `all-reduce ${breakdown.reduceMs.toFixed(1)} ms (${(100 * allReduceShare).toFixed(1)}%), optimizer ${breakdown.optimMs.toFixed(1)} ms, ` +
    `data wait ${breakdown.dataMs.toFixed(1)} ms (${(100 * dataWaitShare).toFixed(1)}%)`);
  return { history: state.history, steps: state.step, trainMs: Date.now() - trainStart, allReduceShare, dataWaitShare, breakdown };
}

/** One step on the dashboard: the step's loss over the global batch, the slowest all-reduce, each rank's speed. */
function showStep(dash: NonNullable<DriveOptions['feed']>, reports: MessageOfType<'step'>[], state: TrainState, stepsPerEpoch: number): void {
  const count = reports.reduce((n, r) => n + r.count, 0);
  dash.feed.step({
    step: state.step,
    epoch: state.epoch + state.stepInEpoch / stepsPerEpoch,
    loss: reports.reduce((l, r) => l + r.lossSum, 0) / Math.max(count, 1),
    allReduceMs: Math.max(...reports.map((r) => r.reduceMs)),
  }, state.epochTotals.seen);
  reports.forEach((r, rank) => dash.feed.workerUpdate(dash.views[rank], { imagesPerS: r.stepMs > 0 ? (1000 * r.count) / r.stepMs : null }));
}

/** Asks every rank for a snapshot, checks that they agree, and copies rank 0's tensors into `state`. */
async function snapshot(ranks: ControlConnection[], state: TrainState, when: string): Promise<void> {
  for (const conn of ranks) conn.send({ type: 'snapshot' });
  const states = await gather(ranks, 'state');
  compareChecksums(states.map((st) => st.checksum), when);
  const { weights, momentum, runningStats, step } = states[0];
  if (step !== state.step) throw new Error(`rank 0 is at step ${step} at ${when}, the run at step ${state.step}`);
  if (weights?.length !== state.weights.length || momentum?.length !== state.momentum.length || runningStats?.length !== state.runningStats.length) {
    throw new Error(`rank 0 sent a snapshot of the wrong size at ${when}`);
  }
  state.weights.set(weights);
  state.momentum.set(momentum);
  state.runningStats.set(runningStats);
}

/** One message of `type` from every rank, in rank order; the first failure of any rank rejects. */
function gather<T extends ControlMessage['type']>(ranks: ControlConnection[], type: T): Promise<MessageOfType<T>[]> {
  return Promise.all(ranks.map((c) => c.expect(type)));
}

/** Throws if the replicas' weights differ, naming the ranks that disagree with rank 0. */
function compareChecksums(sums: (string | null)[], when: string): void {
  const off = sums.flatMap((s, rank) => (s !== sums[0] || s === null ? [rank] : []));
  if (off.length > 0) {
    throw new Error(`replica weights diverged at ${when}: rank(s) ${off.join(', ')} differ from rank 0 ` +
      `(${sums.map((s, r) => `rank ${r}: ${s ?? 'none'}`).join(', ')})`);
  }
}
