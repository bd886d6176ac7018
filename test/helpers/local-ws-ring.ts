// A full ring of WebSocket links in this process, for the all-reduce tests:
// every rank listens on 127.0.0.1 with an ephemeral port and connects to its
// predecessor, as the coordinator would have them do.

import { RingEndpoint, type RingLinks } from '../../src/common/allreduce/index.js';

export async function createLocalWsRing(
  worldSize: number,
  options: { tag?: number; maxFrameBytes?: number } = {},
): Promise<RingLinks[]> {
  const endpoints = await Promise.all(
    Array.from({ length: worldSize }, (_, rank) => RingEndpoint.listen({ rank, worldSize, ...options })),
  );
  return Promise.all(
    endpoints.map((e) => e.connect(endpoints[(e.rank - 1 + worldSize) % worldSize].address)),
  );
}
