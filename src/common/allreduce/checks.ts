// Argument checks shared by the ring and star reducers and the WebSocket
// transport: the frame format holds tags, sequence numbers and lengths as u32.

import { MAX_U32 } from './frame.js';

export function checkReduceArgs(buf: Float32Array, seq: number): void {
  if (!(buf instanceof Float32Array)) {
    throw new TypeError('allReduceSum needs a Float32Array gradient buffer');
  }
  if (buf.length > MAX_U32) {
    throw new RangeError(`gradient of ${buf.length} elements exceeds the frame format's u32 length limit`);
  }
  if (!Number.isInteger(seq) || seq < 0 || seq > MAX_U32) {
    throw new RangeError(`seq (the all-reduce sequence number) must be an integer in [0, 2^32), got ${seq}`);
  }
}

export function checkTag(tag: number): void {
  if (!Number.isInteger(tag) || tag < 0 || tag > MAX_U32) {
    throw new RangeError(`tag must be an integer in [0, 2^32), got ${tag}`);
  }
}

export function checkRankAndWorld(rank: number, worldSize: number): void {
  if (!Number.isInteger(worldSize) || worldSize < 1) {
    throw new RangeError(`worldSize must be a positive integer, got ${worldSize}`);
  }
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
    throw new RangeError(`rank must be an integer in [0, ${worldSize}), got ${rank}`);
  }
}
