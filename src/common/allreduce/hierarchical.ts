// The hierarchical all-reduce of a group that mixes the coordinator's local
// threads with other workers (child processes, remote machines): the threads
// sum among themselves through their shared region, one of them (the leader)
// takes that sum around an ordinary ring with the other workers, and the
// threads copy the leader's result. A ring over K threads plus R others would
// carry the gradient over K + R - 1 loopback and network hops per stage; this
// one does K - 1 of them in memory and sends only one stream per process.
//
// Roles (`hierarchicalLayout`, decided by the coordinator from `ready`):
//   local members   the group ranks that share the region, in rank order;
//                   local rank = index, the leader is local rank 0 (the
//                   lowest group rank among them);
//   ring members    the leader and every non-local member, in rank order;
//                   ring rank = index, ring world = their count.
//
// One all-reduce, every member with the same seq:
//   1. local members: the shared-memory all-reduce (every local member holds
//      the local sum, bit-identical);
//   2. ring members: the ring all-reduce (the leader with the local sum, the
//      others with their own gradient; every ring member ends bit-identical);
//   3. local members: broadcast from the leader through the region, a copy,
//      so every local member holds the leader's bits (SharedMemoryAllReducer
//      .broadcast; an all-reduce with zeros would turn -0 into +0).
// So every rank of the group ends with the same bytes. The sum's order is
// ((local sum) around the ring): close to, not bitwise, the sequential sum.
//
// Failure: any part failing fails this reducer and closes both parts (the
// guard), so the others fail at once: closing the shared part raises the
// region's abort word (the local members waiting in step 1 or 3 fail naming
// this rank), closing the ring part closes its links (the ring neighbours
// fail, naming their peer).

import { AllReduceError, errorMessage } from './errors.js';
import { checkReduceArgs } from './checks.js';
import { ReduceGuard } from './reduce-guard.js';
import type { AllReducer } from './reducer.js';
import type { RingAllReducer } from './ring.js';
import type { SharedMemoryAllReducer } from './shared-memory.js';
import type { RingLinks } from './transport/link.js';

/** Who does what in a hierarchical group: group ranks, in the orders above. */
export interface HierarchicalLayout {
  /** The local members (sharing the region), in rank order; the first is the leader. */
  localRanks: number[];
  /** The leader and every non-local member, in rank order. */
  ringRanks: number[];
}

/** The layout of a group of `worldSize` whose members `local` share the region. */
export function hierarchicalLayout(local: readonly number[], worldSize: number): HierarchicalLayout {
  const localRanks = [...new Set(local)].sort((a, b) => a - b);
  if (localRanks.length < 2 || localRanks.length >= worldSize || localRanks.some((r) => !Number.isInteger(r) || r < 0 || r >= worldSize)) {
    throw new RangeError(`a hierarchical group of ${worldSize} needs 2 to ${worldSize - 1} local ranks in [0, ${worldSize}), got ${local.join(', ')}`);
  }
  const isLocal = new Set(localRanks);
  const ringRanks = Array.from({ length: worldSize }, (_, r) => r).filter((r) => r === localRanks[0] || !isLocal.has(r));
  return { localRanks, ringRanks };
}

/** One member's part in a hierarchical group (`hierarchicalRole`). */
export interface HierarchicalRole {
  /** Its rank in the region and the region's world size; null for a non-local member. */
  local: { rank: number; worldSize: number; groupRanks: number[] } | null;
  /** Its ring rank and world, and its neighbours' group ranks; null for a local member that is not the leader. */
  ring: { rank: number; worldSize: number; prevRank: number; nextRank: number } | null;
}

/**
 * Group rank `rank`'s part in `layout` (as `connect` carries it); throws a
 * message naming what is wrong when the layout is not one
 * `hierarchicalLayout` could have made for a group of `worldSize`.
 */
export function hierarchicalRole(rank: number, worldSize: number, layout: HierarchicalLayout): HierarchicalRole {
  const { localRanks, ringRanks } = layout;
  const valid = (ranks: number[]) =>
    ranks.every((r, i) => Number.isInteger(r) && r >= 0 && r < worldSize && (i === 0 || r > ranks[i - 1]));
  const ok = valid(localRanks) && valid(ringRanks) && localRanks.length >= 2 && ringRanks.length >= 2 &&
    // the leader is the only local member in the ring, and every rank has a part
    ringRanks.filter((r) => localRanks.includes(r)).join() === String(localRanks[0]) &&
    new Set([...localRanks, ...ringRanks]).size === worldSize;
  if (!ok) {
    throw new Error(`hierarchical all-reduce: local ranks [${localRanks.join(', ')}] and ring ranks [${ringRanks.join(', ')}] ` +
      `do not make a group of ${worldSize}`);
  }
  const l = localRanks.indexOf(rank);
  const i = ringRanks.indexOf(rank);
  const m = ringRanks.length;
  return {
    local: l < 0 ? null : { rank: l, worldSize: localRanks.length, groupRanks: localRanks },
    ring: i < 0 ? null : { rank: i, worldSize: m, prevRank: ringRanks[(i - 1 + m) % m], nextRank: ringRanks[(i + 1) % m] },
  };
}

/**
 * Ring links opened with the group's ranks (RingEndpoint with admit 'any')
 * renumbered for the ring of `worldSize` members in which this one is `rank`.
 */
export function ringLinksAs(links: RingLinks, rank: number, worldSize: number): RingLinks {
  return { ...links, rank, worldSize };
}

export interface HierarchicalParts {
  /** This member's group rank and the group's size, for messages. */
  rank: number;
  worldSize: number;
  /** The shared-memory reducer of the local members (null for a non-local member). */
  local: SharedMemoryAllReducer | null;
  /** The ring of the leader and the non-local members (null for a local member that is not the leader). */
  ring: RingAllReducer | null;
}

/** One member of a hierarchical group; see the file header. */
export class HierarchicalAllReducer implements AllReducer {
  readonly rank: number;
  readonly worldSize: number;
  private readonly local: SharedMemoryAllReducer | null;
  private readonly ring: RingAllReducer | null;
  private readonly guard: ReduceGuard;

  constructor(parts: HierarchicalParts) {
    if (!parts.local && !parts.ring) throw new RangeError('a hierarchical member needs a local part, a ring part, or both');
    if (parts.local && parts.ring && parts.local.rank !== 0) throw new RangeError('only the leader (local rank 0) joins the ring');
    this.rank = parts.rank;
    this.worldSize = parts.worldSize;
    this.local = parts.local;
    this.ring = parts.ring;
    this.guard = new ReduceGuard(async () => {
      await Promise.allSettled([this.local?.close(), this.ring?.close()]);
    });
  }

  /** What this member is, for messages: "rank 3 of 4 (leader of 2 local, ring rank 0 of 3)". */
  private describe(): string {
    const { local, ring } = this;
    const parts = [
      local ? (ring ? `leader of ${local.worldSize} local` : `local rank ${local.rank} of ${local.worldSize}`) : null,
      ring ? `ring rank ${ring.rank} of ${ring.worldSize}` : null,
    ].filter((p) => p !== null);
    return `rank ${this.rank} of ${this.worldSize} (${parts.join(', ')})`;
  }

  async allReduceSum(buf: Float32Array, seq: number): Promise<void> {
    checkReduceArgs(buf, seq);
    const where = `hierarchical all-reduce, ${this.describe()}, #${seq}`;
    await this.guard.run(where, async () => {
      try {
        await this.local?.allReduceSum(buf, seq);
        await this.ring?.allReduceSum(buf, seq);
        await this.local?.broadcast(buf, seq, 0);
      } catch (err) {
        // The parts name their peers in their own numbering; say which member this was.
        throw new AllReduceError(`${where}: ${errorMessage(err)}`, (err as AllReduceError).peer, { cause: err });
      }
    });
  }

  async close(): Promise<void> {
    await this.guard.close();
  }
}
