// All-reduce between replicas that are threads of one process, through one
// shared WebAssembly memory (a SharedArrayBuffer underneath) and Atomics, in
// place of loopback sockets.
//
// The region. The coordinator's process creates it once per pool of local
// worker threads (`createSharedRegion`), sized for the largest vector the run
// reduces, and hands it to every thread in its task (a shared memory in a
// postMessage is shared, not copied). Before wiring a group whose members are
// all its threads it resets the header for that group (`prepareSharedRegion`:
// tag, world size, counters), while every member waits for `connect`. Layout:
//
//   header (4 KiB, Int32): magic, tag, worldSize, abort, capacity (ranks), slot
//     elements; then per rank: phase, seq, length
//   slot 0 .. slot capacity-1   each `slotElements` floats: rank r's input
//   result                      `slotElements` floats: the summed vector
//   scratch 0 .. capacity-1     16 KiB each: rank r's own block, staged
//
// One all-reduce of L floats over N ranks. The vector is cut into N segments
// (16-float aligned); rank r owns segment r.
//   1. copy-in: rank r copies every segment but its own into slot r, writes
//      its seq and L, and raises its phase to 2k+1 (k: calls made);
//   2. barrier: wait until every rank's phase is >= 2k+1; check their seq and L;
//   3. reduce: rank r sums segment r, block by block, in rank order
//        result = ((x_0 + x_1) + x_2) + ... + x_{N-1}     (float32 adds)
//      where x_j is slot j, except x_r, its own buffer (staged in scratch r);
//      writes the sum into the result and into its own buffer; phase 2k+2;
//   4. barrier on 2k+2; copy-out: rank r copies every other segment of the
//      result into its buffer.
// Each segment's sum is computed once, by its owner, and everyone else copies
// those bytes, so every rank ends bit-identical; and the order is the star
// hub's (rank order), so the bits are the sequential float32 sum's. No third
// barrier is needed: the next call writes slots only before its barrier 1
// (nobody reads slots after barrier 2 of this call) and the result only after
// its barrier 1 (by which time every rank has finished this call's copy-out).
//
// One broadcast (`broadcast`, the last step of the hierarchical all-reduce,
// hierarchical.ts) of L floats from rank `root`:
//   1. the root copies its vector into slot root, writes its seq and L, and
//      raises its phase; the others raise theirs and wait for the root's only;
//   2. the others check the root's seq and L and copy slot root out;
//   3. barrier on everyone: the root may write slot root again only once
//      everyone has copied it (its next copy-in comes right after).
// Slot root, not the result: a slow rank may still be copying the result
// out of the all-reduce before, while the root is already broadcasting.
// It is a copy, so every rank ends with the root's exact bits (an all-reduce
// with zeros would not be: -0 + 0 is +0).
//
// Waiting uses Atomics.waitAsync, so a waiting thread's event loop stays free:
// its heartbeats go out and a `halt` is heard. close() raises the abort word
// (rank + 1) and wakes every waiter, so the others fail at once naming the
// rank; a rank that never arrives fails the waiters after `arrivalTimeoutMs`
// (default: never; the coordinator's halt, which closes the reducers, is what
// ends a wait for a lost thread), naming the ranks that did not arrive.

import { AllReduceError } from './errors.js';
import type { AllReducer } from './reducer.js';
import { ReduceGuard } from './reduce-guard.js';
import { SHARED_SUM_BASE64 } from './shared-memory-kernel-bytes.js';

const MAGIC = 0x53484d31; // 'SHM1'
const HEADER_BYTES = 4096;
const H_MAGIC = 0;
const H_TAG = 1;
const H_WORLD = 2;
const H_ABORT = 3;
const H_CAPACITY = 4;
const H_SLOT = 5;
const RANK_BASE = 16;
const RANK_WORDS = 4;
const R_PHASE = 0;
const R_SEQ = 1;
const R_LENGTH = 2;
/** Ranks one region's header has room for. */
export const MAX_SHARED_RANKS = (HEADER_BYTES / 4 - RANK_BASE) / RANK_WORDS;
const SCRATCH_FLOATS = 4096;
const ALIGN_FLOATS = 16;
const PAGE = 65536;
/** Wasm32 memories end at 4 GiB. */
const MAX_PAGES = 65536;
/** abort word for a reset by the coordinator (a new group took the region). */
const ABORT_RESET = -1;

/** A region as the threads receive it. */
export interface SharedRegion {
  /** Random id: members that report the same id share this memory. */
  id: string;
  memory: WebAssembly.Memory;
}

const roundUp = (n: number, m: number): number => Math.ceil(n / m) * m;

function regionBytes(capacity: number, slotElements: number): number {
  return HEADER_BYTES + (capacity + 1) * slotElements * 4 + capacity * SCRATCH_FLOATS * 4;
}

/**
 * A region for up to `capacity` local ranks reducing vectors of up to
 * `maxElements` floats; null when it would not fit a wasm32 memory (4 GiB) or
 * the header (then groups fall back to the ring).
 */
export function createSharedRegion(capacity: number, maxElements: number): SharedRegion | null {
  if (!Number.isInteger(capacity) || capacity < 2 || capacity > MAX_SHARED_RANKS) return null;
  const slotElements = roundUp(Math.max(1, maxElements), ALIGN_FLOATS);
  const pages = Math.ceil(regionBytes(capacity, slotElements) / PAGE);
  if (pages > MAX_PAGES) return null;
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
  const h = new Int32Array(memory.buffer, 0, HEADER_BYTES / 4);
  h[H_CAPACITY] = capacity;
  h[H_SLOT] = slotElements;
  Atomics.store(h, H_MAGIC, MAGIC);
  const id = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
  return { id, memory };
}

function header(memory: WebAssembly.Memory): Int32Array {
  return new Int32Array(memory.buffer, 0, HEADER_BYTES / 4);
}

/** How many ranks the region can hold. */
export function sharedRegionCapacity(region: SharedRegion): number {
  return Atomics.load(header(region.memory), H_CAPACITY);
}

/**
 * Resets the region for a new group (tag, world size, every rank's counters).
 * Called by the coordinator while every member of the group waits for
 * `connect`; a straggler of an older group that wakes up finds another tag
 * and fails.
 */
export function prepareSharedRegion(region: SharedRegion, tag: number, worldSize: number): void {
  const h = header(region.memory);
  if (worldSize > h[H_CAPACITY]) throw new RangeError(`shared region holds ${h[H_CAPACITY]} ranks, not ${worldSize}`);
  Atomics.store(h, H_ABORT, ABORT_RESET);
  notifyAll(h);
  for (let r = 0; r < MAX_SHARED_RANKS; r++) {
    const base = RANK_BASE + r * RANK_WORDS;
    for (let w = 0; w < RANK_WORDS; w++) Atomics.store(h, base + w, 0);
  }
  Atomics.store(h, H_TAG, tag | 0);
  Atomics.store(h, H_WORLD, worldSize);
  Atomics.store(h, H_ABORT, 0);
}

function notifyAll(h: Int32Array): void {
  for (let r = 0; r < MAX_SHARED_RANKS; r++) Atomics.notify(h, RANK_BASE + r * RANK_WORDS + R_PHASE);
}

interface SumKernel {
  add2(dst: number, a: number, b: number, n: number): void;
  addTo(dst: number, src: number, n: number): void;
}

let kernelModule: WebAssembly.Module | null = null;

function sumKernel(memory: WebAssembly.Memory): SumKernel {
  kernelModule ??= new WebAssembly.Module(Buffer.from(SHARED_SUM_BASE64, 'base64'));
  return new WebAssembly.Instance(kernelModule, { env: { memory } }).exports as unknown as SumKernel;
}

type WaitAsync = (a: Int32Array, index: number, value: number, timeout?: number) =>
  { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
/** Node 20's Atomics.waitAsync, which TypeScript's es2022 lib does not declare (the communication thread waits with it too). */
export const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

export interface SharedMemoryOptions {
  rank: number;
  worldSize: number;
  /** The group's tag: the region must have been prepared for it. */
  tag: number;
  /** Fail when a rank has not arrived for this long (ms); default: wait until closed. */
  arrivalTimeoutMs?: number;
  /**
   * The name each rank of this region goes by in error messages, by rank:
   * a hierarchical group's local members are ranks 0..K-1 here but others
   * in the group. Default: their rank here.
   */
  groupRanks?: readonly number[];
}

/** Sums across the threads of one process through a shared region; see the file header. */
export class SharedMemoryAllReducer implements AllReducer {
  readonly rank: number;
  readonly worldSize: number;
  private readonly tag: number;
  private readonly timeoutMs: number;
  private readonly h: Int32Array;
  private readonly f32: Float32Array;
  private readonly kernel: SumKernel;
  private readonly slotElements: number;
  private readonly capacity: number;
  private readonly groupRanks: readonly number[] | null;
  private phase = 0;
  private closed = false;
  private readonly guard: ReduceGuard;

  constructor(region: SharedRegion, options: SharedMemoryOptions) {
    const { rank, worldSize, tag } = options;
    if (!Number.isInteger(worldSize) || worldSize < 1) throw new RangeError(`worldSize must be a positive integer, got ${worldSize}`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw new RangeError(`rank must be an integer in [0, ${worldSize}), got ${rank}`);
    this.rank = rank;
    this.worldSize = worldSize;
    this.tag = tag | 0;
    this.timeoutMs = options.arrivalTimeoutMs ?? Infinity;
    this.groupRanks = options.groupRanks ?? null;
    if (this.groupRanks && this.groupRanks.length !== worldSize) {
      throw new RangeError(`groupRanks names ${this.groupRanks.length} ranks, not ${worldSize}`);
    }
    this.h = header(region.memory);
    this.f32 = new Float32Array(region.memory.buffer);
    if (Atomics.load(this.h, H_MAGIC) !== MAGIC) throw new AllReduceError('shared-memory all-reduce: the region was never initialised');
    if (Atomics.load(this.h, H_TAG) !== this.tag || Atomics.load(this.h, H_WORLD) !== worldSize) {
      throw new AllReduceError(`shared-memory all-reduce: the region is prepared for another group (tag ${Atomics.load(this.h, H_TAG) >>> 0}, ` +
        `${Atomics.load(this.h, H_WORLD)} ranks), not this one (tag ${tag}, ${worldSize} ranks)`);
    }
    this.capacity = this.h[H_CAPACITY];
    this.slotElements = this.h[H_SLOT];
    if (worldSize > this.capacity) throw new AllReduceError(`shared-memory all-reduce: the region holds ${this.capacity} ranks, not ${worldSize}`);
    this.kernel = sumKernel(region.memory);
    this.guard = new ReduceGuard(async () => this.abort());
  }

  async allReduceSum(buf: Float32Array, seq: number): Promise<void> {
    if (!(buf instanceof Float32Array)) throw new TypeError('allReduceSum needs a Float32Array gradient buffer');
    if (!Number.isInteger(seq) || seq < 0 || seq > 0xffff_ffff) throw new RangeError(`seq must be an integer in [0, 2^32), got ${seq}`);
    await this.guard.run(`shared-memory all-reduce (rank ${this.rank} of ${this.worldSize}, seq ${seq})`, () => this.reduce(buf, seq));
  }

  /**
   * Gives every rank `root`'s `buf`, bit for bit (see the file header); every
   * rank calls it with the same seq and length.
   */
  async broadcast(buf: Float32Array, seq: number, root: number): Promise<void> {
    if (!(buf instanceof Float32Array)) throw new TypeError('broadcast needs a Float32Array buffer');
    if (!Number.isInteger(seq) || seq < 0 || seq > 0xffff_ffff) throw new RangeError(`seq must be an integer in [0, 2^32), got ${seq}`);
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) throw new RangeError(`root must be a rank in [0, ${this.worldSize}), got ${root}`);
    await this.guard.run(`shared-memory broadcast from ${this.name(root)} (${this.name(this.rank)}, seq ${seq})`, () => this.broadcastFrom(buf, seq, root));
  }

  async close(): Promise<void> {
    await this.guard.close();
  }

  /** Rank `j` of this region as messages name it. */
  private name(j: number): string {
    return `rank ${this.groupRanks?.[j] ?? j}`;
  }

  private names(ranks: number[]): string {
    return `rank${ranks.length > 1 ? 's' : ''} ${ranks.map((j) => this.groupRanks?.[j] ?? j).join(', ')}`;
  }

  /** Raises the abort word (this rank + 1) unless another rank or a reset did, and wakes every waiter. */
  private abort(): void {
    if (this.closed) return;
    this.closed = true;
    if (Atomics.load(this.h, H_TAG) === this.tag) Atomics.compareExchange(this.h, H_ABORT, 0, this.rank + 1);
    notifyAll(this.h);
  }

  private word(rank: number, w: number): number {
    return RANK_BASE + rank * RANK_WORDS + w;
  }

  /** Element offsets of the float32 views of slot `j`, the result, and this rank's scratch. */
  private slot(j: number): number {
    return HEADER_BYTES / 4 + j * this.slotElements;
  }

  private get result(): number {
    return HEADER_BYTES / 4 + this.capacity * this.slotElements;
  }

  private get scratch(): number {
    return HEADER_BYTES / 4 + (this.capacity + 1) * this.slotElements + this.rank * SCRATCH_FLOATS;
  }

  /** [start, end) of segment s of a vector of n floats. */
  private segment(s: number, n: number): [number, number] {
    const per = roundUp(Math.ceil(n / this.worldSize), ALIGN_FLOATS);
    return [Math.min(n, s * per), Math.min(n, (s + 1) * per)];
  }

  private async reduce(buf: Float32Array, seq: number): Promise<void> {
    const n = buf.length;
    const { rank, worldSize, f32 } = this;
    if (n > this.slotElements) throw new AllReduceError(`shared-memory all-reduce: ${n} floats exceed the region's ${this.slotElements} per rank`);
    this.checkLive(null);
    if (worldSize === 1) return;
    // 1. copy-in
    const mine = this.slot(rank);
    for (let s = 0; s < worldSize; s++) {
      if (s === rank) continue;
      const [a, b] = this.segment(s, n);
      if (b > a) f32.set(buf.subarray(a, b), mine + a);
    }
    Atomics.store(this.h, this.word(rank, R_SEQ), seq | 0);
    Atomics.store(this.h, this.word(rank, R_LENGTH), n);
    const p = this.phase;
    await this.arrive(p + 1, seq);
    for (let j = 0; j < worldSize; j++) {
      const theirs = Atomics.load(this.h, this.word(j, R_SEQ)) >>> 0;
      const len = Atomics.load(this.h, this.word(j, R_LENGTH));
      if (theirs !== seq || len !== n) {
        throw new AllReduceError(`shared-memory all-reduce: ${this.name(j)} is at seq ${theirs} with ${len} floats, ${this.name(rank)} at seq ${seq} with ${n}`, this.name(j));
      }
    }
    // 2. reduce this rank's segment, in rank order, a scratch-sized block at a time
    const [a, b] = this.segment(rank, n);
    const res = this.result;
    const scr = this.scratch;
    const source = (j: number, at: number): number => 4 * (j === rank ? scr : this.slot(j) + at);
    for (let at = a; at < b; at += SCRATCH_FLOATS) {
      const count = Math.min(SCRATCH_FLOATS, b - at);
      f32.set(buf.subarray(at, at + count), scr);
      const dst = 4 * (res + at);
      this.kernel.add2(dst, source(0, at), source(1, at), count);
      for (let j = 2; j < worldSize; j++) this.kernel.addTo(dst, source(j, at), count);
      buf.set(f32.subarray(res + at, res + at + count), at);
    }
    await this.arrive(p + 2, seq);
    // 3. copy-out
    for (let s = 0; s < worldSize; s++) {
      if (s === rank) continue;
      const [c, d] = this.segment(s, n);
      if (d > c) buf.set(f32.subarray(res + c, res + d), c);
    }
    this.phase = p + 2;
  }

  private async broadcastFrom(buf: Float32Array, seq: number, root: number): Promise<void> {
    const n = buf.length;
    const { rank, f32 } = this;
    if (n > this.slotElements) throw new AllReduceError(`shared-memory broadcast: ${n} floats exceed the region's ${this.slotElements} per rank`);
    this.checkLive(null);
    if (this.worldSize === 1) return;
    const from = this.slot(root);
    const p = this.phase;
    // 1. the root's vector into its slot; the others wait for the root alone
    if (rank === root) {
      f32.set(buf, from);
      Atomics.store(this.h, this.word(root, R_SEQ), seq | 0);
      Atomics.store(this.h, this.word(root, R_LENGTH), n);
    }
    await this.arrive(p + 1, seq, rank === root ? [] : [root]);
    // 2. copy it out
    if (rank !== root) {
      const theirs = Atomics.load(this.h, this.word(root, R_SEQ)) >>> 0;
      const len = Atomics.load(this.h, this.word(root, R_LENGTH));
      if (theirs !== seq || len !== n) {
        throw new AllReduceError(`shared-memory broadcast: ${this.name(root)} is at seq ${theirs} with ${len} floats, ${this.name(rank)} at seq ${seq} with ${n}`, this.name(root));
      }
      buf.set(f32.subarray(from, from + n));
    }
    // 3. everyone has copied: slot root is free again
    await this.arrive(p + 2, seq);
    this.phase = p + 2;
  }

  /** Fails if this reducer or the group was closed, or the region was taken by another group. */
  private checkLive(waitingFor: number[] | null): void {
    const forWhom = waitingFor ? ` while waiting for ${this.names(waitingFor)}` : '';
    if (this.closed) throw new AllReduceError(`shared-memory all-reduce: closed${forWhom}`);
    if (Atomics.load(this.h, H_TAG) !== this.tag) throw new AllReduceError(`shared-memory all-reduce: a new group took the region${forWhom}`);
    const abort = Atomics.load(this.h, H_ABORT);
    if (abort === ABORT_RESET) throw new AllReduceError(`shared-memory all-reduce: the region was reset for a new group${forWhom}`);
    if (abort > 0) {
      throw new AllReduceError(`shared-memory all-reduce: ${this.name(abort - 1)} closed its all-reduce (failed or halted)${forWhom}`, this.name(abort - 1));
    }
  }

  /** Raises this rank's phase to `phase` and waits until that of each of `ranks` (default: every rank) is there. */
  private async arrive(phase: number, seq: number, ranks: number[] | null = null): Promise<void> {
    const idx = this.word(this.rank, R_PHASE);
    Atomics.store(this.h, idx, phase);
    Atomics.notify(this.h, idx);
    const started = performance.now();
    const awaited = ranks ?? Array.from({ length: this.worldSize }, (_, j) => j);
    for (const j of awaited) {
      const at = this.word(j, R_PHASE);
      for (;;) {
        const seen = Atomics.load(this.h, at);
        if (seen >= phase) break;
        const late = this.late(phase, awaited);
        this.checkLive(late);
        const left = this.timeoutMs - (performance.now() - started);
        if (left <= 0) {
          throw new AllReduceError(`shared-memory all-reduce seq ${seq}: ${this.names(late)} ` +
            `did not arrive within ${(this.timeoutMs / 1000).toFixed(1)} s`, this.name(late[0]));
        }
        const slice = Math.min(left, 1000);
        const w = waitAsync(this.h, at, seen, slice);
        if (!w.async) continue;
        // A pending waitAsync does not keep Node's event loop alive; this timer does.
        const alive = setTimeout(() => {}, slice + 50);
        try {
          await w.value;
        } finally {
          clearTimeout(alive);
        }
      }
    }
  }

  private late(phase: number, awaited: number[]): number[] {
    return awaited.filter((j) => Atomics.load(this.h, this.word(j, R_PHASE)) < phase);
  }
}
