// A worker_threads body that runs SharedMemoryAllReducer on generated data,
// for test/shared-memory-allreduce.test.ts and scripts/bench-local-allreduce.ts
// (the same all-reduce a thread-mode worker runs, without a model). It posts
// one message: the summed vectors (check), the times of each call (bench), or
// the error a call failed with.
import { parentPort, workerData } from 'node:worker_threads';
import { SharedMemoryAllReducer, type SharedRegion } from './shared-memory.js';

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
}

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

async function main(task: SharedThreadTask): Promise<SharedThreadResult> {
  const { rank, worldSize, tag } = task;
  const reducer = new SharedMemoryAllReducer(task.region, { rank, worldSize, tag, arrivalTimeoutMs: task.arrivalTimeoutMs });
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
  const result = await main(workerData as SharedThreadTask);
  parentPort.postMessage(result);
}
