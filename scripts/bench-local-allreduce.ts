// The shared-memory all-reduce of local thread replicas
// (src/common/allreduce/shared-memory.ts) at gradient size: N worker threads
// of this process, one region, the same reducer a thread-mode worker uses,
// against PyTorch's gloo over loopback in the same run (where python3-torch is
// installed: scripts/torch_gloo_allreduce.py). Times are rank 0's per call
// (every call is a barrier for all ranks); busbw is NCCL's bus bandwidth,
// 2(N-1)/N x bytes / time.
//
//   node dist/scripts/bench-local-allreduce.js [--size 23520842] [--workers 2,4] \
//     [--iters 9] [--warmup 2] [--python /usr/bin/python3] [--no-gloo] [--out runs/bench-local-allreduce.json]
//
// Its JSON rows have bench-allreduce's fields (algo 'local' or 'gloo', wire,
// workers, elements, medianMs, busbwGBps), so the two can be merged.
// bench-allreduce measures 'local' rows by default too, with this file's
// measureLocalAllReduce, in the same run as its ring, star and gloo rows.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { runSharedMemoryThreads } from '../src/common/allreduce/shared-memory-launch.js';
import { exitOnUsageError, intFlag, listFlag } from '../src/common/cli/flags.js';
import { runMain } from '../src/common/cli/run-main.js';
import { measureGloo } from './gloo-allreduce.js';
import { median } from './timing-stats.js';

const SCRIPT = fileURLToPath(import.meta.url);

export interface LocalRow {
  algo: 'local' | 'gloo';
  wire: 'fp32';
  workers: number;
  elements: number;
  medianMs: number;
  busbwGBps: number;
  times: number[];
}


const busbw = (workers: number, elements: number, ms: number): number => (2 * (workers - 1) / workers) * elements * 4 / (ms * 1e6);

function row(algo: LocalRow['algo'], workers: number, elements: number, times: number[]): LocalRow {
  const medianMs = median(times);
  return { algo, wire: 'fp32', workers, elements, medianMs, busbwGBps: busbw(workers, elements, medianMs), times };
}

/** Median time of the shared-memory all-reduce of `elements` floats across `workers` threads of this process. */
export async function measureLocalAllReduce(workers: number, elements: number, iters: number, warmup: number): Promise<LocalRow> {
  const results = await runSharedMemoryThreads(workers, { lengths: new Array(warmup + iters).fill(elements), mode: 'bench', warmup });
  const r0 = results[0];
  for (const r of results) if (r.kind === 'error') throw new Error(`local all-reduce rank ${r.rank}: ${r.message}`);
  if (r0.kind !== 'bench') throw new Error('rank 0 posted no times');
  return row('local', workers, elements, r0.times);
}

/** PyTorch's gloo all-reduce of the same buffer in N processes (the slowest rank per call). */
export async function measureGlooAllReduce(python: string, workers: number, elements: number, iters: number, warmup: number): Promise<LocalRow> {
  return row('gloo', workers, elements, (await measureGloo(python, workers, elements, iters, warmup)).times);
}

interface Options {
  size: number;
  workers: number[];
  iters: number;
  warmup: number;
  python: string;
  gloo: boolean;
  out: string;
}

const program = exitOnUsageError(new Command('bench-local-allreduce')
  .description('Shared-memory all-reduce between local worker threads (algo local), against PyTorch gloo on loopback (algo gloo)')
  .addOption(new Option('--size <n>', 'gradient size in float32 elements (ResNet50)').argParser(intFlag(1)).default(23520842))
  .addOption(new Option('--workers <list>', 'thread counts').argParser(listFlag(intFlag(2))).default([2, 4], '2,4'))
  .addOption(new Option('--iters <n>', 'timed all-reduces per configuration').argParser(intFlag(1)).default(9))
  .addOption(new Option('--warmup <n>', 'untimed all-reduces before them').argParser(intFlag(0)).default(2))
  .option('--python <path>', 'python3 with PyTorch, for gloo', '/usr/bin/python3')
  .option('--no-gloo', 'do not measure gloo')
  .option('--out <file>', 'JSON report', 'runs/bench-local-allreduce.json'));

if (process.argv[1] && resolve(process.argv[1]) === SCRIPT) {
  await runMain('bench-local-allreduce', async () => {
    const opts = program.parse().opts<Options>();
    const rows: LocalRow[] = [];
    let glooMissing = !opts.gloo;
    console.log('algo   wire  N  elements    median ms  busbw GB/s  vs gloo');
    for (const workers of opts.workers) {
      const local = await measureLocalAllReduce(workers, opts.size, opts.iters, opts.warmup);
      rows.push(local);
      let gloo: LocalRow | null = null;
      if (!glooMissing) {
        try {
          gloo = await measureGlooAllReduce(opts.python, workers, opts.size, opts.iters, opts.warmup);
          rows.push(gloo);
        } catch (err) {
          console.log(`gloo: not measured (${((err as Error).message.split('\n')[0])}); install python3-torch (Debian) to compare`);
          glooMissing = true;
        }
      }
      const line = (r: LocalRow, ratio: string) => console.log(
        `${r.algo.padEnd(6)} ${r.wire}  ${String(r.workers).padEnd(2)} ${String(r.elements).padEnd(11)} ${r.medianMs.toFixed(1).padStart(9)}  ` +
        `${r.busbwGBps.toFixed(2).padStart(10)}  ${ratio}`);
      line(local, gloo ? `${(gloo.medianMs / local.medianMs).toFixed(2)}x gloo's speed` : '');
      if (gloo) line(gloo, '');
    }
    mkdirSync(dirname(resolve(opts.out)), { recursive: true });
    writeFileSync(opts.out, JSON.stringify({ rows }, null, 2) + '\n');
    console.log(`wrote ${opts.out}`);
  });
}
