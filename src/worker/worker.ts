// One data-parallel worker. It connects to the coordinator and is given a
// rank in a group (`init`), the run's config, the dataset (unless cached) and
// the state to start from; it then trains in that group (group-session.ts)
// until the run is done. When the group changes (a rank lost, a worker
// added), the coordinator halts it: the worker rolls back to the last
// committed step, reports its state, and waits for its place in the next
// group.

import fs from 'node:fs';
import { WebSocket } from 'ws';
import { decodeDataset, defaultCacheDir, loadCachedDataset, storeCachedDataset } from '../common/data/dataset-cache.js';
import {
  ControlConnection, configHash, CONTROL_PATH, PROTOCOL_VERSION,
  type HostPort, type InitMessage,
} from '../common/protocol/index.js';
import type { BackendChoice } from '../common/backend/names.js';
import type { Dataset } from '../common/data/types.js';
import { runGroupSession, wasReported, type SessionEnd } from './group-session.js';
import { HaltSignal, SessionInbox } from './session-inbox.js';
import { ReplicaState } from './replica-state.js';
import { exitIfInjectedAtStart } from '../common/training/faults.js';
import type { SharedRegion } from '../common/allreduce/index.js';

export { FAULT_ENV, THROW_FAULT_ENV } from './group-session.js';

export interface WorkerOptions {
  /** Coordinator address: host:port, ws://host:port or wss://host:port. */
  connect: string;
  token: string;
  /** Overrides the run's backend on this worker; by default the config's backend is used. */
  backend?: BackendChoice;
  /** Interface this worker's ring endpoint listens on and advertises; default 127.0.0.1. */
  ringHost?: string;
  /** Port of the ring endpoint; default 0 (any free port). */
  ringPort?: number;
  log?: (line: string) => void;
  /** PEM file of the certificate (or its CA) that a wss:// coordinator must present. */
  caPath?: string;
  /** Keep trying to reach (or rejoin after a crash) the coordinator for this long; 0 = fail at once (default). */
  reconnectTimeoutMs?: number;
  /** Where received datasets are cached by content hash; null: no cache. Default: $TFJS_DDP_CACHE or ~/.cache/tfjs-ddp. */
  cacheDir?: string | null;
  /** Only for tests of the refusal path: the protocol version to announce. */
  protocolVersion?: number;
  /** Thread mode: the region this thread shares with the coordinator's other local threads (LocalWorkers). */
  sharedRegion?: SharedRegion | null;
}

export interface CoordinatorAddress extends HostPort {
  /** wss:// (TLS) rather than ws://. */
  secure: boolean;
}

/** Parses "host:port", "ws://host:port" or "wss://host:port" (IPv6 in brackets); throws a message naming the flag. */
export function parseCoordinatorAddress(text: string): CoordinatorAddress {
  const m = /^(?:(wss?):\/\/)?(\[[^\]]+\]|[^:\s/]+):(\d{1,5})\/?$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) {
    throw new Error(`--connect expects host:port or wss://host:port (e.g. 127.0.0.1:29500), got "${text}"`);
  }
  return { host: m[2].replace(/^\[|\]$/g, ''), port, secure: m[1] === 'wss' };
}

/** Close code of a WebSocket whose peer disappeared without closing it: the coordinator crashed or the link was cut. */
const ABNORMAL_CLOSURE = 1006;

/**
 * Runs one worker until the coordinator says done. Rejects if refused or on
 * any failure, except that with `reconnectTimeoutMs` it keeps trying to reach
 * a coordinator that is not up yet, or that vanished mid-run (a crash, then
 * `coordinator --resume`), and joins it again as a new worker.
 */
export async function runWorker(options: WorkerOptions): Promise<void> {
  const log = options.log ?? (() => {});
  const address = parseCoordinatorAddress(options.connect);
  const retryMs = options.reconnectTimeoutMs ?? 0;
  for (;;) {
    const conn = await connectWithRetry(address, options.caPath, retryMs, log);
    try {
      conn.send({ type: 'hello', protocol: options.protocolVersion ?? PROTOCOL_VERSION, token: options.token, backend: options.backend ?? null });
      const init = await conn.expect('init');
      conn.peer = 'coordinator';
      log(`joined as rank ${init.rank} of ${init.worldSize}`);
      exitIfInjectedAtStart(init.rank);
      await serveGroups(conn, init, options);
      return;
    } catch (err) {
      // Tell the coordinator why, so its error names this rank's real problem
      // rather than just a closed socket. A failed step has told it already
      // (with the step), before its links closed.
      if (!wasReported(err)) {
        try {
          conn.send({ type: 'error', message: (err as Error).message, step: null });
        } catch {
          // The connection is already gone.
        }
      }
      // A crashed coordinator leaves an abnormal closure (maybe noticed a
      // moment after a peer's link dropped); an aborting one closes politely.
      await Promise.race([conn.closed, new Promise((resolve) => setTimeout(resolve, 2000))]);
      if (retryMs > 0 && conn.closeCode === ABNORMAL_CLOSURE) {
        log(`lost the coordinator (${(err as Error).message}); trying to rejoin for up to ${retryMs / 1000} s`);
        continue;
      }
      throw err;
    } finally {
      await conn.close();
    }
  }
}

/** Connects, retrying with backoff (0.25 s doubling to 5 s) for up to `retryMs`. */
async function connectWithRetry(address: CoordinatorAddress, caPath: string | undefined, retryMs: number, log: (line: string) => void): Promise<ControlConnection> {
  if (caPath && !address.secure) throw new Error(`--ca ${caPath} is for a TLS coordinator: connect with wss://${address.host}:${address.port}`);
  let ca: Buffer | undefined;
  try {
    ca = caPath ? fs.readFileSync(caPath) : undefined;
  } catch (err) {
    throw new Error(`cannot read --ca ${caPath}: ${(err as Error).message}`);
  }
  const deadline = Date.now() + retryMs;
  let wait = 250;
  for (let attempt = 1; ; attempt++) {
    try {
      return await openControl(address, ca);
    } catch (err) {
      if (Date.now() + wait > deadline) {
        throw retryMs > 0
          ? new Error(`${(err as Error).message}; gave up after ${attempt} attempts in ${retryMs / 1000} s (--reconnect-timeout)`)
          : err;
      }
      if (attempt === 1) log(`${(err as Error).message}; retrying for up to ${retryMs / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(2 * wait, 5000);
    }
  }
}

async function openControl(address: CoordinatorAddress, ca: Buffer | undefined): Promise<ControlConnection> {
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  const url = `${address.secure ? 'wss' : 'ws'}://${host}:${address.port}${CONTROL_PATH}`;
  const ws = new WebSocket(url, { maxPayload: 1024 * 1024 * 1024, ...(ca ? { ca } : {}) });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', (err) => reject(new Error(`cannot reach the coordinator at ${url}: ${err.message}`)));
  });
  return new ControlConnection(ws, `coordinator at ${address.host}:${address.port}`);
}

/**
 * Trains in one group after another until the coordinator says done. The
 * dataset is kept in memory across groups, so a re-formed group starts at
 * once.
 */
async function serveGroups(conn: ControlConnection, first: InitMessage, options: WorkerOptions): Promise<void> {
  const log = options.log ?? (() => {});
  // "Still alive" for the coordinator's watchdog, whenever this thread is not busy computing.
  const heartbeat = setInterval(() => {
    try {
      conn.send({ type: 'heartbeat' });
    } catch {
      // The connection is gone; the next receive reports it.
    }
  }, first.heartbeatMs);
  let held: { hash: string; data: Dataset } | null = null;
  let state: ReplicaState | null = null;
  try {
    for (let init: InitMessage | null = first; init !== null;) {
      if (configHash(init.config) !== init.configHash) throw new Error('the run configuration arrived damaged (hash mismatch)');
      const inbox = new SessionInbox(conn, init.step);
      state = stateForGroup(init, state);
      let end: SessionEnd;
      try {
        held = await obtainDataset(conn, inbox, init, held, options);
        end = await runGroupSession({
          conn, inbox, init, data: held.data, state, backend: options.backend, ringHost: options.ringHost, ringPort: options.ringPort,
          sharedRegion: options.sharedRegion ?? null,
        });
      } catch (err) {
        // Halted while the dataset was on its way: this worker still holds the init state.
        if (!(err instanceof HaltSignal)) throw err;
        end = { kind: 'halted', halt: err.halt };
      }
      if (end.kind === 'done') {
        // Every replica prints the same line: a check anyone can make across machines.
        log(`finished at step ${state.step}, state checksum ${state.fullChecksum()}`);
        return;
      }
      init = await waitForNextGroup(conn, state, end.halt.step);
      if (init) log(`the group changed: now rank ${init.rank} of ${init.worldSize}, from step ${init.step}`);
    }
  } finally {
    clearInterval(heartbeat);
  }
}

/** A new group's state: the one sent, or this worker's own (a survivor's), checked against the coordinator's checksum. */
function stateForGroup(init: InitMessage, own: ReplicaState | null): ReplicaState {
  if (init.stateIncluded) return new ReplicaState(init);
  const mine = own ? `step ${own.step}, checksum ${own.optimizerChecksum()}` : 'no state';
  if (!own || own.step !== init.step || own.optimizerChecksum() !== init.stateChecksum) {
    throw new Error(`the coordinator counts on this worker holding step ${init.step} (checksum ${init.stateChecksum}); it holds ${mine}`);
  }
  if (own.runningStats.length !== init.runningStats.length) throw new Error('the coordinator sent running statistics of the wrong size');
  // Averaged over the survivors by the coordinator.
  own.runningStats.set(init.runningStats);
  return own;
}

/**
 * After a halt: rolls back to the committed step and reports it, answers a
 * request for the state, and returns the next group's `init` (null on done).
 */
async function waitForNextGroup(conn: ControlConnection, state: ReplicaState, step: number): Promise<InitMessage | null> {
  const reportHalted = (at: number): void => {
    state.rollBackTo(at);
    conn.send({ type: 'halted', step: state.step, checksum: state.optimizerChecksum(), runningStats: state.runningStats });
  };
  reportHalted(step);
  for (;;) {
    const msg = await conn.receive();
    if (msg.type === 'init') return msg;
    if (msg.type === 'done') return null;
    if (msg.type === 'halt') {
      // The coordinator restarted its membership change (another rank failed meanwhile).
      reportHalted(msg.step);
    } else if (msg.type === 'snapshot') {
      conn.send({
        type: 'state', step: state.step, checksum: state.fullChecksum(),
        weights: state.weights, momentum: state.momentum, runningStats: state.runningStats,
      });
    } else if (msg.type !== 'commit') {
      throw new Error(`the coordinator sent "${msg.type}" while this worker waits for its next group`);
    }
  }
}


/**
 * The run's dataset: from this worker's cache when it holds the announced
 * hash, else sent by the coordinator (and then cached). No dataset files are
 * needed on a worker's own disk.
 */
async function obtainDataset(
  conn: ControlConnection, inbox: SessionInbox, init: InitMessage, held: { hash: string; data: Dataset } | null, options: WorkerOptions,
): Promise<{ hash: string; data: Dataset }> {
  if (held?.hash === init.datasetHash) {
    conn.send({ type: 'data-status', cached: true });
    return held;
  }
  return { hash: init.datasetHash, data: await receiveDataset(conn, inbox, init, options) };
}

async function receiveDataset(conn: ControlConnection, inbox: SessionInbox, init: InitMessage, options: WorkerOptions): Promise<Dataset> {
  const log = options.log ?? (() => {});
  const cacheDir = options.cacheDir === undefined ? defaultCacheDir() : options.cacheDir;
  const cached = cacheDir === null ? null : await loadCachedDataset(cacheDir, init.datasetHash, log);
  conn.send({ type: 'data-status', cached: cached !== null });
  if (cached) {
    log(`dataset ${init.datasetHash.slice(0, 12)} from the cache in ${cacheDir}`);
    return cached;
  }
  const started = Date.now();
  const { hash, blob } = await inbox.expect('dataset');
  if (hash !== init.datasetHash || blob.byteLength !== init.datasetBytes) {
    throw new Error(`the coordinator sent dataset ${hash.slice(0, 12)} (${blob.byteLength} bytes) after announcing ${init.datasetHash.slice(0, 12)} (${init.datasetBytes} bytes)`);
  }
  const data = decodeDataset(blob, hash);
  log(`dataset ${hash.slice(0, 12)} received: ${(blob.byteLength / 1e6).toFixed(1)} MB in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (cacheDir !== null) {
    try {
      await storeCachedDataset(cacheDir, hash, blob);
    } catch (err) {
      log(`warning: cannot cache the dataset in ${cacheDir} (${(err as Error).message}); it will be sent again next time`);
    }
  }
  return data;
}

