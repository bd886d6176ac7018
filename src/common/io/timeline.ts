// `--timeline FILE`: what each rank's step spent its time on, as Chrome trace
// events (the Trace Event Format's JSON object form), which Perfetto and
// chrome://tracing open. Horovod's Timeline is the model: one process per
// rank (pid = rank), a track for its compute thread (tid 0, "rank r
// compute": data wait, forward, backward, optimizer, upload, commit wait)
// and one for its communication thread (tid 1, "rank r communication":
// `allreduce bucket <i>` with bucket, seq, bytes, elements).
//
// How the one file is assembled (the design this module supports):
// - Every thread records into its own `Timeline` and hands its spans on with
//   `drain()`: plain objects that cross postMessage, so a communication
//   thread posts them to its compute thread, which `absorb`s them.
// - A worker process sends its drained spans to the coordinator in a
//   protocol message, `packEvents` making them compact (a string table and
//   columns of numbers, msgpack- and JSON-safe); the coordinator
//   `unpackEvents` them into one `TraceFile`, which writes the file.
// - Times are `performance.timeOrigin + performance.now()`, the wall clock in
//   µs at sub-µs resolution: threads and processes of one machine line up
//   with no correction. Ranks on other machines line up only as well as the
//   machines' clocks agree; `TraceFile.add` takes a per-rank offset for the
//   caller to correct that with, if it measures one.
//
// Nothing is lost on failure and memory is bounded: `TraceFile.flush()`
// rewrites the whole file atomically (temp file, fsync, rename), so a crash
// leaves the last flushed trace, complete and loadable. Both a Timeline's
// pending spans and a TraceFile keep the *first* `maxEvents` spans and drop
// the rest: the start of a run stays contiguous, and every drop is noted in
// the trace (an instant event "timeline dropped events" with the count, and
// `otherData.droppedEvents` in the file), never silent.

import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { writeFileAtomic } from '../fs/atomic-file.js';

export type TraceArgs = Record<string, string | number | boolean | null>;

/** One Trace Event Format event: `X` a complete span, `M` metadata, `i` an instant. */
export interface TraceEvent {
  name: string;
  ph: 'X' | 'M' | 'i';
  /** µs since the Unix epoch. */
  ts: number;
  /** µs; `X` only. */
  dur?: number;
  pid: number;
  tid: number;
  cat?: string;
  /** `i` only: the instant's scope, `t` its thread. */
  s?: 't';
  args?: TraceArgs;
}

export const TRACKS = { compute: 0, communication: 1 } as const;
export type Track = keyof typeof TRACKS;

/** A default that keeps tens of thousands of steps of every rank in tens of MB. */
export const DEFAULT_MAX_EVENTS = 500_000;
const DROPPED = 'timeline dropped events';

/** The clock every span is measured on: ms since the Unix epoch, the same in every thread and process of a machine. */
export const clockMs = (): number => performance.timeOrigin + performance.now();

/** The metadata that names rank `rank`'s process and its two tracks, compute above communication. */
export function rankMetadata(rank: number): TraceEvent[] {
  const m = (name: string, tid: number, args: TraceArgs): TraceEvent => ({ name, ph: 'M', ts: 0, pid: rank, tid, args });
  return [
    m('process_name', 0, { name: `rank ${rank}` }),
    m('process_sort_index', 0, { sort_index: rank }),
    ...Object.entries(TRACKS).flatMap(([track, tid]) => [
      m('thread_name', tid, { name: `rank ${rank} ${track}` }),
      m('thread_sort_index', tid, { sort_index: tid }),
    ]),
  ];
}

function checkMax(maxEvents: number): number {
  if (!Number.isInteger(maxEvents) || maxEvents < 1) throw new Error(`maxEvents must be a positive integer, got ${maxEvents}`);
  return maxEvents;
}

const droppedNote = (pid: number, tid: number, tsUs: number, dropped: number): TraceEvent =>
  ({ name: DROPPED, ph: 'i', s: 't', ts: tsUs, pid, tid, cat: 'timeline', args: { dropped } });

/** The spans one thread of rank `rank` records, until it drains them. */
export class Timeline {
  readonly rank: number;
  private readonly maxEvents: number;
  private pending: TraceEvent[] = [];
  private droppedSinceDrain = 0;
  private firstDropUs = 0;
  private dropTid = 0;
  private droppedTotal = 0;

  constructor(rank: number, options: { maxEvents?: number } = {}) {
    if (!Number.isInteger(rank) || rank < 0) throw new Error(`rank must be an integer >= 0, got ${rank}`);
    this.rank = rank;
    this.maxEvents = checkMax(options.maxEvents ?? DEFAULT_MAX_EVENTS);
  }

  /** Spans dropped since this timeline was made (over maxEvents between drains). */
  get dropped(): number {
    return this.droppedTotal;
  }

  /** A span from `startMs` to `endMs`, both read from `clockMs()`. */
  span(track: Track, name: string, startMs: number, endMs: number, args?: TraceArgs): void {
    const tid = TRACKS[track];
    if (this.pending.length >= this.maxEvents) {
      if (this.droppedSinceDrain === 0) {
        this.firstDropUs = startMs * 1000;
        this.dropTid = tid;
      }
      this.droppedSinceDrain++;
      this.droppedTotal++;
      return;
    }
    const event: TraceEvent = { name, ph: 'X', ts: startMs * 1000, dur: Math.max(0, endMs - startMs) * 1000, pid: this.rank, tid, cat: track };
    if (args) event.args = args;
    this.pending.push(event);
  }

  /** Starts a span now; the function returned ends it (once), adding `endArgs` to its args. */
  begin(track: Track, name: string, args?: TraceArgs): (endArgs?: TraceArgs) => void {
    const start = clockMs();
    let ended = false;
    return (endArgs) => {
      if (ended) return;
      ended = true;
      this.span(track, name, start, clockMs(), endArgs ? { ...args, ...endArgs } : args);
    };
  }

  /** Runs `fn` inside a span; a promise's span ends when it settles, either way. */
  time<T>(track: Track, name: string, fn: () => T, args?: TraceArgs): T {
    const end = this.begin(track, name, args);
    let result: T;
    try {
      result = fn();
    } catch (err) {
      end();
      throw err;
    }
    if (result instanceof Promise) return result.finally(() => end()) as T;
    end();
    return result;
  }

  /** Spans from another thread of this rank (e.g. its communication thread's drain), kept as if recorded here. */
  absorb(events: readonly TraceEvent[]): void {
    for (const e of events) {
      if (e.ph === 'X' && this.pending.length >= this.maxEvents) {
        if (this.droppedSinceDrain === 0) {
          this.firstDropUs = e.ts;
          this.dropTid = e.tid;
        }
        this.droppedSinceDrain++;
        this.droppedTotal++;
      } else {
        this.pending.push(e);
      }
    }
  }

  /** The spans since the last drain (plus a note of any dropped), handed over: the timeline forgets them. */
  drain(): TraceEvent[] {
    const out = this.pending;
    if (this.droppedSinceDrain > 0) out.push(droppedNote(this.rank, this.dropTid, this.firstDropUs, this.droppedSinceDrain));
    this.pending = [];
    this.droppedSinceDrain = 0;
    return out;
  }
}

/** Metadata is unique per track and kind: a later one replaces an earlier. */
const metaKey = (e: TraceEvent): string => `${e.pid}/${e.tid}/${e.name}`;

/** Events of many ranks or threads as one list: metadata first and each piece of it once, then the rest by time. */
export function mergeTraces(...lists: readonly (readonly TraceEvent[])[]): TraceEvent[] {
  const meta = new Map<string, TraceEvent>();
  const rest: TraceEvent[] = [];
  for (const list of lists) {
    for (const e of list) {
      if (e.ph === 'M') meta.set(metaKey(e), e);
      else rest.push(e);
    }
  }
  return [...meta.values(), ...rest.sort((a, b) => a.ts - b.ts)];
}

/** Spans as a protocol message carries them: names and categories once, numbers in columns. */
export interface PackedEvents {
  strings: string[];
  /** Per event: ph (0 X, 1 M, 2 i), name and cat (indices into strings, -1 none), pid, tid, ts, dur (-1 none). */
  columns: number[];
  /** Per event, its args or null. */
  args: (TraceArgs | null)[];
}

const PH = ['X', 'M', 'i'] as const;
const STRIDE = 7;

export function packEvents(events: readonly TraceEvent[]): PackedEvents {
  const strings: string[] = [];
  const ids = new Map<string, number>();
  const id = (s: string | undefined): number => {
    if (s === undefined) return -1;
    let i = ids.get(s);
    if (i === undefined) ids.set(s, (i = strings.push(s) - 1));
    return i;
  };
  const columns: number[] = [];
  for (const e of events) columns.push(PH.indexOf(e.ph), id(e.name), id(e.cat), e.pid, e.tid, e.ts, e.dur ?? -1);
  return { strings, columns, args: events.map((e) => e.args ?? null) };
}

/** The inverse of packEvents; throws on a malformed message rather than writing a broken trace. */
export function unpackEvents(packed: PackedEvents): TraceEvent[] {
  const { strings, columns, args } = packed;
  if (!Array.isArray(strings) || !Array.isArray(columns) || !Array.isArray(args) || columns.length !== args.length * STRIDE) {
    throw new Error('packed timeline events: strings, columns and args do not match');
  }
  const str = (i: number): string => {
    const s = strings[i];
    if (typeof s !== 'string') throw new Error(`packed timeline events: no string ${i}`);
    return s;
  };
  return args.map((a, k) => {
    const [ph, name, cat, pid, tid, ts, dur] = columns.slice(k * STRIDE, (k + 1) * STRIDE);
    if (PH[ph] === undefined || ![pid, tid, ts, dur].every(Number.isFinite)) throw new Error(`packed timeline events: bad event ${k}`);
    const e: TraceEvent = { name: str(name), ph: PH[ph], ts, pid, tid };
    if (PH[ph] === 'i') e.s = 't';
    if (dur >= 0) e.dur = dur;
    if (cat >= 0) e.cat = str(cat);
    if (a !== null) e.args = a;
    return e;
  });
}

/** The JSON object form of a trace, in chunks (a long run's trace need not be one string). */
export function traceChunks(events: readonly TraceEvent[], otherData: Record<string, unknown> = {}): Uint8Array[] {
  const chunks: Uint8Array[] = [Buffer.from('{"traceEvents":[\n')];
  const BLOCK = 10_000;
  for (let i = 0; i < events.length; i += BLOCK) {
    const block = events.slice(i, i + BLOCK).map((e) => JSON.stringify(e)).join(',\n');
    chunks.push(Buffer.from((i > 0 ? ',\n' : '') + block));
  }
  chunks.push(Buffer.from(`\n],"displayTimeUnit":"ms","otherData":${JSON.stringify(otherData)}}\n`));
  return chunks;
}

/** The one trace file of a run: events of every rank, rewritten whole at each flush. */
export class TraceFile {
  readonly file: string;
  private readonly maxEvents: number;
  private readonly meta = new Map<string, TraceEvent>();
  private readonly spans: TraceEvent[] = [];
  private droppedCount = 0;
  /** The file's own drop note, among the spans once anything is dropped; its count is kept current. */
  private dropNote: TraceEvent | undefined;
  private writing: Promise<unknown> = Promise.resolve();

  constructor(file: string, options: { maxEvents?: number } = {}) {
    this.file = path.resolve(file);
    this.maxEvents = checkMax(options.maxEvents ?? DEFAULT_MAX_EVENTS);
  }

  /** Spans dropped because the file already held maxEvents (a rank's own drop notes are kept). */
  get dropped(): number {
    return this.droppedCount;
  }

  /** Names rank `rank`'s tracks (idempotent). */
  addRank(rank: number): void {
    this.add(rankMetadata(rank));
  }

  /** Adds events; `offsetUs` is added to their times (a rank whose clock runs behind the coordinator's gets a positive one). */
  add(events: readonly TraceEvent[], offsetUs = 0): void {
    for (const e of events) {
      if (e.ph === 'M') {
        this.meta.set(metaKey(e), e);
      } else if (this.spans.length < this.maxEvents || e.name === DROPPED) {
        this.spans.push(offsetUs === 0 ? e : { ...e, ts: e.ts + offsetUs });
      } else {
        if (this.dropNote === undefined) this.spans.push((this.dropNote = droppedNote(e.pid, e.tid, e.ts + offsetUs, 0)));
        this.dropNote.args = { dropped: ++this.droppedCount };
      }
    }
  }

  /** Everything so far, merged: what flush writes. */
  events(): TraceEvent[] {
    return mergeTraces([...this.meta.values()], this.spans);
  }

  /** Writes every event so far, atomically; flushes run one after another, in call order. Returns the path. */
  flush(): Promise<string> {
    const chunks = traceChunks(this.events(), {
      droppedEvents: this.droppedCount,
      note: `the first ${this.maxEvents} spans are kept; later ones are counted in droppedEvents`,
    });
    const write = this.writing.then(() => writeFileAtomic(path.dirname(this.file), path.basename(this.file), chunks));
    this.writing = write.catch(() => undefined);
    return write;
  }
}
