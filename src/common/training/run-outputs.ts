// What a run records, the same for the single-process trainer and the
// distributed coordinator: the epoch clock and progress bar, the epoch's
// metrics (metrics.jsonl, the epoch line, TensorBoard, curves.png), the
// --timeline trace (written at every checkpoint and at the end) and the
// checkpoints, mid-epoch and at the epoch end. The coordinator passes a
// `sync` that first copies the replicas' state into the run state.
import path from 'node:path';
import type { TrainConfig } from './config.js';
import type { ModelSpec } from '../model/spec.js';
import type { BatchResult } from '../model/replica.js';
import { learningRate, scheduleOf } from '../optim/schedule.js';
import { appendMetrics, formatEpochLine, type EpochMetrics } from '../io/metrics.js';
import { ProgressBar, type ProgressStream } from '../io/progress.js';
import { writeCurvesPng } from '../io/plot/curves.js';
import { TraceFile } from '../io/timeline.js';
import { saveCheckpoint, type RunState } from './run-state.js';

/** Makes the run state hold the replicas' state before a checkpoint (the coordinator's snapshot); the trainer has none. */
export type SyncState = () => Promise<void>;

export class RunOutputs {
  readonly metricsFile: string;
  /** Also told of every epoch's metrics (TensorBoard, the dashboard). */
  readonly onEpoch: ((m: EpochMetrics) => void)[] = [];
  readonly stepsPerEpoch: number;
  /** With --timeline: every rank's step spans, one file. */
  readonly trace: TraceFile | null;
  private epochStart = Date.now();

  constructor(
    private readonly cfg: TrainConfig,
    private readonly spec: ModelSpec,
    readonly trainCount: number,
    private readonly log: (line: string) => void,
  ) {
    this.metricsFile = path.join(cfg.out, 'metrics.jsonl');
    this.stepsPerEpoch = Math.ceil(trainCount / cfg.batchSize);
    this.trace = cfg.timeline ? new TraceFile(cfg.timeline) : null;
  }

  /** Writes the trace so far (atomically: a crash keeps the last complete one). */
  async flushTrace(): Promise<void> {
    if (this.trace) await this.trace.flush();
  }

  /** Starts the epoch in progress: its clock (a resumed epoch goes on from its recorded seconds) and its progress bar. */
  startEpoch(state: RunState, stream?: ProgressStream): ProgressBar {
    this.epochStart = Date.now() - state.epochTotals.seconds * 1000;
    return new ProgressBar({ epoch: state.epoch + 1, epochs: this.cfg.epochs, total: this.trainCount, stream });
  }

  /** A checkpoint of the exact state inside an epoch (--checkpoint-every, --max-steps, --max-bad-steps), so --resume goes on from here. */
  async saveMidEpoch(state: RunState, sync?: SyncState): Promise<void> {
    state.epochTotals.seconds = this.seconds();
    await sync?.();
    await saveCheckpoint(this.cfg, this.spec, state);
    await this.flushTrace();
  }

  /** Ends the epoch in progress with its test result: its metrics everywhere, then the next epoch's state and a checkpoint. */
  async endEpoch(state: RunState, test: BatchResult, workers: number, sync?: SyncState): Promise<EpochMetrics> {
    const { cfg } = this;
    const totals = state.epochTotals;
    const seconds = this.seconds();
    const m: EpochMetrics = {
      epoch: state.epoch + 1,
      // The rate of the epoch's last step (the same for every step after any warmup).
      lr: learningRate(state.epoch, this.stepsPerEpoch - 1, this.stepsPerEpoch, scheduleOf(cfg)),
      train_loss: totals.lossSum / totals.seen,
      train_acc: totals.correct / totals.seen,
      test_loss: test.lossSum / test.count,
      test_acc: test.correct / test.count,
      seconds,
      images_per_s: totals.seen / seconds,
      workers,
      train_images: totals.seen,
    };
    state.history.push(m);
    await appendMetrics(this.metricsFile, m);
    this.log(formatEpochLine(m));
    for (const listener of this.onEpoch) listener(m);
    if (cfg.plots) {
      const title = `${cfg.model} on ${cfg.dataset}${workers > 1 ? `, ${workers} workers` : ''}`;
      await writeCurvesPng(path.join(cfg.out, 'curves.png'), state.history, title);
    }

    state.epoch++;
    state.stepInEpoch = 0;
    state.epochTotals = { lossSum: 0, correct: 0, seen: 0, seconds: 0 };
    await sync?.();
    await saveCheckpoint(cfg, this.spec, state);
    await this.flushTrace();
    return m;
  }

  private seconds(): number {
    return (Date.now() - this.epochStart) / 1000;
  }
}

/** Adds one step's sums (one rank's, or the only process's) to the epoch in progress. */
export function addToEpoch(state: RunState, r: BatchResult): void {
  state.epochTotals.lossSum += r.lossSum;
  state.epochTotals.correct += r.correct;
  state.epochTotals.seen += r.count;
}
