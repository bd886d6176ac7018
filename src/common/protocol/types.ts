// Messages of the control channel between the coordinator and its workers
// (one WebSocket per worker, msgpack-encoded binary messages). The order and
// the rules of who waits for whom are in docs/PROTOCOL.md. Gradients never
// travel here: they go through the all-reduce links (src/common/allreduce).

import type { WireName } from '../allreduce/wire-format.js';
import type { TrainConfig } from '../training/config.js';
import type { PackedEvents } from '../io/timeline.js';

/** Bumped on any incompatible change to the messages below. */
export const PROTOCOL_VERSION = 2;

/** Environment variable holding the shared token, read by the coordinator and by workers. */
export const TOKEN_ENV = 'TFJS_DDP_TOKEN';

/** HTTP path of the control WebSocket on the coordinator's port (the dashboard has the others). */
export const CONTROL_PATH = '/ddp';

export interface HostPort {
  host: string;
  port: number;
}

export type AllReduceKind = 'ring' | 'star';

// ---- worker -> coordinator ------------------------------------------------

/** First message of every worker. */
export interface HelloMessage {
  type: 'hello';
  protocol: number;
  token: string;
  /** Backend the worker was told to use (its --backend), or null to follow the run's config. */
  backend: string | null;
}

/** Sent once the worker has its data, model and all-reduce endpoint ready. */
export interface ReadyMessage {
  type: 'ready';
  /** Where the next rank must connect (ring); null for the star or a world of one. */
  ringAddress: HostPort | null;
  /** The backend actually in use, for the coordinator's log. */
  backend: string;
  /**
   * Optional (absent before it was added): the id of the shared-memory region
   * this worker shares with the coordinator's other local threads, or null.
   * When every member reports the coordinator's own region, `connect` says
   * `reducer: 'shared-memory'`.
   */
  localRegion?: string | null;
  /**
   * Optional (absent before it was added): true when this worker can join a
   * hierarchical all-reduce (its ring endpoint admits any rank of the group,
   * and it knows `connect.reducer: 'hierarchical'`). The coordinator wires a
   * hierarchical group only when every member says so.
   */
  hierarchical?: boolean | null;
}

/** One optimizer step done; the sums are over this rank's shard only. */
export interface StepMessage {
  type: 'step';
  step: number;
  lossSum: number;
  correct: number;
  count: number;
  /** This rank's own gradient had a NaN or Inf (before the all-reduce). */
  localNonFinite: boolean;
  /** The summed gradient was not finite, so every rank skipped the update (they see the same sum). */
  skipped: boolean;
  /** Checksum of weights and momentum after this step (see `stateChecksum`), on the steps the coordinator asked for; else null. */
  checksum: string | null;
  /**
   * Milliseconds this step waited for its batch, spent in forward+backward,
   * in the gradient all-reduce, and in the whole step (wait excluded; the
   * rest of it is the optimizer and the weight upload).
   */
  dataMs: number;
  gradMs: number;
  reduceMs: number;
  stepMs: number;
  /** tf.memory() of this worker after the step: live tensors and their bytes (a leak shows as growth). */
  tensors: number;
  tensorBytes: number;
  /**
   * Optional (absent before it was added): with `config.timeline`, this
   * step's trace spans (compute and communication tracks), packed
   * (io/timeline.ts packEvents); the coordinator writes them into one file.
   */
  timeline?: PackedEvents | null;
}

/** End-of-epoch evaluation of this rank's shard of the test set. */
export interface EvalMessage {
  type: 'eval';
  epoch: number;
  lossSum: number;
  correct: number;
  count: number;
}

/** Reply to `init`: whether the worker already holds the announced dataset (its cache). */
export interface DataStatusMessage {
  type: 'data-status';
  cached: boolean;
}

/**
 * Reply to `snapshot`, from every rank: its step and the checksum of its
 * weights, momentum and (averaged) BatchNorm statistics. Rank 0 also sends the state
 * itself, which is identical on every rank.
 */
export interface StateMessage {
  type: 'state';
  step: number;
  checksum: string;
  weights: Float32Array | null;
  momentum: Float32Array | null;
  runningStats: Float32Array | null;
}

/**
 * This rank's all-reduce failed (a peer vanished or sent a bad frame). The
 * rank stays connected and waits for `halt`: the coordinator decides who is
 * lost.
 */
export interface ReduceFailedMessage {
  type: 'reduce-failed';
  message: string;
}

/**
 * Reply to `halt`: the rank has stopped, rolled back to the committed step
 * and closed its all-reduce links. `checksum` covers weights and momentum
 * (identical on every survivor); the running statistics differ per replica
 * and are averaged by the coordinator.
 */
export interface HaltedMessage {
  type: 'halted';
  step: number;
  checksum: string;
  runningStats: Float32Array;
}

/** Sent every `init.heartbeatMs` while the worker's event loop is free, so a hung or cut-off worker is noticed. */
export interface HeartbeatMessage {
  type: 'heartbeat';
}

/**
 * The worker failed; it closes the connection right after. A step that
 * throws is reported at once, before the worker closes its all-reduce links,
 * so the coordinator hears the real error before its neighbours' failures.
 */
export interface ErrorMessage {
  type: 'error';
  message: string;
  /**
   * The (1-based) optimizer step it was working on (waiting for its batch,
   * computing, exchanging or applying it), or null when it failed outside a
   * step (joining, receiving the data, evaluating, snapshotting). Optional
   * on the wire: an older worker sends none (read as null).
   */
  step: number | null;
}

// ---- coordinator -> worker ------------------------------------------------

export interface RefusedMessage {
  type: 'refused';
  reason: string;
}

export interface InitMessage {
  type: 'init';
  rank: number;
  worldSize: number;
  config: TrainConfig;
  /** sha256 of the canonical JSON of `config`: the worker checks it arrived intact. */
  configHash: string;
  /** sha256 of the dataset blob (src/common/data/dataset-cache.ts) and its size in bytes. */
  datasetHash: string;
  datasetBytes: number;
  /**
   * The state to start from: fresh initial weights, a checkpoint's when
   * resuming, or the last committed step's in a re-formed group. A survivor
   * of the previous group already holds the weights and momentum: it gets
   * empty ones (`stateIncluded: false`) and checks its own against
   * `stateChecksum`. The running statistics (averaged over the survivors)
   * are always sent.
   */
  weights: Float32Array;
  momentum: Float32Array;
  runningStats: Float32Array;
  stateIncluded: boolean;
  /** Without the state: the checksum of weights and momentum (see `halted`) this worker must hold; else empty. */
  stateChecksum: string;
  /** Optimizer steps already taken (0 for a fresh run: the first step initialises the momentum). */
  step: number;
  allreduce: AllReduceKind;
  /**
   * The ring's wire format (`--wire`); absent (decoded as null) means fp32,
   * so a coordinator that predates the field is read as fp32. bf16/fp16 are
   * compressed.
   */
  wire?: WireName | null;
  /** Tag of this group's all-reduce frames, fresh for every group, so frames from another run or a halted group are rejected. */
  tag: number;
  /** Workers include a checksum in `step` every this many steps. */
  checksumEvery: number;
  /** How often the worker sends `heartbeat`. */
  heartbeatMs: number;
}

/** The dataset blob, sent only to workers that reported `cached: false`. */
export interface DatasetMessage {
  type: 'dataset';
  hash: string;
  blob: Uint8Array;
}

/** After every rank is ready: whom to connect to for the all-reduce. */
export interface ConnectMessage {
  type: 'connect';
  /** Ring: the previous rank's address. Star: the hub's address. Null for a world of one. */
  peer: HostPort | null;
  /**
   * Optional (absent before it was added): 'shared-memory' when every member
   * is a thread of the coordinator's process sharing its region; the members
   * then all-reduce through it and ignore `peer`. Null or absent: `peer`.
   */
  reducer?: string | null;
  /**
   * With `reducer: 'hierarchical'` (a group that mixes the coordinator's
   * threads with other workers; common/allreduce/hierarchical.ts): the group
   * ranks that share the region, in rank order (the first is the leader),
   * and the ranks of the ring (the leader and every other member), in rank
   * order. A ring member's `peer` is its predecessor's in the ring; the
   * other local members get a null `peer`. Absent (null) otherwise.
   */
  localRanks?: number[] | null;
  ringRanks?: number[] | null;
}

/** Train global batches `from` .. `from + steps - 1` of `epoch`, one `step` report each. */
export interface EpochMessage {
  type: 'epoch';
  epoch: number;
  from: number;
  steps: number;
}

/** Average the BatchNorm statistics across ranks and reply with `state` (checkpoints, the end of the run). */
export interface SnapshotMessage {
  type: 'snapshot';
}

/**
 * Every rank has reported step `step`, so it is part of the run for good. A
 * rank applies step s + 1 only after `commit {step: s}`: no rank is ever more
 * than one step past the last commit, which is what makes `halt` possible.
 */
export interface CommitMessage {
  type: 'commit';
  step: number;
}

/** Average the BatchNorm statistics across ranks, evaluate this rank's shard of the test set, reply `eval`. */
export interface EvaluateMessage {
  type: 'evaluate';
  epoch: number;
}

/**
 * Membership is changing (a rank was lost, or a new worker joins): stop
 * whatever is running, roll back to the committed step `step`, close the
 * all-reduce links and reply `halted`; then wait for a new `init` (the next
 * group), `snapshot` (the coordinator wants this rank's state) or `done`.
 */
export interface HaltMessage {
  type: 'halt';
  step: number;
}

/** Checksums agree; the worker may close and exit 0. */
export interface DoneMessage {
  type: 'done';
}

export type WorkerMessage =
  | HelloMessage | DataStatusMessage | ReadyMessage | StepMessage | EvalMessage | StateMessage | HeartbeatMessage | ErrorMessage
  | ReduceFailedMessage | HaltedMessage;
export type CoordinatorMessage =
  | RefusedMessage | InitMessage | DatasetMessage | ConnectMessage | EpochMessage | SnapshotMessage | DoneMessage
  | CommitMessage | EvaluateMessage | HaltMessage;
export type ControlMessage = WorkerMessage | CoordinatorMessage;
export type MessageOfType<T extends ControlMessage['type']> = Extract<ControlMessage, { type: T }>;
