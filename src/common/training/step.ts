// One optimizer step, the same in the single-process trainer, in every
// distributed worker and in the benchmark. It reads top to bottom:
//
//   gradient of this rank's images  ->  sum over the ranks (the exchange)
//   ->  skip if the sum is not finite  ->  SGD  ->  BatchNorm running
//   statistics  ->  upload the new weights to the device
//
// Everything after the exchange runs on the host over flat Float32Arrays from
// bytes every rank shares, so every replica takes the same step bit for bit.
// The host's share is kept to one pass over the parameters per job: the
// gradient comes back in one read, the finite check of the sum is part of the
// SGD pass (sgd-buffers.ts), which writes into spare buffers instead of
// copying the old ones for the undo, and the weights go up once.
//
// A bucketed exchange (PyTorch DDP's buckets, issue 14) changes the middle:
//
//   forward  ->  backward, which hands each bucket over as its last
//   gradient arrives (the communication thread reduces it meanwhile)
//   ->  commit wait  ->  per bucket, in order: wait for its sum, SGD of its
//   range into the spare buffers  ->  apply if every bucket was finite
//   ->  BatchNorm statistics  ->  upload
//
// The SGD kernel is elementwise, so a bucketed step writes the bits the
// one-shot step writes; a non-finite bucket anywhere still skips the whole
// step on every replica, because nothing is current until every bucket is in.
//
// Gradient accumulation (`accumulate` K > 1, PyTorch's no_sync, Horovod's
// backward_passes_per_step) cuts this rank's images into K micro-batches
// (micro-batches.ts): the first K - 1 run forward and backward with their
// gradients added up locally, no exchange and no taps; the last adds its own
// as the step above handles its one batch (taps that add, buckets released,
// or one all-reduce after backward). One exchange per step, whatever K.
import { updateRunningStats, type SgdHyper } from '../optim/sgd.js';
import type { SgdBuffers } from '../optim/sgd-buffers.js';
import { BucketFill, type BucketedExchange } from '../allreduce/buckets.js';
import type { Batch, GradientResult, Replica } from '../model/replica.js';
import { microBatches } from './micro-batches.js';
import { clockMs } from '../io/timeline.js';

/** What a step changes. A single process's run state and a worker's ReplicaState are both one. */
export interface OptimizerState {
  /** Weights and momentum (double-buffered) and the step's gradient. */
  readonly params: SgdBuffers;
  readonly runningStats: Float32Array;
  /** Steps taken; step 0 starts the momentum buffer. */
  step: number;
}

/**
 * How this rank's gradient becomes the sum of every rank's: the one place a
 * step talks to the other ranks. A single worker has none.
 *
 * This is the seam for gradient buckets: today the step hands over the whole
 * flat gradient once backward is done. A bucketed exchange (PyTorch DDP)
 * starts each bucket's all-reduce, a range of this same buffer, as backward
 * produces it; `allReduce` then means "wait until every bucket is summed".
 */
export interface GradientExchange {
  /** Replaces `grad` in place with the elementwise sum over the ranks; every rank ends with the same bytes. */
  allReduce(grad: Float32Array): Promise<void>;
  /** When present, the step hands buckets over during backward instead (the communication thread's). */
  buckets?: BucketedExchange;
}

/** Records one span of the step on the compute thread's timeline track (wall-clock ms). */
export type StepTimeline = (name: string, startMs: number, endMs: number, args?: Record<string, number | string>) => void;

/** Where a caller joins in the middle of a step (the distributed worker does; the trainer does not). */
export interface StepHooks {
  /** Sees this rank's own gradient before it is checked and exchanged (fault injection poisons it here). */
  afterBackward?(grad: Float32Array): void;
  /** Runs after the exchange, right before the update changes the state (the worker's commit wait and undo copy). */
  beforeUpdate?(): Promise<void>;
}

export interface StepSetup {
  hyper: Omit<SgdHyper, 'lr'>;
  /** None for a single worker: its gradient already is the global batch's. */
  exchange?: GradientExchange;
  hooks?: StepHooks;
  timeline?: StepTimeline;
  /**
   * Micro-batches per step (--accumulate; absent: 1): this rank's images are
   * cut into this many, their gradients summed before the one exchange.
   */
  accumulate?: number;
}

/** What one step did, for the step report and the epoch's sums. */
export interface StepReport {
  /** Over this rank's images (every micro-batch): cross-entropy sum, correct predictions, images. */
  lossSum: number;
  correct: number;
  count: number;
  /** This rank's own gradient had a NaN/Inf (before the exchange). */
  localNonFinite: boolean;
  /** The summed gradient was not finite, so the step changed nothing (on every rank alike). */
  skipped: boolean;
  /** Milliseconds: forward+backward with the gradient read, the exchange, and the whole step (update and upload included). */
  gradMs: number;
  /** Milliseconds of forward and backward alone: stepMs - reduceMs - backwardMs is the host's share of the step. */
  backwardMs: number;
  reduceMs: number;
  stepMs: number;
}

/** The step's micro-batches together: their sums, times, and each one's batch statistics in order. */
interface Accumulated {
  lossSum: number;
  correct: number;
  count: number;
  backwardMs: number;
  batchStats: Float32Array[];
}

export class TrainStep {
  private readonly fill: BucketFill | null;
  private readonly accumulate: number;

  constructor(
    private readonly replica: Pick<Replica, 'computeGradients' | 'setWeights'>,
    private readonly state: OptimizerState,
    private readonly setup: StepSetup,
  ) {
    const plan = setup.exchange?.buckets?.plan;
    if (plan && plan.elements !== state.params.grad.length) {
      throw new Error(`internal: the bucket plan covers ${plan.elements} parameters, the model has ${state.params.grad.length}`);
    }
    this.fill = plan ? new BucketFill(plan) : null;
    this.accumulate = setup.accumulate ?? 1;
    if (!Number.isInteger(this.accumulate) || this.accumulate < 1) {
      throw new Error(`accumulate must be a positive integer, got ${setup.accumulate}`);
    }
  }

  /** This rank's gradient, then, after the exchange, the sum over the ranks. Reused every step. */
  get grad(): Float32Array {
    return this.state.params.grad;
  }

  /** One step on `batch`, this rank's part of a global batch of `globalBatch` images, at learning rate `lr`. */
  async run(batch: Batch, globalBatch: number, lr: number): Promise<StepReport> {
    const micro = microBatches(batch, this.accumulate);
    if (this.setup.exchange?.buckets) return this.runBucketed(micro, globalBatch, lr, this.setup.exchange.buckets);
    const { grad, state } = this;
    const { exchange, hooks, timeline } = this.setup;
    const start = performance.now();

    // Forward and backward of each micro-batch, the gradients summed here. The
    // loss is divided by the *global* batch, so the sum over the micro-batches
    // and the ranks is the gradient of the global batch's mean loss.
    const res = this.accumulateLocal(micro, micro.length, 1 / globalBatch);
    hooks?.afterBackward?.(grad);
    // Checked before the exchange, so that the run can name the rank whose own
    // gradient was bad; alone, a rank's gradient is the sum, checked below.
    const localNonFinite = exchange === undefined ? null : !state.params.gradFinite();
    const reduceStart = performance.now();

    // Sum over the ranks: the only point where ranks wait for each other.
    const reduceWall = clockMs();
    await exchange?.allReduce(grad);
    const reduceEnd = performance.now();
    if (exchange) timeline?.('allreduce', reduceWall, clockMs());
    const waitStart = clockMs();
    await hooks?.beforeUpdate?.();
    if (hooks?.beforeUpdate) timeline?.('commit wait', waitStart, clockMs());

    // Every rank holds the same sum, so every rank decides alike: a non-finite
    // sum skips the update everywhere, and the replicas stay equal.
    // torch.optim.SGD with momentum and weight decay; a skipped first step
    // leaves the momentum at zero, and m * 0 + g = g is the first-step rule anyway.
    const sgdStart = clockMs();
    const skipped = !state.params.step({ lr, ...this.setup.hyper }, state.step === 0);
    const uploadStart = clockMs();
    timeline?.('optimizer', sgdStart, uploadStart);
    this.finish(res.batchStats, skipped);
    timeline?.('upload', uploadStart, clockMs());
    return {
      lossSum: res.lossSum, correct: res.correct, count: res.count, localNonFinite: localNonFinite ?? skipped, skipped,
      gradMs: reduceStart - start, backwardMs: res.backwardMs, reduceMs: reduceEnd - reduceStart, stepMs: performance.now() - start,
    };
  }

  /** The same step with the exchange bucket by bucket (see the file comment). */
  private async runBucketed(micro: Batch[], globalBatch: number, lr: number, buckets: BucketedExchange): Promise<StepReport> {
    const { grad, state } = this;
    const { hooks, timeline } = this.setup;
    const { params } = state;
    const fill = this.fill!;
    const last = buckets.plan.buckets.length - 1;
    const start = performance.now();
    let localFinite = true;
    // Checked before the hand-over, while the bucket is still this rank's own gradient.
    const handOver = (index: number) => {
      const b = buckets.plan.buckets[index];
      if (!params.rangeFinite(b.offset, b.count)) localFinite = false;
      buckets.release(index);
    };

    fill.reset();
    buckets.begin();
    // Accumulation: every micro-batch but the last, summed here without the taps (no_sync).
    const res = this.accumulateLocal(micro, micro.length - 1, 1 / globalBatch);
    // The last bucket (the stem's parameters) is handed over after afterBackward, which may poison it (fault drills);
    // backward has nothing left to do by then. With accumulation the taps add to the earlier micro-batches' sum.
    this.computeMicro(micro, micro.length - 1, 1 / globalBatch, res, (p) => {
      const complete = fill.arrived(p);
      if (complete >= 0 && complete !== last) handOver(complete);
    });
    const backwardEnd = performance.now();
    hooks?.afterBackward?.(grad);
    handOver(last);

    const waitStart = clockMs();
    await hooks?.beforeUpdate?.();
    timeline?.('commit wait', waitStart, clockMs());
    // Bucket by bucket as the sums arrive, into the spare pair; applied only if all were finite.
    const hyper = { lr, ...this.setup.hyper };
    let finite = true;
    let reduceMs = 0;
    for (const b of buckets.plan.buckets) {
      const waited = performance.now();
      await buckets.reduced(b.index);
      reduceMs += performance.now() - waited;
      const sgdStart = clockMs();
      finite = params.stepRange(hyper, state.step === 0, b.offset, b.count) && finite;
      timeline?.('optimizer', sgdStart, clockMs(), { bucket: b.index });
    }
    const skipped = !params.commit(finite);
    const uploadStart = clockMs();
    this.finish(res.batchStats, skipped);
    timeline?.('upload', uploadStart, clockMs());
    return {
      lossSum: res.lossSum, correct: res.correct, count: res.count, localNonFinite: !localFinite, skipped,
      gradMs: backwardEnd - start, backwardMs: res.backwardMs, reduceMs, stepMs: performance.now() - start,
    };
  }

  /** Forward and backward of micro-batches 0..count-1 into the gradient, without taps: the first writes it, the others add. */
  private accumulateLocal(micro: Batch[], count: number, lossScale: number): Accumulated {
    const sums: Accumulated = { lossSum: 0, correct: 0, count: 0, backwardMs: 0, batchStats: [] };
    for (let i = 0; i < count; i++) this.computeMicro(micro, i, lossScale, sums);
    return sums;
  }

  /** Micro-batch `i` into the gradient (added unless it is the first), its results added to `sums`. */
  private computeMicro(micro: Batch[], i: number, lossScale: number, sums: Accumulated, onGradient?: (param: number) => void): void {
    const { timeline } = this.setup;
    const start = performance.now();
    const startWall = clockMs();
    const r: GradientResult = this.replica.computeGradients(micro[i], lossScale, this.grad, onGradient, i > 0);
    const args = micro.length > 1 ? { micro: i } : undefined;
    timeline?.('forward', startWall, startWall + r.forwardMs, args);
    timeline?.('backward', startWall + r.forwardMs, startWall + (performance.now() - start), args);
    sums.lossSum += r.lossSum;
    sums.correct += r.correct;
    sums.count += r.count;
    sums.backwardMs += r.backwardMs;
    if (r.batchStats) sums.batchStats.push(r.batchStats);
  }

  /** After the update: this replica's BatchNorm statistics and the device weights. */
  private finish(batchStats: Float32Array[], skipped: boolean): void {
    if (!skipped) {
      // This replica's own batch statistics, as PyTorch DDP; the ranks average them at epoch ends.
      // With accumulation, one update per micro-batch's forward, in order (as PyTorch's running statistics).
      for (const stats of batchStats) updateRunningStats(this.state.runningStats, stats);
      // The next forward pass reads the device copy.
      this.replica.setWeights(this.state.params.weights);
    }
    this.state.step++;
  }
}

/** Consecutive steps skipped for a non-finite gradient; --max-bad-steps of them in a row end the run. */
export class BadSteps {
  inARow = 0;

  constructor(readonly limit: number) {}

  /** Counts one step; true once `limit` steps in a row were skipped. */
  note(skipped: boolean): boolean {
    this.inARow = skipped ? this.inARow + 1 : 0;
    return this.inARow >= this.limit;
  }

  /** The error that ends the run, once its checkpoint at `step` is written. */
  abortError(step: number): Error {
    return new Error(`${this.inARow} consecutive steps had non-finite gradients (--max-bad-steps ${this.limit}); ` +
      `checkpoint written at step ${step}: lower --lr or check the data, then --resume`);
  }
}
