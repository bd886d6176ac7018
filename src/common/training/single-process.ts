// Single-process training of the seed's recipe. Reads top to bottom: set-up
// (run-setup.ts), then per epoch: the steps (step.ts: gradient, SGD,
// BatchNorm statistics), evaluation, and the epoch's metrics, plots and
// checkpoint (run-outputs.ts). The coordinator shares all of these pieces;
// its workers share the step.
import { initBackend, describeBackend } from '../backend/backend.js';
import { Replica } from '../model/replica.js';
import type { ModelSpec } from '../model/spec.js';
import { evaluateRange } from './evaluation.js';
import { learningRate, scheduleOf } from '../optim/schedule.js';
import { globalBatches } from '../data/sampler.js';
import { BatchLoader } from '../data/batch-loader.js';
import { NORMALIZE } from '../data/augment.js';
import type { TrainConfig } from './config.js';
import { throwIfInjected } from './faults.js';
import type { EpochMetrics } from '../io/metrics.js';
import type { ProgressStream } from '../io/progress.js';
import { optimizerStateOf, type RunState } from './run-state.js';
import { prepareRun, type PreparedRun } from './run-setup.js';
import { addToEpoch } from './run-outputs.js';
import { BadSteps, TrainStep } from './step.js';
import { Timeline } from '../io/timeline.js';
export type { RunState } from './run-state.js';

export interface TrainIo {
  log: (line: string) => void;
  /** Where the progress bar draws; it draws only on a TTY. */
  progressStream?: ProgressStream;
}

export interface TrainResult {
  history: EpochMetrics[];
  state: RunState;
  spec: ModelSpec;
  /** Time spent waiting for the data pipeline vs. the whole training time, for benchmarks. */
  dataWaitMs: number;
  trainMs: number;
}

export async function train(cfg: TrainConfig, io: TrainIo): Promise<TrainResult> {
  const backend = await initBackend(cfg.backend);
  io.log(`backend: ${describeBackend()}`);
  const run = await prepareRun(cfg, io.log, `backend ${backend}`);
  const { data, spec, state, outputs } = run;
  const replica = new Replica(spec, state.weights, [data.train.height, data.train.width, data.train.channels]);
  const loader = new BatchLoader({ set: data.train, threads: cfg.loaderThreads, seed: cfg.seed, ...NORMALIZE });
  // --timeline: rank 0's compute track, handed to the run's trace after each step.
  const timeline = outputs.trace ? new Timeline(0) : null;
  outputs.trace?.addRank(0);
  const t: Trainer = {
    cfg, run, loader, io, badSteps: new BadSteps(cfg.maxBadSteps),
    step: new TrainStep(replica, optimizerStateOf(state), {
      hyper: { momentum: cfg.momentum, weightDecay: cfg.weightDecay },
      // --accumulate: the step cuts the global batch into micro-batches.
      accumulate: cfg.accumulate,
      hooks: { afterBackward: () => throwIfInjected(0, state.step + 1) },
      timeline: timeline ? (name, startMs, endMs, args) => timeline.span('compute', name, startMs, endMs, args) : undefined,
    }),
    afterStep: timeline ? () => outputs.trace!.add(timeline.drain()) : () => {},
  };
  const trainStart = Date.now();
  let dataWaitMs = 0;
  try {
    while (state.epoch < cfg.epochs && !stopped(t)) {
      if (!(await trainEpoch(t))) break;
      const test = evaluateRange(replica, data.test, state.runningStats, cfg.batchSize);
      await outputs.endEpoch(state, test, 1);
    }
  } finally {
    dataWaitMs = loader.stats().waitMs;
    await loader.close();
    replica.dispose();
    await outputs.flushTrace();
  }
  return { history: state.history, state, spec, dataWaitMs, trainMs: Date.now() - trainStart };
}

interface Trainer {
  cfg: TrainConfig;
  run: PreparedRun;
  loader: BatchLoader;
  step: TrainStep;
  badSteps: BadSteps;
  io: TrainIo;
  /** Hands the step's trace spans on (--timeline). */
  afterStep: () => void;
}

/** --max-steps reached. */
const stopped = ({ cfg, run }: Trainer): boolean => cfg.maxSteps > 0 && run.state.step >= cfg.maxSteps;

/** Trains the rest of the epoch in progress; false when --max-steps stopped it before its end (its state is checkpointed). */
async function trainEpoch(t: Trainer): Promise<boolean> {
  const { cfg, io, badSteps } = t;
  const { data, state, outputs } = t.run;
  const epoch = state.epoch;
  const batches = globalBatches(data.train.count, cfg.batchSize, cfg.seed, epoch, { shuffle: true });
  const bar = outputs.startEpoch(state, io.progressStream);
  // A resumed epoch skips the batches it already trained on; the order and
  // augmentation depend only on (seed, epoch, index), so the rest is identical.
  for await (const batch of t.loader.prefetch(batches.slice(state.stepInEpoch), epoch, true)) {
    const lr = learningRate(epoch, state.stepInEpoch, batches.length, scheduleOf(cfg));
    // One process holds the whole global batch: no exchange.
    const r = await t.step.run(batch, batch.count, lr);
    t.afterStep();
    state.stepInEpoch++;
    const tooMany = badSteps.note(r.skipped);
    if (r.skipped) {
      io.log(`step ${state.step} skipped: non-finite gradient (${badSteps.inARow} in a row)`);
    } else {
      addToEpoch(state, r);
      bar.update(state.epochTotals.seen, state.epochTotals.lossSum / state.epochTotals.seen);
    }
    if (tooMany) {
      await outputs.saveMidEpoch(state);
      throw badSteps.abortError(state.step);
    }
    if (cfg.checkpointEvery > 0 && state.step % cfg.checkpointEvery === 0 && state.stepInEpoch < batches.length) {
      await outputs.saveMidEpoch(state);
    }
    if (stopped(t)) break;
  }
  bar.finish();
  if (state.stepInEpoch === batches.length) return true;
  // Stopped mid-epoch (--max-steps): keep the exact state so --resume continues from here.
  await outputs.saveMidEpoch(state);
  return false;
}
