// What the dashboard shows, kept by the coordinator as the run goes: the
// run's description, per-epoch metrics, the training loss and all-reduce time
// of every step, the planned learning-rate schedule, each worker's state and
// the epoch's progress. Subscribers (the SSE feed) get the whole state once
// and then small deltas, batched so a fast run does not flood the browser.
//
// Nothing secret enters here: the token is never passed in, and the config is
// copied field by field.

import type { TrainConfig } from '../../common/training/config.js';
import type { EpochMetrics } from '../../common/io/metrics.js';

export type WorkerState = 'joined' | 'ready' | 'training' | 'evaluating' | 'done' | 'failed';

export interface WorkerView {
  rank: number | null;
  host: string;
  backend: string | null;
  state: WorkerState;
  imagesPerS: number | null;
  /** ms since the epoch of the last message from this worker. */
  lastSeen: number;
}

export interface StepPoint {
  step: number;
  /** Fractional epoch, for plotting steps on the epoch axis. */
  epoch: number;
  loss: number;
  /** Slowest rank's all-reduce time for this step, ms. */
  allReduceMs: number;
}

export interface RunView {
  run: {
    model: string; width: number; dataset: string; workers: number; batchSize: number; epochs: number;
    allreduce: string; backend: string; startedAt: number; status: 'waiting' | 'training' | 'finished' | 'failed'; message: string | null;
  };
  /** Planned learning rate at the start of every epoch and at the end, [epoch, lr]. */
  schedule: [number, number][];
  epochs: EpochMetrics[];
  steps: StepPoint[];
  workers: WorkerView[];
  progress: { epoch: number; seen: number; total: number; epochStartedAt: number; etaSeconds: number | null };
}

export type FeedEvent =
  | { type: 'snapshot'; view: RunView }
  | { type: 'delta'; steps: StepPoint[]; epochs: EpochMetrics[]; workers: WorkerView[]; progress: RunView['progress']; run: RunView['run'] };

type Listener = (event: FeedEvent) => void;

export class RunFeed {
  private readonly view: RunView;
  private readonly listeners = new Set<Listener>();
  private pendingSteps: StepPoint[] = [];
  private pendingEpochs: EpochMetrics[] = [];
  private dirty = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    cfg: TrainConfig,
    workers: number,
    allreduce: string,
    schedule: [number, number][],
    private readonly flushMs = 250,
    private readonly now: () => number = Date.now,
  ) {
    this.view = {
      run: {
        model: cfg.model, width: cfg.width, dataset: cfg.dataset, workers, batchSize: cfg.batchSize, epochs: cfg.epochs,
        allreduce, backend: cfg.backend, startedAt: now(), status: 'waiting', message: null,
      },
      schedule,
      epochs: [],
      steps: [],
      workers: [],
      progress: { epoch: 0, seen: 0, total: 0, epochStartedAt: now(), etaSeconds: null },
    };
  }

  /** Sends the current state now and every delta after it; returns the unsubscribe function. */
  subscribe(listener: Listener): () => void {
    listener({ type: 'snapshot', view: this.view });
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  snapshot(): RunView {
    return this.view;
  }

  workerJoined(host: string): WorkerView {
    const w: WorkerView = { rank: null, host, backend: null, state: 'joined', imagesPerS: null, lastSeen: this.now() };
    this.view.workers.push(w);
    this.touch();
    return w;
  }

  /**
   * A new group: its members ordered by rank, then `lost` (workers that
   * left the run, shown as failed). Workers that left before the start are
   * dropped.
   */
  ranksAssigned(ranked: WorkerView[], lost: WorkerView[] = []): void {
    ranked.forEach((w, rank) => (w.rank = rank));
    for (const w of lost) w.rank = null;
    this.view.workers = [...ranked, ...lost];
    this.view.run.status = 'training';
    this.touch();
  }

  workerUpdate(w: WorkerView, change: Partial<Pick<WorkerView, 'backend' | 'state' | 'imagesPerS'>>): void {
    Object.assign(w, change, { lastSeen: this.now() });
    this.touch();
  }

  epochStarted(epoch: number, total: number, seen: number): void {
    this.view.progress = { epoch, seen, total, epochStartedAt: this.now(), etaSeconds: null };
    this.touch();
  }

  step(point: StepPoint, seen: number): void {
    this.view.steps.push(point);
    this.pendingSteps.push(point);
    const p = this.view.progress;
    p.seen = seen;
    const elapsed = (this.now() - p.epochStartedAt) / 1000;
    // Remaining images of this epoch and of the epochs after it, at this epoch's rate.
    const rate = seen > 0 ? seen / Math.max(elapsed, 1e-3) : 0;
    const remaining = (p.total - seen) + (this.view.run.epochs - p.epoch - 1) * p.total;
    p.etaSeconds = rate > 0 ? remaining / rate : null;
    this.touch();
  }

  epochEnded(m: EpochMetrics): void {
    this.view.epochs.push(m);
    this.pendingEpochs.push(m);
    this.flush(); // an epoch is rare and the most wanted update: no batching delay
  }

  finished(status: 'finished' | 'failed', message: string | null = null): void {
    this.view.run.status = status;
    this.view.run.message = message;
    for (const w of this.view.workers) if (w.state !== 'failed') w.state = status === 'finished' ? 'done' : w.state;
    this.dirty = true;
    this.flush();
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.listeners.clear();
  }

  private touch(): void {
    this.dirty = true;
    if (this.timer === null) this.timer = setTimeout(() => this.flush(), this.flushMs);
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!this.dirty && this.pendingSteps.length === 0 && this.pendingEpochs.length === 0) return;
    const event: FeedEvent = {
      type: 'delta', steps: this.pendingSteps, epochs: this.pendingEpochs,
      workers: this.view.workers, progress: this.view.progress, run: this.view.run,
    };
    this.pendingSteps = [];
    this.pendingEpochs = [];
    this.dirty = false;
    for (const listener of this.listeners) listener(event);
  }
}
