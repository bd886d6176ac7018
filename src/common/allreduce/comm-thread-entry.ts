// The communication thread's body (see comm-thread.ts): it owns the
// all-reduce's sockets (or its shared region) and runs every all-reduce of
// its compute thread, strictly in request order. A bucketed step waits for
// each bucket's readiness word with Atomics.waitAsync, so the thread's event
// loop keeps serving the sockets while the compute thread is inside backward.
import { parentPort } from 'node:worker_threads';
import { AllReduceError, errorMessage } from './errors.js';
import { buildReducer } from './reducer-factory.js';
import { waitAsync } from './shared-memory.js';
import { clockMs } from '../io/timeline.js';
import { RingEndpoint } from './transport/ring-wiring.js';
import type { AllReducer } from './reducer.js';
import { SYNC, type CommReply, type CommRequest, type CommSpan } from './comm-thread-types.js';


class CommThreadBody {
  private endpoint: RingEndpoint | null = null;
  private reducer: AllReducer | null = null;
  private memory: SharedArrayBuffer | null = null;
  private staging: SharedArrayBuffer | null = null;
  /** Requests run one after another, as the all-reduce sequence demands. */
  private queue: Promise<void> = Promise.resolve();
  private closed = false;
  /** Wakes a bucket wait when the thread closes or a blocking all-reduce arrives (waitAsync has no other way out). */
  private readonly wakers = new Set<() => void>();
  private sync: { control: Int32Array; data: Float32Array } | null = null;
  /** A blocking all-reduce arrived during a bucketed step and waits for the bucket loop to run it (see bucketedStep). */
  private syncWaiting = false;
  /** Between a `buckets` request's arrival and its step's end: blocking all-reduces belong to that step's loop. */
  private stepArmed = false;

  constructor(private readonly post: (reply: CommReply) => void) {}

  receive(req: CommRequest): void {
    // close jumps the queue: it must end a reduce that waits forever on a lost peer.
    if (req.op === 'close') {
      void this.close().then(() => this.post({ op: 'done', id: req.id }));
      return;
    }
    if (req.op === 'sync' && this.stepArmed) {
      // The compute thread is blocked inside forward or backward: the bucket loop runs it in its place in the order.
      this.syncWaiting = true;
      for (const wake of this.wakers) wake();
      return;
    }
    if (req.op === 'buckets') this.stepArmed = true;
    this.queue = this.queue.then(() => this.handle(req)).catch((err: unknown) => {
      this.post({ op: 'failed', id: req.id, message: errorMessage(err), ...(err instanceof AllReduceError && err.peer ? { peer: err.peer } : {}) });
    });
  }

  private async handle(req: Exclude<CommRequest, { op: 'close' }>): Promise<void> {
    if (this.closed) throw new AllReduceError('the communication thread is closed');
    switch (req.op) {
      case 'listen':
        this.endpoint = await RingEndpoint.listen(req.endpoint);
        this.post({ op: 'done', id: req.id, address: this.endpoint.address });
        return;
      case 'connect':
        this.reducer = await buildReducer(req.spec, this.endpoint);
        this.post({ op: 'done', id: req.id });
        return;
      case 'attach':
        this.memory = req.memory;
        this.post({ op: 'done', id: req.id });
        return;
      case 'staging':
        this.staging = req.staging;
        this.post({ op: 'done', id: req.id });
        return;
      case 'reduce': {
        const memory = req.buffer === 'memory' ? this.memory : this.staging;
        if (memory === null) throw new Error(`internal: no ${req.buffer} buffer attached to the communication thread`);
        const startMs = clockMs();
        await this.reducerOrThrow().allReduceSum(new Float32Array(memory, req.offset * 4, req.count), req.seq);
        const spans: CommSpan[] = [{ name: 'allreduce', startMs, endMs: clockMs(), args: { seq: req.seq, elements: req.count } }];
        this.post({ op: 'done', id: req.id, spans });
        return;
      }
      case 'buckets':
        try {
          await this.bucketedStep(req);
        } finally {
          this.stepArmed = false;
        }
        // One that arrived after the last bucket began (none does today: the last bucket follows backward).
        if (this.syncWaiting) await this.runSync();
        this.post({ op: 'done', id: req.id });
        return;
      case 'sync-setup':
        this.sync = { control: new Int32Array(req.control), data: new Float32Array(req.data) };
        this.post({ op: 'done', id: req.id });
        return;
      case 'sync':
        await this.runSync();
    }
  }

  /** The blocking all-reduce waiting in the channel; its outcome goes back through the channel's words. */
  private async runSync(): Promise<void> {
    this.syncWaiting = false;
    const channel = this.sync;
    if (channel === null) throw new Error('internal: a blocking all-reduce before sync-setup');
    const { control, data } = channel;
    const seq = Atomics.load(control, SYNC.SEQ);
    try {
      await this.reducerOrThrow().allReduceSum(data.subarray(0, Atomics.load(control, SYNC.LENGTH)), seq);
      Atomics.store(control, SYNC.STATE, SYNC.DONE);
    } catch (err) {
      const text = new TextEncoder().encode(errorMessage(err)).subarray(0, SYNC.BYTES - SYNC.ERROR_AT);
      new Uint8Array(control.buffer, SYNC.ERROR_AT, text.length).set(text);
      Atomics.store(control, SYNC.ERROR_BYTES, text.length);
      Atomics.store(control, SYNC.STATE, SYNC.FAILED);
      throw err;
    } finally {
      Atomics.notify(control, SYNC.STATE);
    }
  }

  private async bucketedStep(req: Extract<CommRequest, { op: 'buckets' }>): Promise<void> {
    const memory = this.memory;
    if (memory === null) throw new Error('internal: no gradient memory attached to the communication thread');
    const control = new Int32Array(req.control);
    const reducer = this.reducerOrThrow();
    const count = req.buckets.length;
    // Blocking all-reduces (SyncBatchNorm) come from inside forward and backward, between bucket releases.
    // Every rank must run them in the same place among the buckets, whatever the timing: the one before
    // bucket i's all-reduce are those the compute thread made before it released bucket i (control[count + i]
    // counts them at the release). A bucket released earlier waits for nothing later, so nothing deadlocks.
    let syncsRun = 0;
    for (const [index, b] of req.buckets.entries()) {
      for (;;) {
        if (this.closed) throw new AllReduceError('the communication thread was closed while it waited for a gradient bucket');
        const released = Atomics.load(control, index) === req.token;
        const before = released ? Atomics.load(control, count + index) : Infinity;
        if (this.syncWaiting && syncsRun < before) {
          await this.runSync();
          syncsRun++;
          continue;
        }
        if (released && syncsRun >= before) break;
        // Released, but a blocking all-reduce made before it is still in its message: wait for that.
        if (released) await this.nextWake();
        else await this.waitForBucket(control, index, req.token);
      }
      const startMs = clockMs();
      const seq = req.seq0 + index;
      try {
        await reducer.allReduceSum(new Float32Array(memory, b.offset * 4, b.count), seq);
      } catch (err) {
        const e = err instanceof AllReduceError ? err : new AllReduceError(errorMessage(err));
        throw new AllReduceError(`bucket ${index} of ${req.buckets.length} ([${b.offset}, +${b.count}) of the gradient): ${e.message}`, e.peer, { cause: err });
      }
      this.post({
        op: 'bucket', id: req.id, index,
        spans: [{ name: `allreduce bucket ${index}`, startMs, endMs: clockMs(), args: { bucket: index, seq, elements: b.count, bytes: b.count * 4 } }],
      });
    }
  }

  /** Until the compute thread stores `token` in control[index], a blocking all-reduce arrives, or the thread closes. */
  private async waitForBucket(control: Int32Array, index: number, token: number): Promise<void> {
    for (;;) {
      if (this.closed) throw new AllReduceError('the communication thread was closed while it waited for a gradient bucket');
      const seen = Atomics.load(control, index);
      if (seen === token || this.syncWaiting) return;
      const wait = waitAsync(control, index, seen);
      if (!wait.async) continue;
      let wake!: () => void;
      const woken = new Promise<void>((resolve) => (wake = resolve));
      this.wakers.add(wake);
      try {
        await Promise.race([wait.value, woken]);
      } finally {
        this.wakers.delete(wake);
      }
    }
  }

  /** Until a blocking all-reduce arrives or the thread closes. */
  private async nextWake(): Promise<void> {
    if (this.syncWaiting || this.closed) return;
    await new Promise<void>((resolve) => {
      const wake = () => {
        this.wakers.delete(wake);
        resolve();
      };
      this.wakers.add(wake);
    });
  }

  private reducerOrThrow(): AllReducer {
    if (this.reducer === null) throw new Error('internal: the communication thread has no reducer yet (connect first)');
    return this.reducer;
  }

  private async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const wake of this.wakers) wake();
    await Promise.allSettled([this.endpoint?.close(), this.reducer?.close()]);
  }
}

if (parentPort) {
  const port = parentPort;
  const body = new CommThreadBody((reply) => port.postMessage(reply));
  port.on('message', (req: CommRequest) => body.receive(req));
}
