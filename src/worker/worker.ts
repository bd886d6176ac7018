// One data-parallel replica. It connects to the coordinator, receives its
// rank, the run's config, the dataset (unless cached) and the starting state,
// and then trains the global batches the coordinator names: each step it
// computes the gradient of its shard, sums it with the other ranks'
// (all-reduce), and applies the same SGD step as every other rank, so all
// replicas keep bit-identical weights.

import fs from 'node:fs';
import { WebSocket } from 'ws';
import { describeBackend, initBackend } from '../common/backend.js';
import { decodeDataset, defaultCacheDir, loadCachedDataset, storeCachedDataset } from '../common/data/dataset-cache.js';
import { buildModelSpec } from '../common/model/spec.js';
import { Replica } from '../common/replica.js';
import { sgdStep, updateRunningStats } from '../common/optim/sgd.js';
import { learningRate } from '../common/optim/schedule.js';
import { globalBatches, shardRange } from '../common/sampler.js';
import { evaluateRange } from '../common/evaluation.js';
import { BatchLoader } from '../common/batch-loader.js';
import { NORMALIZE, type TrainConfig } from '../common/config.js';
import {
  connectToStarHub, RingAllReducer, RingEndpoint, StarAllReducer, type AllReducer,
} from '../common/allreduce/index.js';
import {
  ControlConnection, configHash, CONTROL_PATH, PROTOCOL_VERSION, weightsChecksum,
  type EpochMessage, type HostPort, type InitMessage,
} from '../common/protocol/index.js';
import type { BackendChoice, Dataset } from '../common/types.js';

export interface WorkerOptions {
  /** Coordinator address: host:port, ws://host:port or wss://host:port. */
  connect: string;
  token: string;
  /** Overrides the run's backend on this worker; by default the config's backend is used. */
  backend?: BackendChoice;
  /** Interface this worker's ring endpoint listens on and advertises; default 127.0.0.1. */
  ringHost?: string;
  /** Port of the ring endpoint; default 0 (any free port). */
  ringPort?: number;
  log?: (line: string) => void;
  /** PEM file of the certificate (or its CA) that a wss:// coordinator must present. */
  caPath?: string;
  /** Keep trying to reach (or rejoin after a crash) the coordinator for this long; 0 = fail at once (default). */
  reconnectTimeoutMs?: number;
  /** Where received datasets are cached by content hash; null: no cache. Default: $TFJS_DDP_CACHE or ~/.cache/tfjs-ddp. */
  cacheDir?: string | null;
  /** Only for tests of the refusal path: the protocol version to announce. */
  protocolVersion?: number;
}

/**
 * Fault injection for reliability tests and drills: "rank:step,..." makes
 * those ranks put a NaN into their gradient at those (1-based) steps.
 */
export const FAULT_ENV = 'TFJS_DDP_INJECT_NAN';

function allFinite(values: Float32Array): boolean {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return false;
  return true;
}

export interface CoordinatorAddress extends HostPort {
  /** wss:// (TLS) rather than ws://. */
  secure: boolean;
}

/** Parses "host:port", "ws://host:port" or "wss://host:port" (IPv6 in brackets); throws a message naming the flag. */
export function parseCoordinatorAddress(text: string): CoordinatorAddress {
  const m = /^(?:(wss?):\/\/)?(\[[^\]]+\]|[^:\s/]+):(\d{1,5})\/?$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) {
    throw new Error(`--connect expects host:port or wss://host:port (e.g. 127.0.0.1:29500), got "${text}"`);
  }
  return { host: m[2].replace(/^\[|\]$/g, ''), port, secure: m[1] === 'wss' };
}

/** Close code of a WebSocket whose peer disappeared without closing it: the coordinator crashed or the link was cut. */
const ABNORMAL_CLOSURE = 1006;

/**
 * Runs one worker until the coordinator says done. Rejects if refused or on
 * any failure, except that with `reconnectTimeoutMs` it keeps trying to reach
 * a coordinator that is not up yet, or that vanished mid-run (a crash, then
 * `coordinator --resume`), and joins it again as a new worker.
 */
export async function runWorker(options: WorkerOptions): Promise<void> {
  const log = options.log ?? (() => {});
  const address = parseCoordinatorAddress(options.connect);
  const retryMs = options.reconnectTimeoutMs ?? 0;
  for (;;) {
    const conn = await connectWithRetry(address, options.caPath, retryMs, log);
    try {
      conn.send({ type: 'hello', protocol: options.protocolVersion ?? PROTOCOL_VERSION, token: options.token, backend: options.backend ?? null });
      const init = await conn.expect('init');
      conn.peer = 'coordinator';
      log(`joined as rank ${init.rank} of ${init.worldSize}`);
      await trainAsReplica(conn, init, options);
      return;
    } catch (err) {
      // Tell the coordinator why, so its error names this rank's real problem
      // rather than just a closed socket.
      try {
        conn.send({ type: 'error', message: (err as Error).message });
      } catch {
        // The connection is already gone.
      }
      // A crashed coordinator leaves an abnormal closure (maybe noticed a
      // moment after a peer's link dropped); an aborting one closes politely.
      await Promise.race([conn.closed, new Promise((resolve) => setTimeout(resolve, 2000))]);
      if (retryMs > 0 && conn.closeCode === ABNORMAL_CLOSURE) {
        log(`lost the coordinator (${(err as Error).message}); trying to rejoin for up to ${retryMs / 1000} s`);
        continue;
      }
      throw err;
    } finally {
      await conn.close();
    }
  }
}

/** Connects, retrying with backoff (0.25 s doubling to 5 s) for up to `retryMs`. */
async function connectWithRetry(address: CoordinatorAddress, caPath: string | undefined, retryMs: number, log: (line: string) => void): Promise<ControlConnection> {
  if (caPath && !address.secure) throw new Error(`--ca ${caPath} is for a TLS coordinator: connect with wss://${address.host}:${address.port}`);
  let ca: Buffer | undefined;
  try {
    ca = caPath ? fs.readFileSync(caPath) : undefined;
  } catch (err) {
    throw new Error(`cannot read --ca ${caPath}: ${(err as Error).message}`);
  }
  const deadline = Date.now() + retryMs;
  let wait = 250;
  for (let attempt = 1; ; attempt++) {
    try {
      return await openControl(address, ca);
    } catch (err) {
      if (Date.now() + wait > deadline) {
        throw retryMs > 0
          ? new Error(`${(err as Error).message}; gave up after ${attempt} attempts in ${retryMs / 1000} s (--reconnect-timeout)`)
          : err;
      }
      if (attempt === 1) log(`${(err as Error).message}; retrying for up to ${retryMs / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(2 * wait, 5000);
    }
  }
}

async function openControl(address: CoordinatorAddress, ca: Buffer | undefined): Promise<ControlConnection> {
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  const url = `${address.secure ? 'wss' : 'ws'}://${host}:${address.port}${CONTROL_PATH}`;
  const ws = new WebSocket(url, { maxPayload: 1024 * 1024 * 1024, ...(ca ? { ca } : {}) });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', (err) => reject(new Error(`cannot reach the coordinator at ${url}: ${err.message}`)));
  });
  return new ControlConnection(ws, `coordinator at ${address.host}:${address.port}`);
}

async function trainAsReplica(conn: ControlConnection, init: InitMessage, options: WorkerOptions): Promise<void> {
  const cfg = init.config;
  if (configHash(cfg) !== init.configHash) throw new Error('the run configuration arrived damaged (hash mismatch)');
  // "Still alive" for the coordinator's watchdog, whenever this thread is not busy computing.
  const heartbeat = setInterval(() => {
    try {
      conn.send({ type: 'heartbeat' });
    } catch {
      // The connection is gone; the next receive reports it.
    }
  }, init.heartbeatMs);
  try {
    await trainWithHeartbeat(conn, init, options);
  } finally {
    clearInterval(heartbeat);
  }
}

async function trainWithHeartbeat(conn: ControlConnection, init: InitMessage, options: WorkerOptions): Promise<void> {
  const { rank, worldSize } = init;
  const cfg = init.config;
  const data = await receiveDataset(conn, init, options);
  await initBackend(options.backend ?? cfg.backend);
  const spec = buildModelSpec({
    name: cfg.model, width: cfg.width, norm: cfg.norm, numClasses: data.classes.length, inChannels: data.train.channels,
  });
  if (spec.paramCount !== init.weights.length || spec.paramCount !== init.momentum.length || spec.runningStatsSize !== init.runningStats.length) {
    throw new Error(`the coordinator sent ${init.weights.length} weights; ${cfg.model} width ${cfg.width} here has ${spec.paramCount}`);
  }

  const endpoint = init.allreduce === 'ring' && worldSize > 1
    ? await RingEndpoint.listen({ rank, worldSize, host: options.ringHost ?? '127.0.0.1', port: options.ringPort ?? 0, tag: init.tag })
    : null;
  let reducer: AllReducer | null = null;
  try {
    conn.send({ type: 'ready', ringAddress: endpoint?.address ?? null, backend: describeWorkerBackend() });
    const { peer } = await conn.expect('connect');
    if (worldSize > 1) {
      if (peer === null) throw new Error('the coordinator sent no all-reduce peer address');
      reducer = endpoint
        ? new RingAllReducer(await endpoint.connect(peer), { tag: init.tag })
        : new StarAllReducer(await connectToStarHub(peer, { rank, worldSize, tag: init.tag }), rank, worldSize, { tag: init.tag });
    }
    const replica = new Replica(spec, init.weights, [data.train.height, data.train.width, data.train.channels]);
    // One augmentation thread per replica by default: the replicas already use the cores.
    const loader = new BatchLoader({ set: data.train, threads: cfg.loaderThreads ?? 1, seed: cfg.seed, ...NORMALIZE });
    try {
      const state = new ReplicaState(init, data, replica, loader, reducer, conn);
      for (;;) {
        const msg = await conn.receive();
        if (msg.type === 'epoch') {
          await state.runSteps(msg);
        } else if (msg.type === 'snapshot') {
          await state.averageRunningStats();
          const mine = rank === 0;
          conn.send({
            type: 'state', step: state.step, checksum: state.checksum(),
            weights: mine ? state.weights : null, momentum: mine ? state.momentum : null, runningStats: mine ? state.runningStats : null,
          });
        } else if (msg.type === 'done') {
          return;
        } else {
          throw new Error(`the coordinator sent "${msg.type}" during training`);
        }
      }
    } finally {
      await loader.close();
      replica.dispose();
    }
  } finally {
    await endpoint?.close();
    await reducer?.close();
  }
}

/** The backend in use, plus the GPU pinning when a launcher set one, for the coordinator's log. */
function describeWorkerBackend(): string {
  const gpus = process.env.CUDA_VISIBLE_DEVICES;
  return gpus === undefined ? describeBackend() : `${describeBackend()}, CUDA_VISIBLE_DEVICES=${gpus}`;
}

/**
 * The run's dataset: from this worker's cache when it holds the announced
 * hash, else sent by the coordinator (and then cached). No dataset files are
 * needed on a worker's own disk.
 */
async function receiveDataset(conn: ControlConnection, init: InitMessage, options: WorkerOptions): Promise<Dataset> {
  const log = options.log ?? (() => {});
  const cacheDir = options.cacheDir === undefined ? defaultCacheDir() : options.cacheDir;
  const cached = cacheDir === null ? null : await loadCachedDataset(cacheDir, init.datasetHash, log);
  conn.send({ type: 'data-status', cached: cached !== null });
  if (cached) {
    log(`dataset ${init.datasetHash.slice(0, 12)} from the cache in ${cacheDir}`);
    return cached;
  }
  const started = Date.now();
  const { hash, blob } = await conn.expect('dataset');
  if (hash !== init.datasetHash || blob.byteLength !== init.datasetBytes) {
    throw new Error(`the coordinator sent dataset ${hash.slice(0, 12)} (${blob.byteLength} bytes) after announcing ${init.datasetHash.slice(0, 12)} (${init.datasetBytes} bytes)`);
  }
  const data = decodeDataset(blob, hash);
  log(`dataset ${hash.slice(0, 12)} received: ${(blob.byteLength / 1e6).toFixed(1)} MB in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (cacheDir !== null) {
    try {
      await storeCachedDataset(cacheDir, hash, blob);
    } catch (err) {
      log(`warning: cannot cache the dataset in ${cacheDir} (${(err as Error).message}); it will be sent again next time`);
    }
  }
  return data;
}

/** Weights, optimizer and statistics of one replica, and the steps that change them. */
class ReplicaState {
  readonly weights: Float32Array;
  readonly momentum: Float32Array;
  readonly runningStats: Float32Array;
  private readonly grad: Float32Array;
  private readonly cfg: TrainConfig;
  step: number;
  /** Whether the running statistics changed since they were last averaged across replicas. */
  private statsDiverged = false;
  /** Sequence number of all-reduce calls; every rank makes the same calls in the same order. */
  private reduceSeq = 0;
  /** Consecutive steps skipped for a non-finite gradient sum. */
  private badSteps = 0;
  /** "rank:step" pairs whose gradient is poisoned with a NaN (fault injection, see FAULT_ENV). */
  private readonly faults: Set<string>;

  constructor(
    private readonly init: InitMessage,
    private readonly data: Dataset,
    private readonly replica: Replica,
    private readonly loader: BatchLoader,
    private readonly reducer: AllReducer | null,
    private readonly conn: ControlConnection,
  ) {
    this.cfg = init.config;
    this.weights = init.weights.slice();
    this.momentum = init.momentum.slice();
    this.runningStats = init.runningStats.slice();
    this.grad = new Float32Array(init.weights.length);
    this.step = init.step;
    this.faults = new Set((process.env[FAULT_ENV] ?? '').split(',').filter((f) => f !== ''));
  }

  async runSteps({ epoch, from, steps }: EpochMessage): Promise<void> {
    const { cfg, init } = this;
    const batches = globalBatches(this.data.train.count, cfg.batchSize, cfg.seed, epoch, { shuffle: true });
    if (!Number.isInteger(from) || !Number.isInteger(steps) || from < 0 || steps < 1 || from + steps > batches.length) {
      throw new Error(`the coordinator asked for steps ${from}..${from + steps - 1} of epoch ${epoch}, which has ${batches.length}`);
    }
    const schedule = { lr: cfg.lr, tMax: cfg.tMax, warmupEpochs: cfg.warmupEpochs };
    // This rank's shard of each global batch, augmented in the loader's
    // thread while the previous step computes.
    const shards = batches.slice(from, from + steps).map((global) => {
      const { start, end } = shardRange(global.length, init.rank, init.worldSize);
      return global.subarray(start, end);
    });
    let stepInEpoch = from;
    let waitStart = performance.now();
    for await (const { x, y } of this.loader.prefetch(shards, epoch, true)) {
      const stepStart = performance.now();
      const dataMs = stepStart - waitStart;
      const global = batches[stepInEpoch];
      const count = shards[stepInEpoch - from].length;
      // Scaled by the *global* batch size, so the all-reduce SUM is the gradient of the global mean loss.
      const res = this.replica.computeGradients({ x, y, count }, 1 / global.length, this.grad);
      const injected = this.faults.has(`${init.rank}:${this.step + 1}`);
      if (injected) this.grad[0] = Number.NaN;
      const localNonFinite = !allFinite(this.grad);
      const reduceStart = performance.now();
      const gradMs = reduceStart - stepStart;
      await this.reducer?.allReduceSum(this.grad, this.reduceSeq++);
      const reduceMs = performance.now() - reduceStart;
      // Every rank holds the same summed bytes, so every rank takes the same
      // decision: a non-finite sum skips the update everywhere (no weights,
      // momentum or BatchNorm statistics change), and the replicas stay equal.
      const skipped = !allFinite(this.grad);
      if (!skipped) {
        const lr = learningRate(epoch, stepInEpoch, batches.length, schedule);
        // A skipped first step leaves the momentum at zero, and m * 0 + g = g is the first-step rule anyway.
        sgdStep(this.weights, this.grad, this.momentum, { lr, momentum: cfg.momentum, weightDecay: cfg.weightDecay }, this.step === 0);
        // Per-replica BatchNorm statistics, as PyTorch DDP; averaged at the end of the epoch.
        if (res.batchStats) updateRunningStats(this.runningStats, res.batchStats);
        // Set on every rank alike (a rank with an empty shard has no batchStats),
        // because it decides whether every rank joins the averaging all-reduce.
        if (this.runningStats.length > 0) this.statsDiverged = true;
        this.replica.setWeights(this.weights);
      }
      this.step++;
      const checksum = this.step % init.checksumEvery === 0 ? weightsChecksum(this.weights) : null;
      this.conn.send({
        type: 'step', step: this.step, lossSum: res.lossSum, correct: res.correct, count: res.count, localNonFinite, skipped, checksum,
        dataMs, gradMs, reduceMs, stepMs: performance.now() - stepStart,
      });
      stepInEpoch++;
      waitStart = performance.now();
      // Every rank counts the same skips, so all stop here together; the
      // coordinator then takes a snapshot for its checkpoint and ends the run.
      this.badSteps = skipped ? this.badSteps + 1 : 0;
      if (this.badSteps >= cfg.maxBadSteps) return;
    }
    if (from + steps === batches.length) await this.endEpoch(epoch);
  }

  /**
   * Replaces every replica's running statistics by their mean over the
   * replicas (all-reduce SUM, then / N), so that evaluation, checkpoints and
   * the final model use the same statistics on every rank. The update
   * r = 0.9 r + 0.1 b is linear, so averaging early (at a mid-epoch
   * checkpoint) gives the same statistics as averaging later, up to rounding.
   * Every rank calls it at the same points (epoch end, snapshot), so the
   * all-reduce sequence stays aligned.
   */
  async averageRunningStats(): Promise<void> {
    if (!this.statsDiverged) return;
    this.statsDiverged = false;
    if (!this.reducer) return;
    await this.reducer.allReduceSum(this.runningStats, this.reduceSeq++);
    const f = Math.fround;
    const n = this.init.worldSize;
    for (let i = 0; i < this.runningStats.length; i++) this.runningStats[i] = f(this.runningStats[i] / n);
  }

  /** Fingerprint of everything that must be identical across replicas at a snapshot. */
  checksum(): string {
    const all = new Float32Array(2 * this.weights.length + this.runningStats.length);
    all.set(this.weights);
    all.set(this.momentum, this.weights.length);
    all.set(this.runningStats, 2 * this.weights.length);
    return weightsChecksum(all);
  }

  /** Averages the running statistics across replicas, then evaluates this rank's shard of the test set. */
  private async endEpoch(epoch: number): Promise<void> {
    const { rank, worldSize } = this.init;
    await this.averageRunningStats();
    const { start, end } = shardRange(this.data.test.count, rank, worldSize);
    const { lossSum, correct, count } = evaluateRange(this.replica, this.data.test, this.runningStats, this.cfg.batchSize, start, end);
    this.conn.send({ type: 'eval', epoch, lossSum, correct, count });
  }
}
