// Single-process training of the seed's recipe. Reads top to bottom: set-up,
// then per epoch: schedule, steps (gradient, SGD, BatchNorm statistics),
// evaluation, metrics, plots, checkpoint. The pieces it calls (Replica,
// sgdStep, the sampler, BatchLoader) are the ones a distributed worker reuses.
import fs from 'node:fs';
import path from 'node:path';
import { initBackend, describeBackend } from '../backend/backend.js';
import { loadDataset } from '../data/load-dataset.js';
import { buildModelSpec, type ModelSpec } from '../model/spec.js';
import { Replica } from '../model/replica.js';
import { evaluateRange } from './evaluation.js';
import { sgdStep, updateRunningStats } from '../optim/sgd.js';
import { learningRate } from '../optim/schedule.js';
import { globalBatches } from '../data/sampler.js';
import { BatchLoader } from '../data/batch-loader.js';
import type { TrainConfig } from './config.js';
import { NORMALIZE } from '../data/augment.js';
import { appendMetrics, formatEpochLine, type EpochMetrics } from '../io/metrics.js';
import { ProgressBar } from '../io/progress.js';
import { writeCurvesPng } from '../io/plot/charts.js';
import { writeSamples } from '../io/plot/samples.js';
import { TensorboardLog } from '../io/tensorboard.js';
import { freshState, resumeState, saveCheckpoint, type RunState } from './run-state.js';
export type { RunState } from './run-state.js';
import type { ImageSet } from '../data/types.js';

export interface TrainIo {
  log: (line: string) => void;
  /** Where the progress bar draws; it draws only on a TTY. */
  progressStream?: NodeJS.WriteStream | { isTTY?: boolean; write(s: string): unknown };
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
  const data = await loadDataset({
    name: cfg.dataset, dataDir: cfg.dataDir, trainLimit: cfg.trainLimit, testLimit: cfg.testLimit,
    seed: cfg.seed, download: cfg.download, log: io.log,
  });
  const spec = buildModelSpec({
    name: cfg.model, width: cfg.width, norm: cfg.norm,
    numClasses: data.classes.length, inChannels: data.train.channels,
  });
  io.log(`data: ${data.name}, ${data.train.count} train / ${data.test.count} test images; model: ${cfg.model} width ${cfg.width}, ${spec.paramCount.toLocaleString('en-US')} parameters; backend ${backend}`);
  fs.mkdirSync(cfg.out, { recursive: true });

  const state = cfg.resume ? await resumeState(cfg, spec, io.log) : freshState(cfg, spec);
  const metricsFile = path.join(cfg.out, 'metrics.jsonl');
  if (!cfg.resume) fs.rmSync(metricsFile, { force: true });
  if (cfg.plots && !cfg.resume) await writeSamples(cfg, data);

  const tensorboard = cfg.tensorboard ? await TensorboardLog.open(cfg.tensorboard, io.log) : null;
  const replica = new Replica(spec, state.weights, [data.train.height, data.train.width, data.train.channels]);
  const loader = new BatchLoader({ set: data.train, threads: cfg.loaderThreads, seed: cfg.seed, ...NORMALIZE });
  const grad = new Float32Array(spec.paramCount);
  const schedule = { lr: cfg.lr, tMax: cfg.tMax, warmupEpochs: cfg.warmupEpochs };
  const trainStart = Date.now();
  let dataWaitMs = 0;
  let stopped = false;
  try {
    for (let epoch = state.epoch; epoch < cfg.epochs && !stopped; epoch++) {
      const batches = globalBatches(data.train.count, cfg.batchSize, cfg.seed, epoch, { shuffle: true });
      const epochStart = Date.now() - state.epochTotals.seconds * 1000;
      const bar = new ProgressBar({ epoch: epoch + 1, epochs: cfg.epochs, total: data.train.count, stream: io.progressStream });
      let lr = learningRate(epoch, state.stepInEpoch, batches.length, schedule);

      // A resumed epoch skips the batches it already trained on; the order and
      // augmentation depend only on (seed, epoch, index), so the rest is identical.
      for await (const batch of loader.prefetch(batches.slice(state.stepInEpoch), epoch, true)) {
        lr = learningRate(epoch, state.stepInEpoch, batches.length, schedule);
        // The loss is normalised by the global batch so that, in distributed
        // runs, the sum of the replicas' gradients is this same gradient.
        const res = replica.computeGradients(batch, 1 / batch.count, grad);
        sgdStep(state.weights, grad, state.momentum, { lr, momentum: cfg.momentum, weightDecay: cfg.weightDecay }, state.step === 0);
        if (res.batchStats) updateRunningStats(state.runningStats, res.batchStats);
        replica.setWeights(state.weights);
        state.step++;
        state.stepInEpoch++;
        state.epochTotals.lossSum += res.lossSum;
        state.epochTotals.correct += res.correct;
        state.epochTotals.seen += res.count;
        bar.update(state.epochTotals.seen, state.epochTotals.lossSum / state.epochTotals.seen);

        if (cfg.checkpointEvery > 0 && state.step % cfg.checkpointEvery === 0 && state.stepInEpoch < batches.length) {
          state.epochTotals.seconds = (Date.now() - epochStart) / 1000;
          await saveCheckpoint(cfg, spec, state);
        }
        if (cfg.maxSteps > 0 && state.step >= cfg.maxSteps) {
          stopped = true;
          break;
        }
      }
      bar.finish();
      if (stopped && state.stepInEpoch < batches.length) {
        // Stopped mid-epoch (--max-steps): keep the exact state so --resume continues from here.
        state.epochTotals.seconds = (Date.now() - epochStart) / 1000;
        await saveCheckpoint(cfg, spec, state);
        break;
      }

      const test = evaluate(replica, data.test, state.runningStats, cfg.batchSize);
      const seconds = (Date.now() - epochStart) / 1000;
      const m: EpochMetrics = {
        epoch: epoch + 1,
        lr,
        train_loss: state.epochTotals.lossSum / state.epochTotals.seen,
        train_acc: state.epochTotals.correct / state.epochTotals.seen,
        test_loss: test.loss,
        test_acc: test.acc,
        seconds,
        images_per_s: state.epochTotals.seen / seconds,
        workers: 1,
        train_images: state.epochTotals.seen,
      };
      state.history.push(m);
      await appendMetrics(metricsFile, m);
      io.log(formatEpochLine(m));
      tensorboard?.epoch(m);
      if (cfg.plots) await writeCurvesPng(path.join(cfg.out, 'curves.png'), state.history, `${cfg.model} on ${cfg.dataset}`);

      state.epoch = epoch + 1;
      state.stepInEpoch = 0;
      state.epochTotals = { lossSum: 0, correct: 0, seen: 0, seconds: 0 };
      await saveCheckpoint(cfg, spec, state);
    }
  } finally {
    dataWaitMs = loader.stats().waitMs;
    await loader.close();
    replica.dispose();
  }
  return { history: state.history, state, spec, dataWaitMs, trainMs: Date.now() - trainStart };
}

/** Eval-mode loss and accuracy over a whole image set, in batches of the training size. */
export function evaluate(replica: Replica, set: ImageSet, runningStats: Float32Array, batchSize: number): { loss: number; acc: number } {
  const { lossSum, correct } = evaluateRange(replica, set, runningStats, batchSize);
  return { loss: lossSum / set.count, acc: correct / set.count };
}
