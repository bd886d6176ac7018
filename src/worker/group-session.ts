// One group session of a worker: from an `init` to `done` or `halt`. The
// session builds the model and the all-reduce for its rank and world size,
// then trains the global batches the coordinator names, one step at a time
// (common/training/step.ts): the gradient of this rank's shard, summed with
// the other ranks' (all-reduce), then, once the previous step is committed,
// the same SGD step as every other rank, so all replicas keep bit-identical
// weights. A halt ends the session wherever it is; the caller then rolls the
// state back to the committed step.

import * as tf from '@tensorflow/tfjs-core';
import { describeBackend, initBackend } from '../common/backend/backend.js';
import { Replica } from '../common/model/replica.js';
import { learningRate, scheduleOf } from '../common/optim/schedule.js';
import { globalBatches, shardRange } from '../common/data/sampler.js';
import { evaluateRange } from '../common/training/evaluation.js';
import { modelSpecFor } from '../common/training/run-state.js';
import { THROW_FAULT_ENV, throwIfInjected } from '../common/training/faults.js';
import { BadSteps, TrainStep, type StepReport } from '../common/training/step.js';
import { BatchLoader } from '../common/data/batch-loader.js';
import type { TrainConfig } from '../common/training/config.js';
import { NORMALIZE } from '../common/data/augment.js';
import {
  AllReduceError, DEFAULT_BUCKET_CAP_MB, planBuckets, type AllReducer, type BucketedExchange, type CommThread, type ReducerSpec, type SharedRegion,
} from '../common/allreduce/index.js';
import type { ConnectMessage, ControlConnection, EpochMessage, HaltMessage, InitMessage } from '../common/protocol/index.js';
import type { BackendChoice } from '../common/backend/names.js';
import type { Dataset } from '../common/data/types.js';
import { HaltSignal, type SessionInbox } from './session-inbox.js';
import { openReducerHost, type ReducerHost } from './reducer-host.js';
import { clockMs, packEvents, Timeline } from '../common/io/timeline.js';
import type { ReplicaState } from './replica-state.js';

/**
 * Fault injection for reliability tests and drills: "rank:step,..." makes
 * those ranks put a NaN into their gradient at those (1-based) steps.
 */
export const FAULT_ENV = 'TFJS_DDP_INJECT_NAN';

/**
 * Fault injection for the same: "evaluate:E" or "snapshot:K" makes this
 * worker process kill itself (SIGKILL) when the coordinator asks for the
 * evaluation of (1-based) epoch E, or for its K-th snapshot.
 */
export const EXIT_FAULT_ENV = 'TFJS_DDP_EXIT_AT';
let snapshotsTaken = 0;

/**
 * And "S": this worker closes its all-reduce links just before the
 * all-reduce of (1-based) step S, every time it gets there: a network cut
 * between live workers, as a drill for the re-forming limit.
 */
export const CUT_LINKS_FAULT_ENV = 'TFJS_DDP_CUT_LINKS_AT';

/** And "rank:S": that rank nudges one of its weights after applying (1-based) step S, so its replica diverges (a drill for the checksums). */
export const DIVERGE_FAULT_ENV = 'TFJS_DDP_DIVERGE_AT';

/** And "rank:S" ("*:S" for every rank): that rank's (1-based) step S throws, a drill for error reporting. */
export { THROW_FAULT_ENV };

function dieIfInjected(point: string): void {
  if (process.env[EXIT_FAULT_ENV] === point) process.kill(process.pid, 'SIGKILL');
}

export type SessionEnd = { kind: 'done' } | { kind: 'halted'; halt: HaltMessage };

/** Failures already sent to the coordinator as `error` (so the worker does not send them twice). */
const reported = new WeakSet<object>();

/** Whether `err` was already sent to the coordinator as this worker's `error`. */
export function wasReported(err: unknown): boolean {
  return typeof err === 'object' && err !== null && reported.has(err);
}

/**
 * Sends a session's failure to the coordinator at once, before the session
 * closes its all-reduce links: the neighbours' all-reduce fails as soon as
 * they are closed, and the coordinator should hear the cause before the
 * consequences. A halt, and anything that fails because of one, is not a
 * failure.
 */
function reportFailure(ctx: SessionContext, err: unknown, step: number | null): void {
  if (err instanceof HaltSignal || ctx.inbox.halt || wasReported(err)) return;
  try {
    ctx.conn.send({ type: 'error', message: err instanceof Error ? err.message : String(err), step });
  } catch {
    // The coordinator is gone; the worker's loop reports that.
  }
  if (typeof err === 'object' && err !== null) reported.add(err);
}

export interface SessionContext {
  conn: ControlConnection;
  inbox: SessionInbox;
  init: InitMessage;
  data: Dataset;
  state: ReplicaState;
  backend?: BackendChoice;
  ringHost?: string;
  ringPort?: number;
  /** Thread mode: the coordinator's shared region, offered in `ready`; used when `connect` says so. */
  sharedRegion?: SharedRegion | null;
}

/** Runs the session; a halt (wherever it finds the session) ends it with `halted`, other failures throw. */
export async function runGroupSession(ctx: SessionContext): Promise<SessionEnd> {
  try {
    await trainInGroup(ctx);
    return { kind: 'done' };
  } catch (err) {
    // A halt also makes pending socket operations fail (their links are
    // closed on purpose), so any error after a halt is the halt; unless the
    // error came first and was reported (the halt arrived during the cleanup).
    if (wasReported(err)) throw err;
    const halt = err instanceof HaltSignal ? err.halt : ctx.inbox.halt;
    if (halt) return { kind: 'halted', halt };
    throw err;
  }
}

async function trainInGroup(ctx: SessionContext): Promise<void> {
  const { conn, inbox, init, data } = ctx;
  const { rank, worldSize } = init;
  const cfg = init.config;
  await initBackend(ctx.backend ?? cfg.backend);
  const spec = modelSpecFor(cfg, data);
  const { weights, momentum, runningStats } = ctx.state;
  if (spec.paramCount !== weights.length || spec.paramCount !== momentum.length || spec.runningStatsSize !== runningStats.length) {
    throw new Error(`the coordinator sent ${weights.length} weights; ${cfg.model} width ${cfg.width} here has ${spec.paramCount}`);
  }

  // Overlap (the default): the all-reduce lives in a communication thread, which reduces buckets during backward.
  // SyncBatchNorm needs it too: forward and backward block on it for each layer's sums.
  const host: ReducerHost | null = worldSize > 1
    ? await openReducerHost({
      overlap: (cfg.overlap ?? true) || Boolean(cfg.syncBn),
      memory: ctx.state.params.memory,
      spans: Boolean(cfg.timeline),
      // admit 'any': in a hierarchical group the ring's neighbours are decided after this listens (connect names them).
      ring: init.allreduce === 'ring' ? { rank, worldSize, host: ctx.ringHost ?? '127.0.0.1', port: ctx.ringPort ?? 0, tag: init.tag, admit: 'any' } : null,
    })
    : null;
  let reducer: AllReducer | null = null;
  // Closing the links makes a pending connect or all-reduce fail at once.
  inbox.onHalt(() => void host?.close().catch(() => {}));
  try {
    const ringAddress = host?.address ?? null;
    const localRegion = ringAddress && ctx.sharedRegion ? ctx.sharedRegion.id : null;
    conn.send({ type: 'ready', ringAddress, backend: describeWorkerBackend(), localRegion, hierarchical: ringAddress !== null });
    const connect = await inbox.expect('connect');
    if (host) {
      const spec = reducerSpecOf(ctx, connect, ringAddress !== null);
      try {
        reducer = await host.connect(spec);
      } catch (err) {
        // A peer that died before the group was wired: the same as a failed all-reduce.
        await linkFailed(ctx, err as Error);
      }
      if (inbox.halt) throw new HaltSignal(inbox.halt);
    }
    const replica = new Replica(spec, ctx.state.weights, [data.train.height, data.train.width, data.train.channels]);
    // One augmentation thread per replica by default: the replicas already use the cores.
    const loader = new BatchLoader({ set: data.train, threads: cfg.loaderThreads ?? 1, seed: cfg.seed, ...NORMALIZE });
    let trainer: GroupTrainer | null = null;
    try {
      trainer = new GroupTrainer(ctx, replica, loader, reducer, host?.comm ?? null);
      for (;;) {
        const msg = await inbox.next();
        if (msg.type === 'epoch') await trainer.runSteps(msg);
        else if (msg.type === 'evaluate') await trainer.evaluate(msg.epoch);
        else if (msg.type === 'snapshot') await trainer.snapshot();
        else if (msg.type === 'done') return;
        else throw new Error(`the coordinator sent "${msg.type}" during training`);
      }
    } catch (err) {
      // Before the loader, the replica and the links are closed (finally).
      reportFailure(ctx, err, trainer?.stepInProgress ?? null);
      throw err;
    } finally {
      await loader.close();
      replica.dispose();
    }
  } catch (err) {
    reportFailure(ctx, err, null);
    throw err;
  } finally {
    await host?.close();
  }
}

/** The reducer `connect` asks for, as the reducer factory (common/allreduce/reducer-factory.ts) builds it. */
function reducerSpecOf(ctx: SessionContext, connect: ConnectMessage, listening: boolean): ReducerSpec {
  const { rank, worldSize, tag } = ctx.init;
  const member = { rank, worldSize, tag, wire: ctx.init.wire ?? 'fp32' };
  const { peer, reducer: kind } = connect;
  if (kind === 'shared-memory' && listening && ctx.sharedRegion) return { ...member, kind, region: ctx.sharedRegion };
  if (kind === 'hierarchical' && listening) {
    return { ...member, kind, region: ctx.sharedRegion ?? null, localRanks: connect.localRanks ?? [], ringRanks: connect.ringRanks ?? [], peer };
  }
  if (kind != null) throw new Error(`the coordinator asked for a "${kind}" all-reduce, which this worker cannot join`);
  if (peer === null) throw new Error('the coordinator sent no all-reduce peer address');
  return listening ? { ...member, kind: 'ring', peer } : { ...member, kind: 'star', peer };
}

/** The backend in use, plus the GPU pinning when a launcher set one, for the coordinator's log. */
function describeWorkerBackend(): string {
  const gpus = process.env.CUDA_VISIBLE_DEVICES;
  return gpus === undefined ? describeBackend() : `${describeBackend()}, CUDA_VISIBLE_DEVICES=${gpus}`;
}

function tensorMemory(): { tensors: number; tensorBytes: number } {
  const { numTensors, numBytes } = tf.memory();
  return { tensors: numTensors, tensorBytes: numBytes };
}

/**
 * An all-reduce link failed (a peer vanished, a link broke): this rank tells
 * the coordinator and waits for its halt, since only the coordinator knows
 * which ranks are still alive. Always throws (HaltSignal, or the control
 * connection's own failure).
 */
async function linkFailed(ctx: SessionContext, err: Error): Promise<never> {
  if (!ctx.inbox.halt) {
    try {
      ctx.conn.send({ type: 'reduce-failed', message: err.message });
    } catch {
      // The coordinator is gone too; the inbox reports that.
    }
  }
  return ctx.inbox.untilHalted();
}

/** The steps, evaluations and snapshots of one rank within a group. */
class GroupTrainer {
  private readonly cfg: TrainConfig;
  private readonly init: InitMessage;
  private readonly state: ReplicaState;
  private readonly step: TrainStep;
  /**
   * Whether the running statistics changed since they were last averaged
   * across replicas. A new group starts with the coordinator's average.
   */
  private statsDiverged = false;
  /** Sequence number of all-reduce calls; every rank makes the same calls in the same order. */
  private reduceSeq = 0;
  /** Every rank counts the same skips (they see the same sums), so all stop together. */
  private readonly badSteps: BadSteps;
  /** "rank:step" pairs whose gradient is poisoned with a NaN (fault injection, see FAULT_ENV). */
  private readonly faults: Set<string>;
  /** With --timeline: this rank's spans, sent with each step report. */
  private readonly timeline: Timeline | null;
  private readonly comm: CommThread | null;
  /** SyncBatchNorm's channel is open (awaited before the first step). */
  private syncReady: Promise<void> = Promise.resolve();
  /** The (1-based) step being worked on (its batch awaited, computed, exchanged, applied, reported); null between segments. */
  stepInProgress: number | null = null;

  constructor(
    private readonly ctx: SessionContext,
    private readonly replica: Replica,
    private readonly loader: BatchLoader,
    private readonly reducer: AllReducer | null,
    comm: CommThread | null,
  ) {
    this.init = ctx.init;
    this.cfg = ctx.init.config;
    this.comm = comm;
    this.timeline = this.cfg.timeline ? new Timeline(this.init.rank) : null;
    const timeline = this.timeline;
    this.state = ctx.state;
    this.badSteps = new BadSteps(this.cfg.maxBadSteps);
    this.faults = new Set((process.env[FAULT_ENV] ?? '').split(',').filter((f) => f !== ''));
    const { state } = this;
    if (this.cfg.syncBn && comm) this.syncBatchNorm(comm, replica);
    this.step = new TrainStep(replica, state, {
      hyper: { momentum: this.cfg.momentum, weightDecay: this.cfg.weightDecay },
      // --accumulate: the step cuts this rank's shard into micro-batches, with one exchange per step.
      accumulate: this.cfg.accumulate,
      // One worker alone has no reducer, and its step no exchange.
      exchange: reducer ? {
        allReduce: (grad) => this.exchangeGradient(grad),
        buckets: comm && (this.cfg.overlap ?? true) ? this.bucketed(comm, replica) : undefined,
      } : undefined,
      timeline: timeline ? (name, startMs, endMs, args) => timeline.span('compute', name, startMs, endMs, args) : undefined,
      hooks: {
        afterBackward: (grad) => {
          if (this.faults.has(`${this.init.rank}:${state.step + 1}`)) grad[0] = Number.NaN;
          throwIfInjected(this.init.rank, state.step + 1);
        },
        beforeUpdate: async () => {
          // Applying this step before the previous one is committed could leave
          // this replica two steps past a rank that is about to be lost; see halt.
          // The commit has nearly always arrived while this step computed.
          await ctx.inbox.committedThrough(state.step);
          state.rememberBeforeStep();
        },
      },
    });
  }

  async runSteps({ epoch, from, steps }: EpochMessage): Promise<void> {
    const { cfg, init, state } = this;
    const { inbox, data } = this.ctx;
    const batches = globalBatches(data.train.count, cfg.batchSize, cfg.seed, epoch, { shuffle: true });
    if (!Number.isInteger(from) || !Number.isInteger(steps) || from < 0 || steps < 1 || from + steps > batches.length) {
      throw new Error(`the coordinator asked for steps ${from}..${from + steps - 1} of epoch ${epoch}, which has ${batches.length}`);
    }
    // This rank's shard of each global batch, augmented in the loader's
    // thread while the previous step computes. A group of another size cuts
    // the same global batches differently, so every image is still seen once.
    const shards = batches.slice(from, from + steps).map((global) => {
      const { start, end } = shardRange(global.length, init.rank, init.worldSize);
      return global.subarray(start, end);
    });
    await this.syncReady;
    let stepInEpoch = from;
    let waitStart = performance.now();
    this.stepInProgress = state.step + 1;
    for await (const { x, y } of this.loader.prefetch(shards, epoch, true)) {
      if (inbox.halt) throw new HaltSignal(inbox.halt);
      const dataMs = performance.now() - waitStart;
      this.timeline?.span('compute', 'data wait', clockMs() - dataMs, clockMs());
      const lr = learningRate(epoch, stepInEpoch, batches.length, scheduleOf(cfg));
      const r = await this.step.run({ x, y, count: shards[stepInEpoch - from].length }, batches[stepInEpoch].length, lr)
        // SyncBatchNorm's sums fail inside forward or backward: a failed all-reduce like any other.
        .catch((err: unknown) => (err instanceof AllReduceError ? linkFailed(this.ctx, err) : Promise.reject(err)));
      if (process.env[DIVERGE_FAULT_ENV] === `${init.rank}:${state.step}`) state.weights[0] = Math.fround(state.weights[0] + 1e-3);
      // Set on every rank alike (a rank with an empty shard has no batch statistics),
      // because it decides whether every rank joins the averaging all-reduce.
      // (With SyncBatchNorm every rank applies the same global statistics: nothing to average.)
      if (!r.skipped && state.runningStats.length > 0 && !cfg.syncBn) this.statsDiverged = true;
      this.report(r, dataMs);
      stepInEpoch++;
      this.stepInProgress = state.step + 1;
      waitStart = performance.now();
      // The coordinator then takes a snapshot for its checkpoint and ends the run.
      if (this.badSteps.note(r.skipped)) break;
    }
    this.stepInProgress = null;
  }

  /** The step's report to the coordinator: its sums, its times, and every --checksum-every steps a weight checksum. */
  private report(r: StepReport, dataMs: number): void {
    const { state, timeline } = this;
    for (const sp of this.comm?.takeSpans() ?? []) timeline?.span('communication', sp.name, sp.startMs, sp.endMs, sp.args);
    const checksumStart = performance.now();
    const checksum = state.step % this.init.checksumEvery === 0 ? state.optimizerChecksum() : null;
    this.ctx.conn.send({
      type: 'step', step: state.step, lossSum: r.lossSum, correct: r.correct, count: r.count, localNonFinite: r.localNonFinite,
      skipped: r.skipped, checksum, dataMs, gradMs: r.gradMs, reduceMs: r.reduceMs,
      stepMs: r.stepMs + (performance.now() - checksumStart), ...tensorMemory(),
      ...(timeline ? { timeline: packEvents(timeline.drain()) } : {}),
    });
  }

  /**
   * SyncBatchNorm's link: each layer's small vector summed over the ranks
   * through the communication thread's blocking channel, with a sequence
   * number from the one counter every all-reduce takes them from.
   */
  private syncBatchNorm(comm: CommThread, replica: Replica): void {
    const { rank, worldSize } = this.init;
    const widest = Math.max(0, ...replica.spec.batchNorms.map((bn) => bn.channels));
    // Forward: every rank's (count, mean, variance) slots; backward: two sums per channel.
    this.syncReady = comm.prepareSync(Math.max(worldSize * (1 + 2 * widest), 2 * widest));
    this.syncReady.catch(() => {}); // seen by runSteps, which awaits it

    replica.batchNormSync = { rank, worldSize, sum: (v) => comm.syncAllReduce(v, this.reduceSeq++) };
  }

  /**
   * The step's exchange bucket by bucket, through the communication thread;
   * sequence numbers come from the one counter every all-reduce takes them
   * from. A failed bucket is a failed all-reduce (see linkFailed), and
   * TFJS_DDP_CUT_LINKS_AT cuts the links as the step begins.
   */
  private bucketed(comm: CommThread, replica: Replica): BucketedExchange {
    const plan = planBuckets(replica.spec.params, this.cfg.bucketMb ?? DEFAULT_BUCKET_CAP_MB);
    const inner = comm.bucketedExchange(plan, this.state.params.grad, (count) => (this.reduceSeq += count) - count);
    return {
      plan,
      begin: () => {
        if (process.env[CUT_LINKS_FAULT_ENV] === String(this.state.step + 1)) void this.reducer?.close();
        inner.begin();
      },
      release: (index) => inner.release(index),
      reduced: (index) => inner.reduced(index).catch((err: unknown) => linkFailed(this.ctx, err as Error)),
    };
  }

  /** The step's gradient exchange: the all-reduce SUM (TFJS_DDP_CUT_LINKS_AT cuts the links just before it). */
  private async exchangeGradient(grad: Float32Array): Promise<void> {
    if (process.env[CUT_LINKS_FAULT_ENV] === String(this.state.step + 1)) await this.reducer?.close();
    await this.allReduce(grad);
  }

  /** Averages the running statistics across replicas, then evaluates this rank's shard of the test set. */
  async evaluate(epoch: number): Promise<void> {
    dieIfInjected(`evaluate:${epoch + 1}`);
    const { rank, worldSize } = this.init;
    const { data, conn } = this.ctx;
    await this.averageRunningStats();
    const { start, end } = shardRange(data.test.count, rank, worldSize);
    const { lossSum, correct, count } = evaluateRange(this.replica, data.test, this.state.runningStats, this.cfg.batchSize, start, end);
    conn.send({ type: 'eval', epoch, lossSum, correct, count });
  }

  /** Averages the statistics and answers with the state (tensors from rank 0 only: the others are identical). */
  async snapshot(): Promise<void> {
    dieIfInjected(`snapshot:${++snapshotsTaken}`);
    await this.averageRunningStats();
    const { state } = this;
    const mine = this.init.rank === 0;
    this.ctx.conn.send({
      type: 'state', step: state.step, checksum: state.fullChecksum(),
      weights: mine ? state.weights : null, momentum: mine ? state.momentum : null, runningStats: mine ? state.runningStats : null,
    });
  }

  /**
   * Replaces every replica's running statistics by their mean over the
   * replicas (all-reduce SUM, then / N), so that evaluation, checkpoints and
   * the final model use the same statistics on every rank. The update
   * r = 0.9 r + 0.1 b is linear, so averaging early (at a mid-epoch
   * checkpoint) gives the same statistics as averaging later, up to rounding.
   * Every rank calls it at the same points (evaluate, snapshot), so the
   * all-reduce sequence stays aligned.
   */
  private async averageRunningStats(): Promise<void> {
    if (!this.statsDiverged) return;
    this.statsDiverged = false;
    if (!this.reducer) return;
    const stats = this.state.runningStats;
    // Summed in a copy: an all-reduce cut short by a halt must leave this
    // replica's statistics intact, since the coordinator averages them next.
    const sum = stats.slice();
    await this.allReduce(sum);
    const f = Math.fround;
    const n = this.init.worldSize;
    for (let i = 0; i < stats.length; i++) stats[i] = f(sum[i] / n);
  }

  /** All-reduce SUM in place; a failure becomes a halt (see linkFailed). */
  private async allReduce(buf: Float32Array): Promise<void> {
    if (!this.reducer) return;
    try {
      await this.reducer.allReduceSum(buf, this.reduceSeq++);
    } catch (err) {
      await linkFailed(this.ctx, err as Error);
    }
  }
}
