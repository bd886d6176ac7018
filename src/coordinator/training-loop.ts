// The coordinator's epoch loop, in the single-process trainer's order:
// steps, evaluation, metrics, plots, checkpoint (the last three shared with
// it, in common/training/run-outputs.ts). The workers train segments of an
// epoch (up to the next checkpoint or --max-steps) and report small per-step
// sums; the coordinator commits each step once every rank has reported it,
// and between segments takes a snapshot from rank 0 and writes the
// checkpoint itself. Every exchange with the group is resilient: a member
// failure re-forms the group (membership.ts) and the exchange runs again
// from the committed step. `state` is updated in place and ends as the run's
// final state.

import type { TrainConfig } from '../common/training/config.js';
import type { RunState } from '../common/training/run-state.js';
import type { RunOutputs, SyncState } from '../common/training/run-outputs.js';
import { addToEpoch } from '../common/training/run-outputs.js';
import { BadSteps } from '../common/training/step.js';
import type { EpochMetrics } from '../common/io/metrics.js';
import { unpackEvents } from '../common/io/timeline.js';
import type { ProgressBar, ProgressStream } from '../common/io/progress.js';
import type { BatchResult } from '../common/model/replica.js';
import type { MessageOfType } from '../common/protocol/index.js';
import { MemberFailure, type Group } from './group.js';
import type { Membership } from './membership.js';
import type { RunFeed } from './dashboard/run-feed.js';
import type { Watchdog } from './watchdog.js';

export interface StepBreakdown {
  dataMs: number;
  gradMs: number;
  reduceMs: number;
  optimMs: number;
}

export interface LoopResult {
  history: EpochMetrics[];
  steps: number;
  trainMs: number;
  /** Share of the workers' step time spent in the gradient all-reduce (mean over ranks and steps). */
  allReduceShare: number;
  /** Time the workers waited for augmented batches, as a share of step time plus that wait. */
  dataWaitShare: number;
  /** Mean milliseconds per step and rank: data wait, forward+backward, all-reduce, optimizer + weight upload. */
  breakdown: StepBreakdown;
  /** The most live tensors, and tensor bytes, any rank reported after a step (tf.memory()). */
  peakTensors: number;
  peakTensorBytes: number;
}

export interface LoopOptions {
  /** Where the epochs and checkpoints go (shared with the single-process trainer). */
  outputs: RunOutputs;
  testCount: number;
  checksumEvery: number;
  log: (line: string) => void;
  progressStream?: ProgressStream;
  feed: RunFeed | null;
  watchdog: Watchdog;
  /** Called after each committed step, with the run's step count. */
  onCommit?: (step: number) => void;
}

type StepReports = MessageOfType<'step'>[];

/** A spare is waiting: the group grows at this step boundary. */
class GrowSignal extends Error {}

/**
 * Runs `exchange` with the current group; when a member fails (or a spare
 * can join), re-forms the group and runs it again. `exchange` must start
 * from the state as it is, since the committed steps of a failed attempt stay.
 */
async function resilient<T>(membership: Membership, exchange: (group: Group) => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await exchange(membership.group);
    } catch (err) {
      if (err instanceof GrowSignal) await membership.reform(null);
      else if (err instanceof MemberFailure) await membership.reform(err);
      else throw err;
    }
  }
}

export async function trainingLoop(cfg: TrainConfig, state: RunState, membership: Membership, o: LoopOptions): Promise<LoopResult> {
  const loop = new EpochLoop(cfg, state, membership, o);
  while (state.epoch < cfg.epochs && state.step < loop.stopAt) {
    // Stopped mid-epoch by --max-steps: no partial-epoch evaluation.
    if (!(await loop.trainEpoch())) break;
    await loop.endEpoch();
  }
  return loop.result();
}

class EpochLoop {
  readonly stopAt: number;
  private readonly stepsPerEpoch: number;
  private readonly trainStart = Date.now();
  private readonly timing = new StepTiming();
  /** Workers count bad steps per group, so a new group starts the count again. */
  private badSteps: BadSteps;
  private counted: Group;
  /** A rank sent spans unpackEvents refused (said once). */
  private badTimeline = false;
  /** The run's first step sets up kernels and buffers: it is kept out of the timing breakdown. */
  private readonly warmupStep: number;
  private bar: ProgressBar | null = null;

  constructor(
    private readonly cfg: TrainConfig,
    private readonly state: RunState,
    private readonly membership: Membership,
    private readonly o: LoopOptions,
  ) {
    this.stopAt = cfg.maxSteps > 0 ? cfg.maxSteps : Infinity;
    this.stepsPerEpoch = o.outputs.stepsPerEpoch;
    this.badSteps = new BadSteps(cfg.maxBadSteps);
    this.counted = membership.group;
    this.warmupStep = state.step + 1;
  }

  /** Trains the rest of the epoch in progress, segment by segment; false when --max-steps stopped it before its end. */
  async trainEpoch(): Promise<boolean> {
    const { state, o } = this;
    this.bar = o.outputs.startEpoch(state, o.progressStream);
    o.feed?.epochStarted(state.epoch, o.outputs.trainCount, state.epochTotals.seen);
    this.setWorkerStates('training');
    while (state.stepInEpoch < this.stepsPerEpoch && state.step < this.stopAt) {
      await resilient(this.membership, (group) => this.runSegment(group));
      if (state.stepInEpoch < this.stepsPerEpoch) {
        // Mid-epoch: a --checkpoint-every boundary, or stopped by --max-steps. Either way keep the exact state.
        await this.saveMidEpoch();
      }
    }
    this.bar.finish();
    return state.stepInEpoch === this.stepsPerEpoch;
  }

  /** Evaluation on every rank's shard of the test set, then the epoch's metrics and, after a snapshot, its checkpoint. */
  async endEpoch(): Promise<void> {
    const { state, o } = this;
    const epoch = state.epoch;
    this.setWorkerStates('evaluating');
    const test = await resilient(this.membership, (group) => evaluate(group, epoch));
    if (test.count !== o.testCount) throw new Error(`the ranks evaluated ${test.count} test images, the test set has ${o.testCount}`);
    // The snapshot is a sync point: every rank averages its BatchNorm statistics and rank 0 sends the state.
    await o.outputs.endEpoch(state, test, this.membership.group.size, this.syncAt(`the end of epoch ${epoch + 1}`));
  }

  result(): LoopResult {
    const { state, timing, o } = this;
    const summary = timing.summary();
    o.log(timing.describe(summary));
    // A count that grows with the run's length is a leak; a flat one is the model's variables.
    o.log(`memory: at most ${timing.peakTensors} live tensors (${(timing.peakTensorBytes / 2 ** 20).toFixed(1)} MB) on any worker after a step`);
    return {
      history: state.history, steps: state.step, trainMs: Date.now() - this.trainStart, ...summary,
      peakTensors: timing.peakTensors, peakTensorBytes: timing.peakTensorBytes,
    };
  }

  /**
   * One segment: the group trains `steps` steps of the epoch and the
   * coordinator commits each. It ends at the epoch's end, at --max-steps, or
   * at the next --checkpoint-every step; a waiting spare cuts it short.
   */
  private async runSegment(group: Group): Promise<void> {
    const { cfg, state } = this;
    if (group !== this.counted) this.badSteps = new BadSteps(cfg.maxBadSteps);
    this.counted = group;
    const untilCheckpoint = cfg.checkpointEvery > 0 ? cfg.checkpointEvery - (state.step % cfg.checkpointEvery) : Infinity;
    const steps = Math.min(this.stepsPerEpoch - state.stepInEpoch, this.stopAt - state.step, untilCheckpoint);
    group.broadcast({ type: 'epoch', epoch: state.epoch, from: state.stepInEpoch, steps });
    for (let s = 0; s < steps; s++) {
      const reports = await group.gather('step');
      this.commit(group, reports);
      if (reports[0].skipped) await this.onSkipped(group, reports);
      else this.countStep(group, reports);
      if (s < steps - 1 && this.membership.canGrow) throw new GrowSignal();
    }
  }

  /** Every rank has done the step, so none can lose it: this is the commit point. */
  private commit(group: Group, reports: StepReports): void {
    const { state } = this;
    state.step++;
    state.stepInEpoch++;
    group.broadcast({ type: 'commit', step: state.step });
    this.membership.progressed();
    this.o.onCommit?.(state.step);
    this.timing.noteMemory(reports);
    reports.forEach((r, rank) => {
      if (r.step !== state.step) throw new Error(`rank ${rank} reported step ${r.step} where the run is at step ${state.step}`);
    });
    if (state.step % this.o.checksumEvery === 0) compareChecksums(reports.map((r) => r.checksum), `step ${state.step}`);
    this.addSpans(reports);
    if (reports.some((r) => r.skipped !== reports[0].skipped)) {
      throw new Error(`the ranks disagree whether step ${state.step} was skipped (${reports.map((r, rank) => `rank ${rank}: ${r.skipped}`).join(', ')})`);
    }
  }

  /** The step's trace spans of every rank (--timeline); a malformed one is dropped with a warning, never the run. */
  private addSpans(reports: StepReports): void {
    const trace = this.o.outputs.trace;
    if (!trace) return;
    reports.forEach((r, rank) => {
      if (!r.timeline) return;
      try {
        const events = unpackEvents(r.timeline);
        trace.addRank(rank);
        trace.add(events);
      } catch (err) {
        if (!this.badTimeline) this.o.log(`timeline: dropped rank ${rank}'s spans of step ${r.step}: ${(err as Error).message}`);
        this.badTimeline = true;
      }
    });
  }

  /** A step every rank skipped for a non-finite gradient sum: logged with the ranks to blame; --max-bad-steps in a row end the run. */
  private async onSkipped(group: Group, reports: StepReports): Promise<void> {
    const { state, badSteps } = this;
    const tooMany = badSteps.note(true);
    const ranksWithNaN = reports.flatMap((r, rank) => (r.localNonFinite ? [rank] : []));
    this.o.log(`step ${state.step} skipped on every replica: non-finite gradient ` +
      (ranksWithNaN.length > 0 ? `from rank(s) ${ranksWithNaN.join(', ')}` : '(the sum overflowed)') + ` (${badSteps.inARow} in a row)`);
    if (tooMany) {
      await this.o.outputs.saveMidEpoch(state, () => snapshot(group, state, `step ${state.step}`));
      throw badSteps.abortError(state.step);
    }
  }

  /** Adds a committed step's sums to the epoch's totals, and shows it on the bar and the dashboard. */
  private countStep(group: Group, reports: StepReports): void {
    const { state, o } = this;
    this.badSteps.note(false);
    for (const r of reports) {
      o.watchdog.noteStep(r.stepMs + r.dataMs);
      addToEpoch(state, r);
    }
    if (state.step !== this.warmupStep) this.timing.add(reports);
    this.bar?.update(state.epochTotals.seen, state.epochTotals.lossSum / state.epochTotals.seen);
    if (o.feed) showStep(o.feed, group, reports, state, this.stepsPerEpoch);
  }

  private saveMidEpoch(): Promise<void> {
    return resilient(this.membership, (group) => this.o.outputs.saveMidEpoch(this.state, () => snapshot(group, this.state, `step ${this.state.step}`)));
  }

  /** The snapshot before an epoch-end checkpoint, with the group as it is then. */
  private syncAt(when: string): SyncState {
    return () => resilient(this.membership, (group) => snapshot(group, this.state, when));
  }

  private setWorkerStates(workerState: 'training' | 'evaluating'): void {
    for (const m of this.membership.members) if (m.view) this.o.feed?.workerUpdate(m.view, { state: workerState });
  }
}

/** The workers' step times and tensor counts over the run (the first step excluded from the times). */
class StepTiming {
  private reduceMs = 0;
  private stepMs = 0;
  private dataMs = 0;
  private gradMs = 0;
  private rankSteps = 0;
  peakTensors = 0;
  peakTensorBytes = 0;

  add(reports: StepReports): void {
    for (const r of reports) {
      this.reduceMs += r.reduceMs;
      this.stepMs += r.stepMs;
      this.dataMs += r.dataMs;
      this.gradMs += r.gradMs;
      this.rankSteps++;
    }
  }

  noteMemory(reports: StepReports): void {
    for (const r of reports) {
      this.peakTensors = Math.max(this.peakTensors, r.tensors);
      this.peakTensorBytes = Math.max(this.peakTensorBytes, r.tensorBytes);
    }
  }

  summary(): Pick<LoopResult, 'allReduceShare' | 'dataWaitShare' | 'breakdown'> {
    const per = (ms: number) => (this.rankSteps > 0 ? ms / this.rankSteps : 0);
    return {
      allReduceShare: this.stepMs > 0 ? this.reduceMs / this.stepMs : 0,
      dataWaitShare: this.stepMs + this.dataMs > 0 ? this.dataMs / (this.stepMs + this.dataMs) : 0,
      breakdown: {
        dataMs: per(this.dataMs), gradMs: per(this.gradMs), reduceMs: per(this.reduceMs), optimMs: per(this.stepMs - this.gradMs - this.reduceMs),
      },
    };
  }

  describe({ breakdown: b, allReduceShare, dataWaitShare }: ReturnType<StepTiming['summary']>): string {
    return `step time (mean over ranks, first step excluded): forward+backward ${b.gradMs.toFixed(1)} ms, ` +
      `all-reduce ${b.reduceMs.toFixed(1)} ms (${(100 * allReduceShare).toFixed(1)}%), optimizer ${b.optimMs.toFixed(1)} ms, ` +
      `data wait ${b.dataMs.toFixed(1)} ms (${(100 * dataWaitShare).toFixed(1)}%)`;
  }
}

/** Every rank evaluates its shard of the test set; the sums are the test set's. */
async function evaluate(group: Group, epoch: number): Promise<BatchResult> {
  group.broadcast({ type: 'evaluate', epoch });
  const evals = await group.gather('eval');
  return evals.reduce((t, e) => ({ lossSum: t.lossSum + e.lossSum, correct: t.correct + e.correct, count: t.count + e.count }), { lossSum: 0, correct: 0, count: 0 });
}

/** One step on the dashboard: the step's loss over the global batch, the slowest all-reduce, each rank's speed. */
function showStep(feed: RunFeed, group: Group, reports: StepReports, state: RunState, stepsPerEpoch: number): void {
  const count = reports.reduce((n, r) => n + r.count, 0);
  feed.step({
    step: state.step,
    epoch: state.epoch + state.stepInEpoch / stepsPerEpoch,
    loss: reports.reduce((l, r) => l + r.lossSum, 0) / Math.max(count, 1),
    allReduceMs: Math.max(...reports.map((r) => r.reduceMs)),
  }, state.epochTotals.seen);
  reports.forEach((r, rank) => {
    const view = group.members[rank].view;
    if (view) feed.workerUpdate(view, { imagesPerS: r.stepMs > 0 ? (1000 * r.count) / r.stepMs : null });
  });
}

/** Asks every rank for a snapshot, checks that they agree, and copies rank 0's tensors into `state`. */
async function snapshot(group: Group, state: RunState, when: string): Promise<void> {
  group.broadcast({ type: 'snapshot' });
  const states = await group.gather('state');
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

/** Throws if the replicas' weights differ, naming the ranks that disagree with rank 0. */
function compareChecksums(sums: (string | null)[], when: string): void {
  const off = sums.flatMap((s, rank) => (s !== sums[0] || s === null ? [rank] : []));
  if (off.length > 0) {
    throw new Error(`replica weights diverged at ${when}: rank(s) ${off.join(', ')} differ from rank 0 ` +
      `(${sums.map((s, r) => `rank ${r}: ${s ?? 'none'}`).join(', ')})`);
  }
}
