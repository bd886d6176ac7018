// The communication thread's body (see comm-thread.ts): it owns the
// all-reduce's sockets (or its shared region) and runs every all-reduce of
// its compute thread, strictly in request order. A bucketed step waits for
// each bucket's readiness word with Atomics.waitAsync, so the thread's event
// loop keeps serving the sockets while the compute thread is inside backward.
import { parentPort } from 'node:worker_threads';
import { AllReduceError, errorMessage } from './errors.js';
import { buildReducer } from './reducer-factory.js';
import { RingEndpoint } from './transport/ring-wiring.js';
import type { AllReducer } from './reducer.js';
import type { CommReply, CommRequest, CommSpan } from './comm-thread-types.js';

const wallMs = (): number => performance.timeOrigin + performance.now();

// Node 20's Atomics has waitAsync; TypeScript's es2022 lib does not declare it.
type WaitAsync = (a: Int32Array, index: number, value: number) =>
  { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

class CommThreadBody {
  private endpoint: RingEndpoint | null = null;
  private reducer: AllReducer | null = null;
  private memory: SharedArrayBuffer | null = null;
  private staging: SharedArrayBuffer | null = null;
  /** Requests run one after another, as the all-reduce sequence demands. */
  private queue: Promise<void> = Promise.resolve();
  private closed = false;
  /** Wakes a bucket wait when the thread closes (waitAsync has no other way out). */
  private readonly wakers = new Set<() => void>();

  constructor(private readonly post: (reply: CommReply) => void) {}

  receive(req: CommRequest): void {
    // close jumps the queue: it must end a reduce that waits forever on a lost peer.
    if (req.op === 'close') {
      void this.close().then(() => this.post({ op: 'done', id: req.id }));
      return;
    }
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
        const startMs = wallMs();
        await this.reducerOrThrow().allReduceSum(new Float32Array(memory, req.offset * 4, req.count), req.seq);
        const spans: CommSpan[] = [{ name: 'allreduce', startMs, endMs: wallMs(), args: { seq: req.seq, elements: req.count } }];
        this.post({ op: 'done', id: req.id, spans });
        return;
      }
      case 'buckets':
        await this.bucketedStep(req);
        this.post({ op: 'done', id: req.id });
    }
  }

  private async bucketedStep(req: Extract<CommRequest, { op: 'buckets' }>): Promise<void> {
    const memory = this.memory;
    if (memory === null) throw new Error('internal: no gradient memory attached to the communication thread');
    const control = new Int32Array(req.control);
    const reducer = this.reducerOrThrow();
    for (const [index, b] of req.buckets.entries()) {
      await this.waitForBucket(control, index, req.token);
      const startMs = wallMs();
      const seq = req.seq0 + index;
      try {
        await reducer.allReduceSum(new Float32Array(memory, b.offset * 4, b.count), seq);
      } catch (err) {
        const e = err instanceof AllReduceError ? err : new AllReduceError(errorMessage(err));
        throw new AllReduceError(`bucket ${index} of ${req.buckets.length} ([${b.offset}, +${b.count}) of the gradient): ${e.message}`, e.peer, { cause: err });
      }
      this.post({
        op: 'bucket', id: req.id, index,
        spans: [{ name: `allreduce bucket ${index}`, startMs, endMs: wallMs(), args: { bucket: index, seq, elements: b.count, bytes: b.count * 4 } }],
      });
    }
  }

  /** Until the compute thread stores `token` in control[index] (or the thread closes). */
  private async waitForBucket(control: Int32Array, index: number, token: number): Promise<void> {
    for (;;) {
      if (this.closed) throw new AllReduceError('the communication thread was closed while it waited for a gradient bucket');
      const seen = Atomics.load(control, index);
      if (seen === token) return;
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
