// Where a worker's all-reduce lives for one group session: in the worker's
// own thread (overlap off: one all-reduce after backward), or in a
// communication thread (overlap on: buckets reduced while backward runs,
// allreduce/comm-thread.ts). Either way the session sees the same three
// moves: listen before `ready`, build the reducer from `connect`, close.
import {
  buildReducer, CommThread, RingEndpoint, type AllReducer, type PeerAddress, type ReducerSpec, type RingEndpointOptions,
} from '../common/allreduce/index.js';

export interface ReducerHost {
  /** This rank's ring endpoint, for `ready` (null when the group has no ring). */
  readonly address: PeerAddress | null;
  /** The communication thread, when the reducer lives in one (a bucketed step drives it). */
  readonly comm: CommThread | null;
  /** Builds the reducer `connect` describes. */
  connect(spec: ReducerSpec): Promise<AllReducer>;
  /** Closes the endpoint and the reducer: a pending connect or all-reduce fails at once. */
  close(): Promise<void>;
}

/**
 * Opens the host: listens on `ring` (if the group uses a ring), in a
 * communication thread when `overlap`, which then reduces in place in
 * `memory` (the optimizer's shared memory, where the gradient lives).
 */
export async function openReducerHost(options: {
  overlap: boolean; ring: RingEndpointOptions | null; memory: SharedArrayBuffer;
  /** Keep the communication thread's spans (--timeline). */
  spans: boolean;
}): Promise<ReducerHost> {
  return options.overlap ? openCommThreadHost(options.ring, options.memory, options.spans) : openLocalHost(options.ring);
}

async function openLocalHost(ring: RingEndpointOptions | null): Promise<ReducerHost> {
  const endpoint = ring ? await RingEndpoint.listen(ring) : null;
  let reducer: AllReducer | null = null;
  return {
    address: endpoint?.address ?? null,
    comm: null,
    connect: async (spec) => (reducer = await buildReducer(spec, endpoint)),
    close: async () => {
      await endpoint?.close();
      await reducer?.close();
    },
  };
}

async function openCommThreadHost(ring: RingEndpointOptions | null, memory: SharedArrayBuffer, spans: boolean): Promise<ReducerHost> {
  const comm = CommThread.start({ spans });
  try {
    const address = ring ? await comm.listenRing(ring) : null;
    return {
      address,
      comm,
      connect: async (spec) => {
        await comm.connect(spec);
        await comm.attach(memory);
        return comm;
      },
      close: () => comm.close(),
    };
  } catch (err) {
    await comm.close();
    throw err;
  }
}
