// The messages between a compute thread and its communication thread
// (comm-thread.ts, comm-thread-entry.ts), alone here as piscina keeps its
// message types. Every request carries an id; the thread answers each with
// `done` or `failed` under that id, and a bucketed step answers once per
// bucket (`bucket`), in bucket order.
import type { RingEndpointOptions } from './transport/ring-wiring.js';
import type { PeerAddress } from './transport/ws-handshake.js';
import type { ReducerSpec } from './reducer-factory.js';

/** A span of the communication thread's timeline: wall-clock milliseconds (performance.timeOrigin + now). */
export interface CommSpan {
  name: string;
  startMs: number;
  endMs: number;
  args?: Record<string, number | string>;
}

/** Where a reduce's floats are: the attached gradient memory, or the staging memory (for any other buffer). */
export type CommBuffer = 'memory' | 'staging';

export type CommRequest =
  | { op: 'listen'; id: number; endpoint: RingEndpointOptions }
  | { op: 'connect'; id: number; spec: ReducerSpec }
  /** The memory the gradient lives in (the optimizer's), shared with the thread once. */
  | { op: 'attach'; id: number; memory: SharedArrayBuffer }
  | { op: 'staging'; id: number; staging: SharedArrayBuffer }
  | { op: 'reduce'; id: number; seq: number; buffer: CommBuffer; offset: number; count: number }
  /**
   * A bucketed step: bucket i covers floats [offset, offset + count) of the
   * memory and is all-reduced with sequence number seq0 + i, strictly in
   * order, each once the compute thread has stored `token` in control[i].
   */
  | { op: 'buckets'; id: number; seq0: number; token: number; control: SharedArrayBuffer; buckets: { offset: number; count: number }[] }
  | { op: 'close'; id: number };

export type CommReply =
  | { op: 'done'; id: number; address?: PeerAddress; spans?: CommSpan[] }
  | { op: 'bucket'; id: number; index: number; spans: CommSpan[] }
  | { op: 'failed'; id: number; message: string; peer?: string };
