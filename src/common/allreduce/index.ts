// Gradient all-reduce for data-parallel workers: ring and star algorithms
// over a Link abstraction, with WebSocket and in-memory transports.
//
// Wiring a ring (addresses travel through the coordinator):
//   worker r:    const endpoint = await RingEndpoint.listen({ rank, worldSize, host, port: 0, tag });
//                send endpoint.address to the coordinator;
//   coordinator: tells rank r the address of rank (r - 1 + N) % N;   (the steps: transport/ring-wiring.ts)
//   worker r:    const reducer = new RingAllReducer(await endpoint.connect(prevAddress), { tag });
//                await reducer.allReduceSum(grads, seq);   // every step, in place; seq counts the calls
//
// Wiring the star (hub in the coordinator):
//   coordinator: const server = await StarHubServer.listen({ worldSize, host, port, tag });
//                const hub = new StarHub(await server.accept(), { tag }); const serving = hub.serve();
//                ... at the end: await hub.close(); await serving;   (before the workers leave)
//   worker r:    const reducer = new StarAllReducer(await connectToStarHub(server.address, { rank, worldSize, tag }), rank, worldSize, { tag });
//
// Local threads (one process): SharedMemoryAllReducer over the region the
// coordinator creates (shared-memory.ts); a group of threads and other
// workers: HierarchicalAllReducer (hierarchical.ts; the wiring steps are in
// coordinator/group.ts).

export type { Link, RingLinks } from './transport/link.js';
export type { AllReducer } from './reducer.js';
export { RingAllReducer, type RingAllReducerOptions } from './ring.js';
export { StarAllReducer, StarHub, type StarOptions } from './star.js';
export { AllReduceError } from './errors.js';
export {
  createSharedRegion, MAX_SHARED_RANKS, prepareSharedRegion, sharedRegionCapacity, SharedMemoryAllReducer,
  type SharedMemoryOptions, type SharedRegion,
} from './shared-memory.js';
export {
  HierarchicalAllReducer, hierarchicalLayout, hierarchicalRole, ringLinksAs,
  type HierarchicalLayout, type HierarchicalParts, type HierarchicalRole,
} from './hierarchical.js';
export { buildReducer, type ReducerMember, type ReducerSpec } from './reducer-factory.js';
export { CommThread } from './comm-thread.js';
export type { CommSpan } from './comm-thread-types.js';
export {
  BucketFill, DEFAULT_BUCKET_CAP_MB, DEFAULT_FIRST_BUCKET_MB, planBuckets, type Bucket, type BucketedExchange, type BucketPlan,
} from './buckets.js';
export { DEFAULT_CHUNK_ELEMENTS, RingLayout } from './layout.js';
export { createMemoryLinkPair, createMemoryRing, type MemoryLinkOptions } from './transport/memory.js';
export { DEFAULT_MAX_FRAME_BYTES, type PeerAddress } from './transport/ws-handshake.js';
export { RingEndpoint, type RingConnectOptions, type RingEndpointOptions } from './transport/ring-wiring.js';
export {
  connectToStarHub,
  StarHubServer,
  type StarClientOptions,
  type StarHubServerOptions,
} from './transport/star-wiring.js';
