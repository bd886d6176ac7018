// Building a group's reducer from what the coordinator's `connect` said, in
// one place for both threads that may own it: the worker's own (no overlap)
// and its communication thread (comm-thread-entry.ts). The worker turns its
// `connect` into a ReducerSpec; everything here is plain data, so a spec
// crosses postMessage (a shared region is shared, not copied).
import { HierarchicalAllReducer, hierarchicalRole, ringLinksAs } from './hierarchical.js';
import { RingAllReducer } from './ring.js';
import { SharedMemoryAllReducer, type SharedRegion } from './shared-memory.js';
import { StarAllReducer } from './star.js';
import { connectToStarHub } from './transport/star-wiring.js';
import type { AllReducer } from './reducer.js';
import type { RingEndpoint } from './transport/ring-wiring.js';
import type { PeerAddress } from './transport/ws-handshake.js';
import type { WireName } from './wire-format.js';

/** This rank in its group. */
export interface ReducerMember {
  rank: number;
  worldSize: number;
  tag: number;
  wire: WireName;
}

export type ReducerSpec = ReducerMember & (
  /** The flat ring: `peer` is the predecessor's endpoint (chunkElements: tests use small frames). */
  | { kind: 'ring'; peer: PeerAddress; chunkElements?: number }
  | { kind: 'star'; peer: PeerAddress }
  /** Every member is a thread of the coordinator's process, sharing `region`. */
  | { kind: 'shared-memory'; region: SharedRegion }
  /** Local reduce in `region` among `localRanks`, a ring among `ringRanks` (peer: the ring predecessor's, if this rank is in it), local broadcast. */
  | { kind: 'hierarchical'; region: SharedRegion | null; localRanks: number[]; ringRanks: number[]; peer: PeerAddress | null }
);

/**
 * The reducer `spec` describes, over `endpoint` (this rank's ring listener,
 * opened before `ready`; closed here when the reducer does not use it).
 */
export async function buildReducer(spec: ReducerSpec, endpoint: RingEndpoint | null): Promise<AllReducer> {
  const { rank, worldSize, tag, wire } = spec;
  switch (spec.kind) {
    case 'ring':
      if (endpoint === null) throw new Error('internal: a ring reducer needs this rank\'s ring endpoint');
      return new RingAllReducer(await endpoint.connect(spec.peer), { tag, wire, chunkElements: spec.chunkElements });
    case 'star':
      return new StarAllReducer(await connectToStarHub(spec.peer, { rank, worldSize, tag }), rank, worldSize, { tag });
    case 'shared-memory':
      // No sockets: the endpoint the coordinator did not need is closed.
      await endpoint?.close();
      return new SharedMemoryAllReducer(spec.region, { rank, worldSize, tag });
    case 'hierarchical':
      return buildHierarchical(spec, endpoint);
  }
}

/** The region if this rank is local, the ring (renumbered) if it is a ring member; a local member outside the ring closes its endpoint. */
async function buildHierarchical(spec: Extract<ReducerSpec, { kind: 'hierarchical' }>, endpoint: RingEndpoint | null): Promise<AllReducer> {
  const { rank, worldSize, tag, wire } = spec;
  const role = hierarchicalRole(rank, worldSize, { localRanks: spec.localRanks, ringRanks: spec.ringRanks });
  if (role.local && !spec.region) throw new Error(`the coordinator counts rank ${rank} among its local threads, but this worker holds no shared region`);
  if (role.ring && (!spec.peer || endpoint === null)) throw new Error('the coordinator sent no ring peer address for the hierarchical all-reduce');
  if (!role.ring) await endpoint?.close();
  const local = role.local
    ? new SharedMemoryAllReducer(spec.region!, { rank: role.local.rank, worldSize: role.local.worldSize, tag, groupRanks: role.local.groupRanks })
    : null;
  try {
    const ring = role.ring
      ? new RingAllReducer(
        ringLinksAs(await endpoint!.connect(spec.peer!, { prevRank: role.ring.prevRank, nextRank: role.ring.nextRank }), role.ring.rank, role.ring.worldSize),
        { tag, wire },
      )
      : null;
    return new HierarchicalAllReducer({ rank, worldSize, local, ring });
  } catch (err) {
    // The local members wait for this one: closing its part fails them now, not at the halt.
    await local?.close();
    throw err;
  }
}
