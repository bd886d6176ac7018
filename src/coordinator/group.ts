// A group: the workers that train together, in rank order, wired into one
// all-reduce. The coordinator forms the first group when --workers have
// joined, and a new one whenever membership changes (membership.ts). Forming
// gives every member the state to start from: newcomers are sent the weights
// and momentum, survivors check theirs against the survivors' checksum, so
// every member starts the group identical. Forming takes three steps:
//
//   1. init to every member: rank, world size, config, a fresh tag, and the
//      state (to a member that holds it already, only its checksum);
//   2. data-status from every member; the dataset to those that lack it;
//   3. ready from every member (its ring address); connect to every member
//      (its predecessor's address, or the star hub's), and the hub serves.
//      When every member is one of this process's threads (each names the
//      LocalWorkers' shared region in ready), the region is reset for the
//      group and connect says reducer 'shared-memory' instead.
//
// A ring group that mixes at least two of this process's threads with other
// workers (child processes, remote machines) is wired hierarchically
// (common/allreduce/hierarchical.ts), when every member's ready says it can
// (`hierarchical: true`; an older worker cannot, and the group uses the
// flat ring), in place of step 3's connect:
//
//   3a. the local members are those naming the region, the leader the lowest
//       ranked of them; the ring members are the leader and every other
//       member, in rank order (hierarchicalLayout);
//   3b. the region is reset for the local members (world size: their count);
//   3c. connect to every member: reducer 'hierarchical', localRanks and
//       ringRanks (the same for all: each member finds its own part); peer:
//       a ring member's predecessor in the ring members' order (its ring
//       address from ready), null for the other local members;
//   3d. the other local members close their ring endpoints; each ring member
//       connects its endpoint (which admits any rank of the group) to its
//       predecessor and waits for its successor, both named by group rank,
//       and renumbers the links for the ring (ring rank = its index in
//       ringRanks). Every all-reduce: local sum, the ring, the leader's
//       result copied by the other local members.

import { randomInt } from 'node:crypto';
import type { TrainConfig } from '../common/training/config.js';
import type { RunState } from '../common/training/run-state.js';
import {
  hierarchicalLayout, prepareSharedRegion, sharedRegionCapacity, StarHub, StarHubServer, type HierarchicalLayout, type SharedRegion,
} from '../common/allreduce/index.js';
import type { WireName } from '../common/allreduce/wire-format.js';
import {
  configHash, type AllReduceKind, type ControlConnection, type ControlMessage, type MessageOfType,
} from '../common/protocol/index.js';
import type { RunFeed, WorkerView } from './dashboard/run-feed.js';

/** A worker admitted to the run. */
export interface Member {
  conn: ControlConnection;
  /** host:port it connected from, for messages. */
  address: string;
  /** Its row on the dashboard. */
  view: WorkerView | null;
}

/** A member failed (its socket closed, it sent an error, the watchdog gave up on it, or its all-reduce broke). */
export class MemberFailure extends Error {
  override name = 'MemberFailure';

  constructor(readonly member: Member, cause: Error) {
    super(cause.message, { cause });
  }
}

export interface GroupSetup {
  cfg: TrainConfig;
  allreduce: AllReduceKind;
  /** The ring's wire format (fp32 unless --wire says otherwise); the star and shared memory are fp32. */
  wire: WireName;
  checksumEvery: number;
  heartbeatMs: number;
  /** Host of the star hub (the coordinator's interface). */
  hubHost: string;
  datasetHash: string;
  datasetBytes: number;
  /** The dataset blob, for members that do not hold it; encoded when needed (it is a second copy of the data). */
  datasetBlob: () => Uint8Array;
  log: (line: string) => void;
  feed: RunFeed | null;
  /** The local threads' shared region (LocalWorkers), if any: a ring group made only of them all-reduces through it. */
  sharedRegion?: SharedRegion | null;
}

/** Members that hold the state's weights and momentum already, and the checksum they agreed on. */
export interface Holders {
  members: Set<Member>;
  checksum: string;
}

export class Group {
  private constructor(
    readonly members: Member[],
    private readonly hub: StarHub | null,
    private readonly serving: Promise<void> | null,
  ) {}

  /** Members that were sent their init but whose group failed to form: only to be halted. */
  static unformed(members: Member[]): Group {
    return new Group(members, null, null);
  }

  get size(): number {
    return this.members.length;
  }

  /**
   * Sends every member its rank and `state`, the dataset to those that lack
   * it, and wires the all-reduce. Rejects with MemberFailure if a member fails.
   * `holders`: members known to hold the state's weights and momentum (the
   * survivors of a halt, with the checksum they reported); they are not sent
   * them again.
   */
  static async form(
    members: Member[], state: RunState, setup: GroupSetup, holders: Holders | null = null,
  ): Promise<Group> {
    // A fresh tag per group: frames of a group that was halted cannot enter this one.
    const tag = randomInt(1, 0xffff_ffff);
    sendInits(members, state, setup, holders, tag);
    await sendDataset(members, setup);
    const { hub, serving } = await wireAllReduce(members, setup, tag);
    return new Group(members, hub, serving);
  }

  /** Sends `msg` to every member; a member whose socket is gone fails the call. */
  broadcast(msg: ControlMessage): void {
    for (const m of this.members) send(m, msg);
  }

  gather<T extends ControlMessage['type']>(type: T): Promise<MessageOfType<T>[]> {
    return gather(this.members, type);
  }

  /** Stops the star hub, if any. */
  async close(): Promise<void> {
    if (!this.hub) return;
    await this.hub.close();
    await this.serving?.catch(() => {});
  }
}

function send(m: Member, msg: ControlMessage): void {
  try {
    m.conn.send(msg);
  } catch (err) {
    throw new MemberFailure(m, err as Error);
  }
}

/**
 * Step 1 of forming: every member's `init` (its rank, the config, the state;
 * holders get the checksum in place of the weights and momentum). Every
 * member that can be reached gets its init, even after one fails: the
 * recovery that follows halts them all, and a halt only makes sense to a
 * worker that has been given a group.
 */
function sendInits(members: Member[], state: RunState, setup: GroupSetup, holders: Holders | null, tag: number): void {
  const { cfg, allreduce } = setup;
  const worldSize = members.length;
  const hash = configHash(cfg);
  let unreachable: MemberFailure | null = null;
  const none = new Float32Array(0);
  members.forEach((m, rank) => {
    m.conn.peer = `rank ${rank} (worker ${m.address})`;
    const holds = holders?.members.has(m) ?? false;
    try {
      send(m, {
        type: 'init', rank, worldSize, config: cfg, configHash: hash, datasetHash: setup.datasetHash, datasetBytes: setup.datasetBytes,
        weights: holds ? none : state.weights, momentum: holds ? none : state.momentum, runningStats: state.runningStats,
        stateIncluded: !holds, stateChecksum: holds ? holders!.checksum : '', step: state.step,
        allreduce, wire: setup.wire, tag, checksumEvery: setup.checksumEvery, heartbeatMs: setup.heartbeatMs,
      });
    } catch (err) {
      unreachable ??= err as MemberFailure;
    }
  });
  if (unreachable) throw unreachable;
  if (holders) {
    const kept = members.filter((m) => holders.members.has(m)).length;
    setup.log(`group of ${worldSize} from step ${state.step}: ${kept} kept their weights and momentum, ${worldSize - kept} were sent them`);
  }
}

/** Step 2: each member says whether it holds the dataset; those that do not are sent the blob. */
async function sendDataset(members: Member[], setup: GroupSetup): Promise<void> {
  const statuses = await gather(members, 'data-status');
  const needing = members.filter((_, rank) => !statuses[rank].cached);
  if (needing.length > 0) {
    const blob = setup.datasetBlob();
    for (const m of needing) send(m, { type: 'dataset', hash: setup.datasetHash, blob });
  }
  setup.log(`dataset ${setup.datasetHash.slice(0, 12)} (${(setup.datasetBytes / 1e6).toFixed(1)} MB): sent to ${needing.length} worker(s), ` +
    `cached on ${members.length - needing.length}`);
}

/**
 * Step 3: once every member is `ready`, tells each one its all-reduce peer
 * (ring: its predecessor's endpoint; star: the hub, which listens here
 * from before the members are ready and serves once all are connected).
 */
async function wireAllReduce(
  members: Member[], setup: GroupSetup, tag: number,
): Promise<{ hub: StarHub | null; serving: Promise<void> | null }> {
  const worldSize = members.length;
  const hubServer = setup.allreduce === 'star' && worldSize > 1 ? await StarHubServer.listen({ worldSize, host: setup.hubHost, port: 0, tag }) : null;
  try {
    const readies = await gather(members, 'ready');
    readies.forEach((r, rank) => {
      setup.log(`rank ${rank}: ready, backend ${r.backend}`);
      if (members[rank].view) setup.feed?.workerUpdate(members[rank].view!, { backend: r.backend, state: 'ready' });
    });
    const plan = planReduction(readies, setup);
    // Every member waits for connect and no older group's reducer is open (its members halted): reset the region for this group.
    if (plan.kind === 'shared-memory') {
      prepareSharedRegion(plan.region, tag, worldSize);
      setup.log(`all-reduce: shared memory between ${worldSize} local threads (region ${plan.region.id})` +
        (setup.wire === 'fp32' ? '' : `, in fp32: --wire ${setup.wire} applies to ring links only`));
    } else if (plan.kind === 'hierarchical') {
      const { localRanks, ringRanks } = plan.layout;
      prepareSharedRegion(plan.region, tag, localRanks.length);
      setup.log(`all-reduce: hierarchical: shared memory between ${localRanks.length} local threads (ranks ${localRanks.join(', ')}; ` +
        `region ${plan.region.id}), ring of ${ringRanks.length} (leader rank ${localRanks[0]} + ` +
        `rank${ringRanks.length > 2 ? 's' : ''} ${ringRanks.filter((r) => r !== localRanks[0]).join(', ')})` +
        (setup.wire === 'fp32' ? '' : `; --wire ${setup.wire} on the ring only`));
    }
    members.forEach((m, rank) => {
      if (plan.kind === 'hierarchical') {
        const { ringRanks } = plan.layout;
        const i = ringRanks.indexOf(rank);
        const peer = i < 0 ? null : readies[ringRanks[(i - 1 + ringRanks.length) % ringRanks.length]].ringAddress;
        send(m, { type: 'connect', peer, reducer: 'hierarchical', localRanks: plan.layout.localRanks, ringRanks });
        return;
      }
      const peer = worldSize === 1 ? null : hubServer ? hubServer.address : readies[(rank - 1 + worldSize) % worldSize].ringAddress;
      send(m, { type: 'connect', peer, ...(plan.kind === 'shared-memory' ? { reducer: 'shared-memory' } : {}) });
    });
    if (!hubServer) return { hub: null, serving: null };
    const hub = new StarHub(await hubServer.accept(), { tag });
    const serving = hub.serve();
    serving.catch(() => {}); // a hub failure also fails the workers' all-reduce, which they report
    return { hub, serving };
  } catch (err) {
    await hubServer?.close();
    throw err;
  }
}

type ReductionPlan =
  | { kind: 'plain' }
  | { kind: 'shared-memory'; region: SharedRegion }
  | { kind: 'hierarchical'; region: SharedRegion; layout: HierarchicalLayout };

/**
 * How a group all-reduces: the star or the flat ring ('plain'); through the
 * coordinator's region when every member of a ring group reported it (they
 * are all its threads) and it has room; hierarchically when at least two
 * members reported it, at least one did not, and every member can join one.
 */
function planReduction(readies: MessageOfType<'ready'>[], setup: GroupSetup): ReductionPlan {
  const region = setup.sharedRegion ?? null;
  if (!region || setup.allreduce !== 'ring' || readies.length < 2) return { kind: 'plain' };
  const local = readies.flatMap((r, rank) => (r.localRegion === region.id ? [rank] : []));
  if (local.length < 2 || local.length > sharedRegionCapacity(region)) return { kind: 'plain' };
  if (local.length === readies.length) return { kind: 'shared-memory', region };
  if (!readies.every((r) => r.hierarchical === true)) return { kind: 'plain' };
  return { kind: 'hierarchical', region, layout: hierarchicalLayout(local, readies.length) };
}

/**
 * One message of `type` from every member, in rank order. The first failure
 * rejects at once with MemberFailure, and the other members' pending receives
 * are withdrawn, so their next messages stay queued for the recovery.
 */
export function gather<T extends ControlMessage['type']>(members: Member[], type: T): Promise<MessageOfType<T>[]> {
  return new Promise((resolve, reject) => {
    const out: MessageOfType<T>[] = new Array(members.length);
    let left = members.length;
    let failed = false;
    if (left === 0) resolve(out);
    members.forEach((m, rank) => {
      m.conn.expect(type).then(
        (msg) => {
          out[rank] = msg;
          if (--left === 0 && !failed) resolve(out);
        },
        (err: Error) => {
          if (failed) return;
          failed = true;
          for (const other of members) if (other !== m) other.conn.interrupt('the group is failing');
          reject(new MemberFailure(m, err));
        },
      );
    });
  });
}
