// A communication thread, as Horovod's background thread: a worker_thread
// that owns the all-reduce (its ring sockets, the star link or the shared
// region) while the compute thread runs forward and backward.
//
// Why a thread: tfjs-core runs backward as one synchronous call, so the
// compute thread's event loop is blocked for all of it and could not serve a
// socket. The gradient lives in the optimizer's shared memory (SgdBuffers),
// which the thread sees too, so a bucket is reduced where it lies: no copy
// crosses the threads, only a readiness word (Atomics) and small messages.
//
// One bucketed step, in order:
//   1. before forward, `beginBuckets(seq0)` posts the step's buckets: bucket
//      i is reduced with sequence number seq0 + i, strictly in bucket order;
//   2. inside backward, `release(i)` stores the step's token in bucket i's
//      control word and notifies; the thread, waiting with Atomics.waitAsync,
//      starts bucket i's all-reduce once bucket i - 1's is done;
//   3. after backward, `reduced(i)` resolves as each bucket's sum is in
//      place (a `bucket` message), so the optimizer can follow the buckets.
// Any other all-reduce (the running statistics) goes through `allReduceSum`
// in the same order of requests, with a copy through a staging memory when
// its buffer is not the attached one.
//
// A failure in the thread (a bad frame, a dropped link) fails the request
// with the reducer's message and peer, as an AllReduceError; after it, as
// after close, every request fails. close() also ends a bucket wait, so a
// compute thread that failed inside backward leaves nothing waiting.
import { Worker } from 'node:worker_threads';
import { resolveWorkerScript } from '../fs/worker-script.js';
import { AllReduceError } from './errors.js';
import { checkReduceArgs } from './checks.js';
import type { AllReducer } from './reducer.js';
import type { BucketedExchange, BucketPlan } from './buckets.js';
import type { RingEndpointOptions } from './transport/ring-wiring.js';
import type { PeerAddress } from './transport/ws-handshake.js';
import type { ReducerSpec } from './reducer-factory.js';
import { SYNC, type CommReply, type CommRequest, type CommSpan } from './comm-thread-types.js';

type Pending = { resolve: (reply: CommReply & { op: 'done' }) => void; reject: (err: Error) => void };

/** Bucket i's state in a step, as the compute thread sees it. */
interface BucketWait {
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: Error) => void;
}

type DistributiveOmit<T, K extends keyof T> = T extends unknown ? Omit<T, K> : never;

export class CommThread implements AllReducer {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private memory: SharedArrayBuffer | null = null;
  private staging: Float32Array | null = null;
  private plan: BucketPlan | null = null;
  private control: Int32Array | null = null;
  private token = 0;
  private step: { id: number; waits: BucketWait[] } | null = null;
  private spans: CommSpan[] = [];
  private failure: Error | null = null;
  private exited = false;
  private closing: Promise<void> | null = null;
  /** The blocking channel (prepareSync): its words and floats. */
  private sync: { control: Int32Array; data: Float32Array } | null = null;
  /** Blocking all-reduces made in the bucketed step under way; each release records how many came before it. */
  private stepSyncs = 0;

  private constructor(private readonly worker: Worker, private readonly keepSpans: boolean) {
    worker.on('message', (reply: CommReply) => this.onReply(reply));
    worker.on('error', (err) => this.failAll(new AllReduceError(`the communication thread crashed: ${err.message}`)));
    worker.on('exit', (code) => {
      this.exited = true;
      this.failAll(new AllReduceError(`the communication thread exited (code ${code})`));
    });
  }

  /** A new thread; `spans`: keep its timeline spans for takeSpans (--timeline), else they are dropped. */
  static start(options: { spans?: boolean } = {}): CommThread {
    return new CommThread(new Worker(resolveWorkerScript(import.meta.url, './comm-thread-entry.js')), options.spans ?? false);
  }

  /** Opens the ring endpoint in the thread; resolves with its address (for `ready`). */
  async listenRing(endpoint: RingEndpointOptions): Promise<PeerAddress> {
    const reply = await this.request({ op: 'listen', endpoint });
    return reply.address!;
  }

  /** Builds the reducer in the thread once the coordinator has wired the group. */
  async connect(spec: ReducerSpec): Promise<void> {
    await this.request({ op: 'connect', spec });
  }

  /** Shares the memory the gradient lives in (once): buffers of it are reduced in place. */
  async attach(memory: SharedArrayBuffer): Promise<void> {
    await this.request({ op: 'attach', memory });
    this.memory = memory;
  }

  /** Sets the step's buckets; every rank must use the same plan. */
  useBuckets(plan: BucketPlan): void {
    this.plan = plan;
    // Per bucket: its release token, then how many blocking all-reduces came before its release.
    this.control = new Int32Array(new SharedArrayBuffer(8 * Math.max(1, plan.buckets.length)));
  }

  /** Opens the blocking channel for vectors of up to `maxElements` floats (SyncBatchNorm's). */
  async prepareSync(maxElements: number): Promise<void> {
    const control = new SharedArrayBuffer(SYNC.BYTES);
    const data = new SharedArrayBuffer(4 * Math.max(1, maxElements));
    await this.request({ op: 'sync-setup', control, data });
    this.sync = { control: new Int32Array(control), data: new Float32Array(data) };
  }

  /**
   * Sums `buf` over the ranks in place and returns only then, blocking this
   * thread (Atomics.wait): for inside forward and backward, which are
   * synchronous. In a bucketed step it takes its place among the buckets as
   * the communication thread's loop decides (comm-thread-entry.ts).
   */
  syncAllReduce(buf: Float32Array, seq: number, timeoutMs = 600_000): void {
    const channel = this.sync;
    if (channel === null) throw new Error('internal: prepareSync before a blocking all-reduce');
    if (this.failure) throw this.failure;
    const { control, data } = channel;
    if (buf.length > data.length) throw new Error(`internal: a blocking all-reduce of ${buf.length} floats; the channel holds ${data.length}`);
    data.set(buf);
    Atomics.store(control, SYNC.LENGTH, buf.length);
    Atomics.store(control, SYNC.SEQ, seq);
    Atomics.store(control, SYNC.STATE, SYNC.PENDING);
    this.stepSyncs++;
    this.post({ op: 'sync', id: this.nextId++ });
    // This thread's event loop is blocked: nothing but the channel's words can answer.
    if (Atomics.wait(control, SYNC.STATE, SYNC.PENDING, timeoutMs) === 'timed-out') {
      this.failure ??= new AllReduceError(`a blocking all-reduce (seq ${seq}) got no answer from the communication thread in ${timeoutMs / 1000} s`);
      throw this.failure;
    }
    if (Atomics.load(control, SYNC.STATE) === SYNC.FAILED) {
      const text = new TextDecoder().decode(new Uint8Array(control.buffer, SYNC.ERROR_AT, Atomics.load(control, SYNC.ERROR_BYTES)).slice());
      this.failure ??= new AllReduceError(text);
      throw new AllReduceError(text);
    }
    buf.set(data.subarray(0, buf.length));
  }

  async allReduceSum(buf: Float32Array, seq: number): Promise<void> {
    checkReduceArgs(buf, seq);
    if (buf.buffer === this.memory) {
      const reply = await this.request({ op: 'reduce', seq, buffer: 'memory', offset: buf.byteOffset / 4, count: buf.length });
      this.keep(reply.spans);
      return;
    }
    const staging = await this.stagingFor(buf.length);
    staging.set(buf);
    const reply = await this.request({ op: 'reduce', seq, buffer: 'staging', offset: 0, count: buf.length });
    this.keep(reply.spans);
    buf.set(staging.subarray(0, buf.length));
  }

  /**
   * Step 1: arms this step's buckets, reduced with sequence numbers seq0,
   * seq0 + 1, ...; the buckets are ranges of the attached memory.
   */
  beginBuckets(seq0: number, gradOffset: number): void {
    const plan = this.planOrThrow();
    if (this.step !== null) throw new Error('internal: a bucketed step began before the previous one was collected');
    if (this.failure) throw this.failure;
    this.token = (this.token % 0x7fff_ffff) + 1;
    this.stepSyncs = 0;
    const waits = plan.buckets.map(() => {
      const w = {} as BucketWait;
      w.promise = new Promise<void>((resolve, reject) => Object.assign(w, { resolve, reject }));
      w.promise.catch(() => {}); // rejections are seen by whoever awaits `reduced`
      return w;
    });
    const id = this.nextId++;
    this.step = { id, waits };
    this.post({
      op: 'buckets', id, seq0, token: this.token, control: this.control!.buffer as SharedArrayBuffer,
      buckets: plan.buckets.map((b) => ({ offset: gradOffset + b.offset, count: b.count })),
    });
    // The step's completion is its last bucket; its `done` only tells the thread is free.
    this.pending.set(id, { resolve: () => {}, reject: (err) => waits.forEach((w) => w.reject(err)) });
  }

  /** Step 2: bucket `index`'s gradient is in place (callable from inside backward: no await). */
  release(index: number): void {
    const control = this.control!;
    Atomics.store(control, this.plan!.buckets.length + index, this.stepSyncs);
    Atomics.store(control, index, this.token);
    Atomics.notify(control, index);
  }

  /** Step 3: resolves once bucket `index`'s sum is in place; the last one ends the step. */
  async reduced(index: number): Promise<void> {
    const step = this.step;
    if (step === null) throw new Error('internal: no bucketed step is under way');
    await step.waits[index].promise;
    if (index === step.waits.length - 1) this.step = null;
  }

  /**
   * The step's view of this thread: buckets of `grad` (a view of the
   * attached memory) under `plan`, with sequence numbers from `takeSeqs`,
   * the caller's one counter of all-reduces (it hands out `count` at once).
   */
  bucketedExchange(plan: BucketPlan, grad: Float32Array, takeSeqs: (count: number) => number): BucketedExchange {
    if (grad.buffer !== this.memory) throw new Error('internal: the bucketed gradient must be a view of the attached memory');
    if (plan.elements !== grad.length) throw new Error(`internal: the bucket plan covers ${plan.elements} floats, the gradient has ${grad.length}`);
    this.useBuckets(plan);
    return {
      plan,
      begin: () => this.beginBuckets(takeSeqs(plan.buckets.length), grad.byteOffset / 4),
      release: (index) => this.release(index),
      reduced: (index) => this.reduced(index),
    };
  }

  private keep(spans: CommSpan[] | undefined): void {
    if (this.keepSpans && spans) this.spans.push(...spans);
  }

  /** The thread's spans since the last call (its timeline track); empty unless started with `spans`. */
  takeSpans(): CommSpan[] {
    const spans = this.spans;
    this.spans = [];
    return spans;
  }

  /** Closes the reducer's links (failing any pending all-reduce) and ends the thread; safe to call twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      // A thread that is gone already has nothing to close.
      if (!this.exited) await this.request({ op: 'close' }, true).catch(() => {});
      this.failAll(new AllReduceError('the communication thread is closed'));
      await this.worker.terminate();
    })();
    return this.closing;
  }

  private async stagingFor(length: number): Promise<Float32Array> {
    if (this.staging === null || this.staging.length < length) {
      const staging = new SharedArrayBuffer(Math.max(length, 1024) * 4);
      await this.request({ op: 'staging', staging });
      this.staging = new Float32Array(staging);
    }
    return this.staging;
  }

  private planOrThrow(): BucketPlan {
    if (this.plan === null) throw new Error('internal: useBuckets before a bucketed step');
    return this.plan;
  }

  private post(req: CommRequest): void {
    this.worker.postMessage(req);
  }

  private request(req: DistributiveOmit<CommRequest, 'id'>, evenAfterFailure = false): Promise<CommReply & { op: 'done' }> {
    if (this.failure && !evenAfterFailure) return Promise.reject(this.failure);
    if (this.exited) return Promise.reject(new AllReduceError('the communication thread has exited'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.post({ ...req, id } as CommRequest);
    });
  }

  private onReply(reply: CommReply): void {
    if (reply.op === 'bucket') {
      this.keep(reply.spans);
      const step = this.step;
      if (step !== null && step.id === reply.id) step.waits[reply.index].resolve();
      return;
    }
    const pending = this.pending.get(reply.id);
    if (!pending) return;
    this.pending.delete(reply.id);
    if (reply.op === 'done') {
      pending.resolve(reply);
      return;
    }
    const err = new AllReduceError(reply.message, reply.peer);
    // The thread's reducer is unusable after a failure (ReduceGuard): so is this.
    this.failure ??= err;
    pending.reject(err);
  }

  private failAll(err: Error): void {
    this.failure ??= err;
    for (const [, p] of this.pending) p.reject(err);
    this.pending.clear();
    this.step?.waits.forEach((w) => w.reject(err));
  }
}
