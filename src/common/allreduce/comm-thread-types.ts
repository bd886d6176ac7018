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
  /** The blocking channel (SyncChannel's words and floats), shared once. */
  | { op: 'sync-setup'; id: number; control: SharedArrayBuffer; data: SharedArrayBuffer }
  /** A blocking all-reduce waits in the channel; its result goes back through the channel's words, not a reply. */
  | { op: 'sync'; id: number }
  | { op: 'close'; id: number };

/**
 * The blocking channel's words (Int32 indexes): the compute thread writes
 * LENGTH and SEQ, sets STATE to PENDING, posts `sync` and waits on STATE;
 * the thread sets DONE (the sum is in the floats) or FAILED (ERROR_BYTES of
 * UTF-8 from ERROR_AT are the message).
 */
export const SYNC = { STATE: 0, LENGTH: 1, SEQ: 2, ERROR_BYTES: 3, IDLE: 0, PENDING: 1, DONE: 2, FAILED: 3, ERROR_AT: 64, BYTES: 4096 } as const;

export type CommReply =
  | { op: 'done'; id: number; address?: PeerAddress; spans?: CommSpan[] }
  | { op: 'bucket'; id: number; index: number; spans: CommSpan[] }
  | { op: 'failed'; id: number; message: string; peer?: string };
