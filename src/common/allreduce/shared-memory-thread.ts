// A worker_threads body that runs SharedMemoryAllReducer on generated data,
// for test/shared-memory-allreduce.test.ts and scripts/bench-local-allreduce.ts
// (the same all-reduce a thread-mode worker runs, without a model). It posts
// one message: the summed vectors (check), the times of each call (bench), or
// the error a call failed with.
//
// With `hierarchical`, the thread is one member of a hierarchical group
// instead (test/hierarchical-allreduce.test.ts): a ring member first posts
// its ring endpoint's address and waits for its predecessor's (the launcher
// plays the coordinator), then every member runs HierarchicalAllReducer.
import { parentPort, workerData } from 'node:worker_threads';
import { SharedMemoryAllReducer, type SharedRegion } from './shared-memory.js';
import { HierarchicalAllReducer, hierarchicalRole, ringLinksAs, type HierarchicalLayout } from './hierarchical.js';
import { RingAllReducer } from './ring.js';
import { RingEndpoint } from './transport/ring-wiring.js';
import type { PeerAddress } from './transport/ws-handshake.js';
import type { AllReducer } from './reducer.js';

export interface SharedThreadTask {
  region: SharedRegion;
  rank: number;
  worldSize: number;
  tag: number;
  /** Length of each call's vector, in call order (lengths may differ between calls). */
  lengths: number[];
  /** bench: only times are posted, and calls before `warmup` are not timed. */
  mode: 'check' | 'bench';
  warmup?: number;
  arrivalTimeoutMs?: number;
  /** At call `at`: this rank exits its thread, or closes its reducer, once the call is under way (a failure drill). */
  fail?: { at: number; how: 'exit' | 'close' | 'absent' };
  /** At call `lateAt`, start 300 ms late (the others of a drill: so that the failing rank fails while it waits). */
  lateAt?: number;
  /** A member of a hierarchical group: `rank` and `worldSize` above are the group's; the region serves the local members. */
  hierarchical?: HierarchicalLayout;
}

/** What a hierarchical ring member posts before its result, and the answer it waits for. */
export interface RingAddressMessage { kind: 'address'; rank: number; address: PeerAddress }
export interface RingPeerMessage { peer: PeerAddress }

export type SharedThreadResult =
  | { kind: 'check'; rank: number; sums: Float32Array[] }
  | { kind: 'bench'; rank: number; times: number[] }
  | { kind: 'error'; rank: number; message: string; call: number; afterMs: number };

/** The value rank `rank` contributes at index i of call c: mixed signs and magnitudes, so summation order shows in the bits. */
export function sharedTestValue(rank: number, call: number, i: number): number {
  let x = Math.imul(i + 1, 0x9e3779b1) ^ Math.imul(rank + 7, 0x85ebca6b) ^ Math.imul(call + 3, 0xc2b2ae35);
  x = Math.imul(x ^ (x >>> 15), 0x2c1b3c6d);
  x ^= x >>> 12;
  const mantissa = ((x >>> 0) / 0x1_0000_0000) - 0.5;
  return Math.fround(mantissa * 2 ** (((x >>> 24) % 24) - 12));
}

/** The group member a hierarchical task describes, wired as group.ts and group-session.ts wire one. */
async function hierarchicalReducer(task: SharedThreadTask, layout: HierarchicalLayout): Promise<AllReducer> {
  const { rank, worldSize, tag } = task;
  const role = hierarchicalRole(rank, worldSize, layout);
  const local = role.local
    ? new SharedMemoryAllReducer(task.region, {
      rank: role.local.rank, worldSize: role.local.worldSize, tag, arrivalTimeoutMs: task.arrivalTimeoutMs, groupRanks: role.local.groupRanks,
    })
    : null;
  let ring: RingAllReducer | null = null;
  if (role.ring) {
    const endpoint = await RingEndpoint.listen({ rank, worldSize, tag, admit: 'any' });
    const peer = new Promise<PeerAddress>((resolve) => parentPort!.once('message', (m: RingPeerMessage) => resolve(m.peer)));
    parentPort!.postMessage({ kind: 'address', rank, address: endpoint.address } satisfies RingAddressMessage);
    const links = await endpoint.connect(await peer, { prevRank: role.ring.prevRank, nextRank: role.ring.nextRank });
    ring = new RingAllReducer(ringLinksAs(links, role.ring.rank, role.ring.worldSize), { tag, chunkElements: 4096 });
  }
  return new HierarchicalAllReducer({ rank, worldSize, local, ring });
}

async function main(task: SharedThreadTask): Promise<SharedThreadResult> {
  const { rank, worldSize, tag } = task;
  const reducer: AllReducer = task.hierarchical
    ? await hierarchicalReducer(task, task.hierarchical)
    : new SharedMemoryAllReducer(task.region, { rank, worldSize, tag, arrivalTimeoutMs: task.arrivalTimeoutMs });
  const sums: Float32Array[] = [];
  const times: number[] = [];
  let call = 0;
  let started = performance.now();
  try {
    for (; call < task.lengths.length; call++) {
      const n = task.lengths[call];
      const buf = new Float32Array(n);
      if (task.mode === 'check') for (let i = 0; i < n; i++) buf[i] = sharedTestValue(rank, call, i);
      else buf.fill(rank + 1);
      if (task.fail?.at === call) {
        if (task.fail.how === 'absent') process.exit(0);
        // Once this rank has copied in and waits, its event loop is free: fail there.
        setTimeout(() => (task.fail!.how === 'exit' ? process.exit(0) : void reducer.close()), 20);
      }
      if (task.lateAt === call) await new Promise((resolve) => setTimeout(resolve, 300));
      started = performance.now();
      await reducer.allReduceSum(buf, call);
      if (task.mode === 'check') sums.push(buf);
      else if (call >= (task.warmup ?? 0)) times.push(performance.now() - started);
    }
  } catch (err) {
    return { kind: 'error', rank, message: (err as Error).message, call, afterMs: performance.now() - started };
  } finally {
    await reducer.close();
  }
  return task.mode === 'check' ? { kind: 'check', rank, sums } : { kind: 'bench', rank, times };
}

if (parentPort && workerData) {
  const task = workerData as SharedThreadTask;
  // A ring member stays until every member has closed (the launcher says
  // when): a peer thread that is gone would cut its close handshake short.
  let onRelease: (m: { release?: boolean }) => void = () => {};
  const released = new Promise<void>((resolve) => (onRelease = (m) => m.release && resolve()));
  if (task.hierarchical) parentPort.on('message', onRelease);
  const result = await main(task);
  parentPort.postMessage(result);
  if (task.hierarchical) await released;
  parentPort.off('message', onRelease);
}
