// PyTorch's gloo all-reduce of a gradient-sized buffer, in N Python
// processes on loopback (scripts/torch_gloo_allreduce.py): the baseline that
// bench-allreduce and bench-local-allreduce measure against in the same run.
import { execFile } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { WireName } from '../src/common/allreduce/wire-format.js';

const SCRIPT = resolve(dirname(fileURLToPath(import.meta.url)), '../../scripts/torch_gloo_allreduce.py');

/** Each call's time (the slowest rank's) and the largest rank's peak RSS; throws if PyTorch is missing or refuses `dtype`. */
export async function measureGloo(
  python: string, workers: number, size: number, iters: number, warmup: number, dtype: WireName = 'fp32',
): Promise<{ times: number[]; peakRssMb: number }> {
  const args = [SCRIPT, '--world', String(workers), '--size', String(size), '--iters', String(iters), '--warmup', String(warmup), '--dtype', dtype];
  const { stdout } = await promisify(execFile)(python, args, { encoding: 'utf8', maxBuffer: 1 << 20 });
  const r = JSON.parse(stdout.trim().split('\n').at(-1)!) as { times_ms: number[]; peak_rss_mb: number };
  return { times: r.times_ms, peakRssMb: r.peak_rss_mb };
}
