// One rank of scripts/bench-step: the real step machinery (TrainStep, the
// optimizer's shared buffers, buckets, a communication thread with a
// WebSocket ring) under emulated GPU compute. Only forward and backward are
// emulated: the thread sleeps (Atomics.wait, which holds no core, as a
// thread waiting on a GPU) until each parameter's gradient would be ready
// (model/flops.ts), then copies real values into it, as a device-to-host
// read would, and hands it over.
//
// It runs as a worker thread (workerData is its RankTask, parentPort its
// channel) or as a child process with an IPC channel, where the driver
// sends the RankTask first and then the RankPeer, and the rank answers with
// process.send. The process is how a rank runs inside a network namespace:
//
//   ip netns exec tfddp-h1 node dist/scripts/bench-step-rank.js   (spawned with stdio [..., 'ipc'])
//
// The IPC channel survives `ip netns exec`, which execs node with the
// inherited descriptor and NODE_CHANNEL_FD.
import { parentPort, workerData } from 'node:worker_threads';
import { CommThread } from '../src/common/allreduce/comm-thread.js';
import { planBuckets } from '../src/common/allreduce/buckets.js';
import { Timeline, type TraceEvent } from '../src/common/io/timeline.js';
import { gradientReleaseSchedule } from '../src/common/model/flops.js';
import { buildModelSpec, type ModelName, type ModelSpec } from '../src/common/model/spec.js';
import type { Batch, GradientResult } from '../src/common/model/replica.js';
import { SgdBuffers } from '../src/common/optim/sgd-buffers.js';
import { TrainStep, type GradientExchange, type OptimizerState } from '../src/common/training/step.js';
import type { PeerAddress } from '../src/common/allreduce/transport/ws-handshake.js';
import type { WireName } from '../src/common/allreduce/wire-format.js';

export interface RankTask {
  rank: number;
  worldSize: number;
  tag: number;
  /** Where the ring endpoint listens (default 127.0.0.1): the namespace's address under --link netns. */
  host?: string;
  model: ModelName;
  width: number;
  batch: number;
  computeMs: number;
  wire: WireName;
  bucketMb: number;
  overlap: boolean;
  steps: number;
  warmup: number;
  timeline: boolean;
}

export type RankMessage =
  | { kind: 'address'; address: PeerAddress }
  | { kind: 'result'; rank: number; stepMs: number[]; exposedMs: number[]; events: TraceEvent[] }
  | { kind: 'error'; rank: number; message: string };

/** What the rank is told once every rank listens: its predecessor's address. */
export interface RankPeer {
  peer: PeerAddress;
}

/** What the driver sends a rank process, in order: its task, then its peer. */
export type RankCommand = { task: RankTask } | RankPeer;

const sleeper = new Int32Array(new SharedArrayBuffer(4));
/** Blocks this thread until `at` (performance.now() ms) without using a core. */
function sleepUntil(at: number): void {
  const left = at - performance.now();
  if (left > 0) Atomics.wait(sleeper, 0, 0, left);
}

/** Forward and backward as a GPU would time them; the gradient is a fixed pattern of this rank's. */
class EmulatedReplica {
  private readonly order: number[];
  private readonly schedule: ReturnType<typeof gradientReleaseSchedule>;

  constructor(private readonly spec: ModelSpec, batch: number, computeMs: number, private readonly pattern: Float32Array) {
    this.schedule = gradientReleaseSchedule(spec, batch, computeMs);
    const release = this.schedule.releaseMs;
    this.order = spec.params.map((_, i) => i).sort((a, b) => release[a] - release[b] || b - a);
  }

  computeGradients(batch: Batch, _scale: number, gradOut: Float32Array, onGradient?: (param: number) => void): GradientResult {
    const start = performance.now();
    const { releaseMs, forwardMs } = this.schedule;
    sleepUntil(start + forwardMs);
    for (const p of this.order) {
      sleepUntil(start + releaseMs[p]);
      if (onGradient) {
        const { offset, size } = this.spec.params[p];
        gradOut.set(this.pattern.subarray(offset, offset + size), offset);
        onGradient(p);
      }
    }
    // The one-shot step reads every gradient once backward is done.
    if (!onGradient) gradOut.set(this.pattern);
    return { lossSum: 0, correct: 0, count: batch.count, batchStats: null, backwardMs: performance.now() - start, forwardMs };
  }

  setWeights(): void {
    // The upload to a GPU is not emulated (a host-to-device copy, a few ms for ResNet50).
  }
}

async function run(task: RankTask, post: (m: RankMessage) => void, peer: Promise<RankPeer>): Promise<void> {
  const spec = buildModelSpec({ name: task.model, width: task.width, numClasses: 10, inChannels: 3, norm: 'batch' });
  const n = spec.paramCount;
  // Small, rank-dependent values: sums stay finite for any step count.
  const pattern = Float32Array.from({ length: n }, (_, i) => Math.fround(((i * 2654435761 + task.rank * 40503) % 2001 - 1000) * 1e-7));
  const params = new SgdBuffers(Float32Array.from({ length: n }, (_, i) => ((i % 997) - 498) * 1e-4), new Float32Array(n));
  const state: OptimizerState = { params, runningStats: new Float32Array(0), step: 0 };
  const timeline = task.timeline ? new Timeline(task.rank) : null;
  let comm: CommThread | null = null;
  let exchange: GradientExchange | undefined;
  if (task.worldSize > 1) {
    comm = CommThread.start({ spans: task.timeline });
    post({ kind: 'address', address: await comm.listenRing({ rank: task.rank, worldSize: task.worldSize, tag: task.tag, host: task.host }) });
    const { peer: prev } = await peer;
    await comm.connect({ kind: 'ring', peer: prev, rank: task.rank, worldSize: task.worldSize, tag: task.tag, wire: task.wire });
    await comm.attach(params.memory);
    let seq = 0;
    const c = comm;
    exchange = {
      allReduce: (g) => c.allReduceSum(g, seq++),
      buckets: task.overlap ? c.bucketedExchange(planBuckets(spec.params, task.bucketMb), params.grad, (k) => (seq += k) - k) : undefined,
    };
  }
  const step = new TrainStep(new EmulatedReplica(spec, task.batch, task.computeMs, pattern), state, {
    hyper: { momentum: 0.9, weightDecay: 5e-4 },
    exchange,
    timeline: timeline ? (name, s, e, args) => timeline.span('compute', name, s, e, args) : undefined,
  });
  const batch: Batch = { x: new Float32Array(0), y: new Int32Array(0), count: task.batch };
  const stepMs: number[] = [];
  const exposedMs: number[] = [];
  try {
    for (let s = 0; s < task.warmup + task.steps; s++) {
      const r = await step.run(batch, task.batch * task.worldSize, 0.01);
      for (const sp of comm?.takeSpans() ?? []) timeline?.span('communication', sp.name, sp.startMs, sp.endMs, sp.args);
      if (s >= task.warmup) {
        stepMs.push(r.stepMs);
        exposedMs.push(r.reduceMs);
      }
    }
  } finally {
    await comm?.close();
  }
  post({ kind: 'result', rank: task.rank, stepMs, exposedMs, events: timeline?.drain() ?? [] });
}

const failure = (task: RankTask, err: unknown): RankMessage =>
  ({ kind: 'error', rank: task.rank, message: err instanceof Error ? err.message : String(err) });

if (parentPort && workerData) {
  const port = parentPort;
  const task = workerData as RankTask;
  const peer = new Promise<RankPeer>((resolve) => port.once('message', (m: RankPeer) => resolve(m)));
  run(task, (m) => port.postMessage(m), peer).catch((err: unknown) => port.postMessage(failure(task, err)));
} else if (process.send) {
  // Process mode: the first message is the task, the second the peer. The
  // channel is let go once the answer is sent, so the process ends on its
  // own; the driver gone before that (its end closed) ends it at once.
  const pending: Promise<void>[] = [];
  const send = (m: RankMessage): void => void pending.push(new Promise((resolve) => process.send!(m, () => resolve())));
  let peerOf: (p: RankPeer) => void = () => {};
  const peer = new Promise<RankPeer>((resolve) => (peerOf = resolve));
  let answered = false;
  process.on('message', (m: RankCommand) => {
    if (!('task' in m)) return peerOf(m);
    const task = m.task;
    run(task, send, peer)
      .catch((err: unknown) => {
        send(failure(task, err));
        process.exitCode = 1;
      })
      .finally(async () => {
        await Promise.all(pending);
        answered = true;
        process.disconnect();
      });
  });
  process.once('disconnect', () => {
    if (!answered) process.exit(1);
  });
}
