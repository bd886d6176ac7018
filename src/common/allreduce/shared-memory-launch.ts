// Starts N worker threads that all-reduce through one shared region
// (shared-memory-thread.ts) and collects what each posts: the test of the
// shared-memory reducer and scripts/bench-local-allreduce use it. It also
// starts the members of a hierarchical group (local threads over the region,
// the others ring-only), relaying ring addresses as the coordinator would.
import { randomInt } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { resolveWorkerScript } from '../fs/worker-script.js';
import { createSharedRegion, prepareSharedRegion, type SharedRegion } from './shared-memory.js';
import type { HierarchicalLayout } from './hierarchical.js';
import type { RingAddressMessage, RingPeerMessage, SharedThreadResult, SharedThreadTask } from './shared-memory-thread.js';
import type { PeerAddress } from './transport/ws-handshake.js';

export type SharedThreadsPlan = Omit<SharedThreadTask, 'region' | 'rank' | 'worldSize' | 'tag' | 'fail' | 'hierarchical'> & {
  /** The failure drill of one rank, if any. */
  fail?: { rank: number; at: number; how: 'exit' | 'close' | 'absent' };
};

/**
 * Runs `worldSize` threads over one new region (or `region`, re-prepared for
 * a fresh tag) and resolves with each rank's result, in rank order; a thread
 * that exits without posting gets an `error` result saying so.
 */
export async function runSharedMemoryThreads(
  worldSize: number, plan: SharedThreadsPlan, region: SharedRegion | null = null,
): Promise<SharedThreadResult[]> {
  const maxLength = Math.max(1, ...plan.lengths);
  const shared = region ?? createSharedRegion(Math.max(2, worldSize), maxLength);
  if (!shared) throw new Error(`no shared region fits ${worldSize} ranks of ${maxLength} floats`);
  const tag = randomInt(1, 0xffff_ffff);
  prepareSharedRegion(shared, tag, worldSize);
  return startThreads(worldSize, plan, shared, tag, null);
}

/**
 * Runs a hierarchical group of `worldSize` threads: `layout.localRanks` over
 * one new region, every ring member over loopback ring links. Resolves as
 * runSharedMemoryThreads does.
 */
export async function runHierarchicalThreads(
  worldSize: number, layout: HierarchicalLayout, plan: SharedThreadsPlan,
): Promise<SharedThreadResult[]> {
  const maxLength = Math.max(1, ...plan.lengths);
  const shared = createSharedRegion(layout.localRanks.length, maxLength);
  if (!shared) throw new Error(`no shared region fits ${layout.localRanks.length} ranks of ${maxLength} floats`);
  const tag = randomInt(1, 0xffff_ffff);
  prepareSharedRegion(shared, tag, layout.localRanks.length);
  return startThreads(worldSize, plan, shared, tag, layout);
}

function startThreads(
  worldSize: number, plan: SharedThreadsPlan, shared: SharedRegion, tag: number, layout: HierarchicalLayout | null,
): Promise<SharedThreadResult[]> {
  const script = resolveWorkerScript(import.meta.url, './shared-memory-thread.js');
  const { fail, ...rest } = plan;
  // The coordinator's part of the ring wiring: once every ring member has an address, each gets its predecessor's.
  const ring = layout?.ringRanks ?? [];
  const addresses = new Map<number, PeerAddress>();
  const workers: Worker[] = [];
  const relay = (m: RingAddressMessage): void => {
    addresses.set(m.rank, m.address);
    if (addresses.size < ring.length) return;
    ring.forEach((r, i) => workers[r].postMessage({ peer: addresses.get(ring[(i - 1 + ring.length) % ring.length])! } satisfies RingPeerMessage));
  };
  const results = Promise.all(Array.from({ length: worldSize }, (_, rank) => new Promise<SharedThreadResult>((resolve, reject) => {
    const task: SharedThreadTask = {
      ...rest, region: shared, rank, worldSize, tag, ...(layout ? { hierarchical: layout } : {}),
      ...(fail?.rank === rank ? { fail } : fail ? { lateAt: fail.at } : {}),
    };
    const worker = new Worker(script, { workerData: task });
    workers[rank] = worker;
    let posted = false;
    worker.on('message', (m: SharedThreadResult | RingAddressMessage) => {
      if (m.kind === 'address') return relay(m);
      posted = true;
      resolve(m);
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (!posted) resolve({ kind: 'error', rank, message: `thread exited (code ${code}) without a result`, call: -1, afterMs: 0 });
    });
  })));
  // Hierarchical members wait for this before they exit (see shared-memory-thread.ts).
  if (layout) void results.then(() => workers.forEach((w) => w.postMessage({ release: true })), () => {});
  return results;
}
