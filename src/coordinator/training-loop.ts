// The coordinator's epoch loop, in the single-process trainer's order:
// steps, evaluation, metrics, plots, checkpoint. The workers train segments
// of an epoch (up to the next checkpoint or --max-steps) and report small
// per-step sums; the coordinator commits each step once every rank has
// reported it, and between segments takes a snapshot from rank 0 and writes
// the checkpoint itself. Every exchange with the group is resilient: a member
// failure re-forms the group (membership.ts) and the exchange runs again from
// the committed step. `state` is updated in place and ends as the run's
// final state.

import path from 'node:path';
import type { TrainConfig } from '../common/training/config.js';
import type { ModelSpec } from '../common/model/spec.js';
import { learningRate } from '../common/optim/schedule.js';
import { saveCheckpoint, type RunState } from '../common/training/run-state.js';
import { TensorboardLog } from '../common/io/tensorboard.js';
import { appendMetrics, formatEpochLine, type EpochMetrics } from '../common/io/metrics.js';
import { ProgressBar, type ProgressStream } from '../common/io/progress.js';
import { writeCurvesPng } from '../common/io/plot/charts.js';
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
  trainCount: number;
  testCount: number;
  checksumEvery: number;
  log: (line: string) => void;
  progressStream?: ProgressStream;
  feed: RunFeed | null;
  tensorboard: TensorboardLog | null;
  watchdog: Watchdog;
}

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

export async function trainingLoop(
  cfg: TrainConfig, spec: ModelSpec, state: RunState, membership: Membership, o: LoopOptions,
): Promise<LoopResult> {
  const metricsFile = path.join(cfg.out, 'metrics.jsonl');
  const stepsPerEpoch = Math.ceil(o.trainCount / cfg.batchSize);
  const schedule = { lr: cfg.lr, tMax: cfg.tMax, warmupEpochs: cfg.warmupEpochs };
  const trainStart = Date.now();
  const timing = { reduceMs: 0, stepMs: 0, dataMs: 0, gradMs: 0, rankSteps: 0 };
  const memory = { peakTensors: 0, peakTensorBytes: 0 };
  let badSteps = 0;
  let counted = membership.group;
  // The run's first step sets up kernels and buffers: it is kept out of the timing breakdown.
  const warmupStep = state.step + 1;
  const stopAt = cfg.maxSteps > 0 ? cfg.maxSteps : Infinity;
  const setWorkerStates = (workerState: 'training' | 'evaluating'): void => {
    for (const m of membership.members) if (m.view) o.feed?.workerUpdate(m.view, { state: workerState });
  };
  while (state.epoch < cfg.epochs && state.step < stopAt) {
    const epoch = state.epoch;
    const epochStart = Date.now() - state.epochTotals.seconds * 1000;
    const bar = new ProgressBar({ epoch: epoch + 1, epochs: cfg.epochs, total: o.trainCount, stream: o.progressStream });
    const totals = state.epochTotals;
    const checkpointNow = async (group: Group, when: string): Promise<void> => {
      totals.seconds = (Date.now() - epochStart) / 1000;
      await snapshot(group, state, when);
      await saveCheckpoint(cfg, spec, state);
    };
    o.feed?.epochStarted(epoch, o.trainCount, totals.seen);
    setWorkerStates('training');
    while (state.stepInEpoch < stepsPerEpoch && state.step < stopAt) {
      await resilient(membership, async (group) => {
        // Workers count bad steps per group, so a new group starts the count again.
        if (group !== counted) badSteps = 0;
        counted = group;
        // A segment ends at the epoch's end, at --max-steps, or at the next --checkpoint-every step.
        const untilCheckpoint = cfg.checkpointEvery > 0 ? cfg.checkpointEvery - (state.step % cfg.checkpointEvery) : Infinity;
        const steps = Math.min(stepsPerEpoch - state.stepInEpoch, stopAt - state.step, untilCheckpoint);
        group.broadcast({ type: 'epoch', epoch, from: state.stepInEpoch, steps });
        for (let s = 0; s < steps; s++) {
          const reports = await group.gather('step');
          state.step++;
          state.stepInEpoch++;
          // This is the commit point: every rank has done the step, so none can lose it.
          group.broadcast({ type: 'commit', step: state.step });
          membership.progressed();
          for (const r of reports) {
            memory.peakTensors = Math.max(memory.peakTensors, r.tensors);
            memory.peakTensorBytes = Math.max(memory.peakTensorBytes, r.tensorBytes);
          }
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
              await checkpointNow(group, `step ${state.step}`);
              throw new Error(`${badSteps} consecutive steps had non-finite gradients (--max-bad-steps ${cfg.maxBadSteps}); ` +
                `checkpoint written at step ${state.step}: lower --lr or check the data, then --resume`);
            }
          } else {
            badSteps = 0;
            countStep(reports, state, o.watchdog, state.step === warmupStep ? null : timing);
            bar.update(totals.seen, totals.lossSum / totals.seen);
            if (o.feed) showStep(o.feed, group, reports, state, stepsPerEpoch);
          }
          if (s < steps - 1 && membership.canGrow) throw new GrowSignal();
        }
      });
      if (state.stepInEpoch < stepsPerEpoch) {
        // Mid-epoch: a --checkpoint-every boundary, or stopped by --max-steps. Either way keep the exact state.
        await resilient(membership, (group) => checkpointNow(group, `step ${state.step}`));
      }
    }
    bar.finish();
    if (state.stepInEpoch < stepsPerEpoch) break; // stopped mid-epoch by --max-steps: no partial-epoch evaluation
    setWorkerStates('evaluating');

    const test = await resilient(membership, async (group) => {
      group.broadcast({ type: 'evaluate', epoch });
      const evals = await group.gather('eval');
      return evals.reduce((t, e) => ({ lossSum: t.lossSum + e.lossSum, correct: t.correct + e.correct, count: t.count + e.count }), { lossSum: 0, correct: 0, count: 0 });
    });
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
      workers: membership.group.size,
      train_images: totals.seen,
    };
    state.history.push(m);
    await appendMetrics(metricsFile, m);
    o.log(formatEpochLine(m));
    o.feed?.epochEnded(m);
    o.tensorboard?.epoch(m);
    if (cfg.plots) await writeCurvesPng(path.join(cfg.out, 'curves.png'), state.history, `${cfg.model} on ${cfg.dataset}, ${membership.group.size} workers`);

    state.epoch = epoch + 1;
    state.stepInEpoch = 0;
    state.epochTotals = { lossSum: 0, correct: 0, seen: 0, seconds: 0 };
    // This is a sync point: every rank averages its BatchNorm statistics and rank 0 sends the state.
    await resilient(membership, (group) => snapshot(group, state, `the end of epoch ${epoch + 1}`));
    await saveCheckpoint(cfg, spec, state);
  }
  const allReduceShare = timing.stepMs > 0 ? timing.reduceMs / timing.stepMs : 0;
  const dataWaitShare = timing.stepMs + timing.dataMs > 0 ? timing.dataMs / (timing.stepMs + timing.dataMs) : 0;
  const per = (ms: number) => (timing.rankSteps > 0 ? ms / timing.rankSteps : 0);
  const breakdown = {
    dataMs: per(timing.dataMs), gradMs: per(timing.gradMs), reduceMs: per(timing.reduceMs), optimMs: per(timing.stepMs - timing.gradMs - timing.reduceMs),
  };
  o.log(`step time (mean over ranks, first step excluded): forward+backward ${breakdown.gradMs.toFixed(1)} ms, ` +
    `all-reduce ${breakdown.reduceMs.toFixed(1)} ms (${(100 * allReduceShare).toFixed(1)}%), optimizer ${breakdown.optimMs.toFixed(1)} ms, ` +
    `data wait ${breakdown.dataMs.toFixed(1)} ms (${(100 * dataWaitShare).toFixed(1)}%)`);
  // A count that grows with the run's length is a leak; a flat one is the model's variables.
  o.log(`memory: at most ${memory.peakTensors} live tensors (${(memory.peakTensorBytes / 2 ** 20).toFixed(1)} MB) on any worker after a step`);
  return { history: state.history, steps: state.step, trainMs: Date.now() - trainStart, allReduceShare, dataWaitShare, breakdown, ...memory };
}

/** Adds a committed step's sums to the epoch's totals, and its times (unless a warm-up step) to the breakdown. */
function countStep(
  reports: MessageOfType<'step'>[], state: RunState, watchdog: Watchdog,
  timing: { reduceMs: number; stepMs: number; dataMs: number; gradMs: number; rankSteps: number } | null,
): void {
  const totals = state.epochTotals;
  for (const r of reports) {
    watchdog.noteStep(r.stepMs + r.dataMs);
    totals.lossSum += r.lossSum;
    totals.correct += r.correct;
    totals.seen += r.count;
    if (!timing) continue;
    timing.reduceMs += r.reduceMs;
    timing.stepMs += r.stepMs;
    timing.dataMs += r.dataMs;
    timing.gradMs += r.gradMs;
    timing.rankSteps++;
  }
}

/** One step on the dashboard: the step's loss over the global batch, the slowest all-reduce, each rank's speed. */
function showStep(feed: RunFeed, group: Group, reports: MessageOfType<'step'>[], state: RunState, stepsPerEpoch: number): void {
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
