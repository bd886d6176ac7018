// The all-reduce benchmark as users run it: real rank processes on loopback,
// the shared-memory threads ('local'), its table and JSON, --help, and the
// gloo comparison (measured where PyTorch is installed, reported as not
// measured where it is not). Tiny buffers: this checks the benchmark's
// machinery, never its speed.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir } from './helpers/data-fixtures.js';
import { runScript } from './helpers/node-process.js';
import { pytorch, SYSTEM_PYTHON } from './helpers/system-deps.js';

const ITERS = 2;
const dir = makeTempDir('bench-allreduce');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

interface Row { algo: string; wire: string; compressed: boolean; elements: number; busbwVsTcp: number; workers: number; bytes: number; medianMs: number; algbwGBs: number; busbwGBs: number; peakRssMb: number; timesMs: number[] }

async function bench(python: string, out: string, extra: string[] = []): Promise<{ stdout: string; rows: Row[] }> {
  const stdout = await runScript('bench-allreduce.js', ['--sizes', '10000', '--workers', '2,3', '--iters', String(ITERS), '--warmup', '1', '--chunk', '1024',
    '--python', python, '--out', out, ...extra]);
  return { stdout, rows: (JSON.parse(fs.readFileSync(out, 'utf8')) as { results: Row[] }).results };
}

function checkRow(r: Row): void {
  expect(r.timesMs).toHaveLength(ITERS);
  expect(r.medianMs).toBeGreaterThan(0);
  expect(r.algbwGBs).toBeCloseTo(r.bytes / r.medianMs / 1e6, 6);
  expect(r.busbwGBs).toBeCloseTo((r.algbwGBs * 2 * (r.workers - 1)) / r.workers, 6);
  expect(r.peakRssMb).toBeGreaterThan(10);
}

describe('scripts/bench-allreduce', () => {
  it('by default measures ring and star in separate rank processes and local threads, and says when gloo cannot be measured', async () => {
    const { stdout, rows } = await bench(path.join(dir, 'no-such-python'), path.join(dir, 'no-torch.json'));
    // The script itself checks every rank's sum and that all ranks end with the same bits.
    // No --algos or --wires: every algorithm in every wire format it has (star and local are fp32 only), 16-bit ones marked compressed.
    expect(rows.map((r) => `${r.algo}-${r.wire}${r.workers}`)).toEqual([
      'ring-fp322', 'ring-bf162', 'ring-fp162', 'star-fp322', 'local-fp322',
      'ring-fp323', 'ring-bf163', 'ring-fp163', 'star-fp323', 'local-fp323',
    ]);
    for (const r of rows) {
      expect(r.compressed).toBe(r.wire !== 'fp32');
      expect(r.elements).toBe(10000);
      expect(r.busbwVsTcp).toBeGreaterThan(0);
    }
    expect(stdout).toMatch(/\| ring \| bf16 \(compressed\) \| 3 \| 10000 \|/);
    // The shared-memory rows, with the same fields, in the table too (busbw and its ratio to raw TCP).
    expect(stdout).toMatch(/\| local \| fp32 \| 2 \| 10000 \| 0\.0 \| [\d.]+ \| [\d.]+ ± [\d.]+ \| [\d.]+ \| [\d.]+ \| \d+% \|/);
    rows.forEach(checkRow);
    expect(stdout).toMatch(/gloo: not measured \(.*\); install python3-torch/);
    expect(stdout.match(/not measured/g)).toHaveLength(1);
    expect(stdout).toMatch(/\| ring \| fp32 \| 3 \| 10000 \| 0\.0 \|/);
  }, 60_000);

  it('--help lists the algorithms, wire formats and the fields of a row', async () => {
    const help = await runScript('bench-allreduce.js', ['--help']);
    expect(help).toMatch(/--algos <list>\s+algorithms, of ring, star, local, gloo \(default:\s+ring,star,local,gloo\)/);
    expect(help).toMatch(/--wires <list>\s+wire formats, of fp32, bf16, fp16 .*\(default:\s+fp32,bf16,fp16\)/s);
    for (const field of ['algo', 'wire', 'workers', 'elements', 'medianMs', 'busbwGBs', 'busbwVsTcp']) expect(help).toMatch(new RegExp(`^  ${field} `, 'm'));
    expect(help).toMatch(/local \(shared memory between threads/);
  });

  pytorch.test('measures gloo in the same run where PyTorch is installed (/usr/bin/python3)', async () => {
    // gloo in fp32 only: the other algorithms and the 16-bit rows are checked above, and gloo's are slow to start.
    const { stdout, rows } = await bench(SYSTEM_PYTHON, path.join(dir, 'default.json'), ['--algos', 'gloo', '--wires', 'fp32']);
    const gloo = rows.filter((r) => r.algo === 'gloo' && r.wire === 'fp32');
    expect(gloo.map((r) => r.workers)).toEqual([2, 3]);
    gloo.forEach(checkRow);
    expect(stdout).not.toMatch(/gloo: not measured/);
  }, 120_000);
});
