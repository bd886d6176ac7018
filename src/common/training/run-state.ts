// The state of a training run and its checkpoints: what a checkpoint holds,
// how a fresh run starts (the seeded initial weights), how --resume finds and
// checks the newest valid checkpoint, and how one is written. The
// single-process trainer and the distributed coordinator share all of it, so
// their checkpoints are interchangeable.
import fs from 'node:fs';
import path from 'node:path';
import { buildModelSpec, initParams, initRunningStats, type ModelSpec } from '../model/spec.js';
import type { Dataset } from '../data/types.js';
import { Rng } from '../data/rng.js';
import type { TrainConfig } from './config.js';
import { appendMetrics, readMetrics, type EpochMetrics } from '../io/metrics.js';
import { checkpointFileName, loadNewestValidCheckpoint, pruneCheckpoints, writeCheckpoint } from '../io/checkpoint.js';
import { SgdBuffers } from '../optim/sgd-buffers.js';
import type { OptimizerState } from './step.js';

/** Seeds the initial weights together with --seed; every process derives the same ones. */
const INIT_TAG = 0x1a17;
const KEEP_CHECKPOINTS = 3;

/** Everything a checkpoint must hold to continue a run exactly. */
export interface RunState {
  weights: Float32Array;
  momentum: Float32Array;
  runningStats: Float32Array;
  /** Optimizer steps taken so far; step 0 initialises the momentum buffer. */
  step: number;
  /** Epoch in progress (0-based) and steps of it already done. */
  epoch: number;
  stepInEpoch: number;
  /** Running sums of the epoch in progress, so a mid-epoch resume reports the same metrics. */
  epochTotals: { lossSum: number; correct: number; seen: number; seconds: number };
  history: EpochMetrics[];
}

export interface CheckpointMeta {
  config: TrainConfig;
  step: number;
  epoch: number;
  stepInEpoch: number;
  epochTotals: RunState['epochTotals'];
  history: EpochMetrics[];
  paramCount: number;
}

/** The network a run trains: the configured model, sized for the dataset's classes and channels. */
export function modelSpecFor(cfg: TrainConfig, data: Dataset): ModelSpec {
  return buildModelSpec({
    name: cfg.model, width: cfg.width, norm: cfg.norm, numClasses: data.classes.length, inChannels: data.train.channels,
  });
}

/**
 * The run state as the optimizer steps it, in one process: its weights and
 * momentum move into the optimizer's buffers, and from then on `state.weights`
 * and `state.momentum` read the buffers' current pair (so checkpoints and
 * evaluation see every step without a copy). Assigning them throws.
 */
export function optimizerStateOf(state: RunState): OptimizerState {
  const params = new SgdBuffers(state.weights, state.momentum);
  Object.defineProperties(state, {
    weights: { get: () => params.weights, enumerable: true, configurable: true },
    momentum: { get: () => params.momentum, enumerable: true, configurable: true },
  });
  return {
    params,
    runningStats: state.runningStats,
    get step() { return state.step; },
    set step(value: number) { state.step = value; },
  };
}

export function freshState(cfg: TrainConfig, spec: ModelSpec): RunState {
  const rng = Rng.seeded(INIT_TAG, cfg.seed);
  return {
    weights: initParams(spec, () => rng.nextFloat()),
    momentum: new Float32Array(spec.paramCount),
    runningStats: initRunningStats(spec),
    step: 0,
    epoch: 0,
    stepInEpoch: 0,
    epochTotals: { lossSum: 0, correct: 0, seen: 0, seconds: 0 },
    history: [],
  };
}

/** Fields that must match for a checkpoint to continue this run. */
const RESUME_KEYS = ['model', 'width', 'norm', 'dataset', 'trainLimit', 'testLimit', 'batchSize', 'seed'] as const;

export async function resumeState(cfg: TrainConfig, spec: ModelSpec, log: (line: string) => void): Promise<RunState> {
  const ckpt = await loadNewestValidCheckpoint<CheckpointMeta>(cfg.out, (msg) => log(`warning: ${msg}`));
  const meta = ckpt.meta;
  for (const key of RESUME_KEYS) {
    if (meta.config[key] !== cfg[key]) {
      throw new Error(
        `cannot resume from ${ckpt.path}: it was written with --${key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} ${String(meta.config[key])}, ` +
          `this run has ${String(cfg[key])}; pass the same flags or use a new --out`,
      );
    }
  }
  const { weights, momentum, running_stats: runningStats } = ckpt.tensors;
  if (meta.paramCount !== spec.paramCount || weights?.length !== spec.paramCount || momentum?.length !== spec.paramCount ||
      runningStats?.length !== spec.runningStatsSize) {
    throw new Error(`cannot resume from ${ckpt.path}: its tensors do not fit ${cfg.model} width ${cfg.width}`);
  }
  // metrics.jsonl may have lines past the checkpoint (a crash between the two
  // writes): rewrite it from the checkpoint's history so no epoch appears twice.
  const metricsFile = path.join(cfg.out, 'metrics.jsonl');
  const onDisk = fs.existsSync(metricsFile) ? await readMetrics(metricsFile) : [];
  if (onDisk.length !== meta.history.length) {
    fs.rmSync(metricsFile, { force: true });
    for (const m of meta.history) await appendMetrics(metricsFile, m);
  }
  log(`resumed from ${ckpt.path} (epoch ${meta.epoch + 1}, step ${meta.step})`);
  return {
    weights: weights.slice(), momentum: momentum.slice(), runningStats: runningStats.slice(),
    step: meta.step, epoch: meta.epoch, stepInEpoch: meta.stepInEpoch,
    epochTotals: { ...meta.epochTotals }, history: meta.history,
  };
}

export async function saveCheckpoint(cfg: TrainConfig, spec: ModelSpec, state: RunState): Promise<void> {
  const meta: CheckpointMeta = {
    config: cfg, step: state.step, epoch: state.epoch, stepInEpoch: state.stepInEpoch,
    epochTotals: state.epochTotals, history: state.history, paramCount: spec.paramCount,
  };
  await writeCheckpoint(cfg.out, checkpointFileName(state.epoch, state.step), {
    meta,
    tensors: { weights: state.weights, momentum: state.momentum, running_stats: state.runningStats },
  });
  await pruneCheckpoints(cfg.out, KEEP_CHECKPOINTS);
}
