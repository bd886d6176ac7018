// The cost model (scripts/cost-model) on measurements made up from the model
// itself with known parameters: the fit must recover them, and its predictions
// must follow the formula. A missing measurement file is one clear line.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir } from './helpers/data-fixtures.js';
import { runScript } from './helpers/node-process.js';

const dir = makeTempDir('cost-model');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const HOST = 0.5e9; // bytes/s the ring code moves per process
const TCP = 3e9; // raw loopback bytes/s
const ALPHA = 0.01; // s per ring stage
const NETNS_BYTES = 4 * 701_466;
const ring = (n: number, bytes: number, link: number, alpha: number): number =>
  2 * (n - 1) * alpha + ((2 * (n - 1)) / n) * bytes * (1 / link + 1 / HOST);

function writeInputs(): { allreduce: string; netns: string } {
  const busbw = 1 / (1 / TCP + 1 / HOST);
  const results = [2, 4].flatMap((workers) => [
    { algo: 'ring', workers, bytes: 94_083_368, medianMs: 100, busbwGBs: busbw / 1e9 },
    // Other algorithms must not enter the host rate.
    { algo: 'gloo', workers, bytes: 94_083_368, medianMs: 10, busbwGBs: 9 },
  ]);
  const allreduce = path.join(dir, 'bench-allreduce.json');
  fs.writeFileSync(allreduce, JSON.stringify({ rawTcp: [{ bytes: 94_083_368, GBs: TCP / 1e9 }], results }));
  const netns = path.join(dir, 'summary.tsv');
  const rows = [[2, '1gbit', 125e6], [4, '1gbit', 125e6], [2, '10gbit', 1.25e9], [4, '10gbit', 1.25e9]] as const;
  fs.writeFileSync(netns, ['workers\trate\timages_per_s\tallreduce_ms',
    ...rows.map(([n, rate, bps]) => `${n}\t${rate}\t100\t${1000 * ring(n, NETNS_BYTES, bps, ALPHA)}`)].join('\n') + '\n');
  return { allreduce, netns };
}

describe('scripts/cost-model', () => {
  it('recovers the host rate and per-stage latency it was given, and predicts by its formula', async () => {
    const { allreduce, netns } = writeInputs();
    const out = path.join(dir, 'out', 'cost-model.json');
    const stdout = await runScript('cost-model.js', ['--allreduce', allreduce, '--netns', netns, '--out', out], dir);
    expect(stdout).toMatch(/host rate \(ring code, per process\): 0\.50 GB\/s, from 2 loopback ring measurements/);
    const model = JSON.parse(fs.readFileSync(out, 'utf8')) as {
      hostBps: number; alpha: number; checks: { errorPct: number }[]; prediction: { gbit: number; workers: number; allreduceMs: number; efficiency: number }[];
    };
    expect(model.hostBps / HOST).toBeCloseTo(1, 6);
    expect(model.alpha).toBeCloseTo(ALPHA, 9);
    expect(model.checks).toHaveLength(4);
    for (const c of model.checks) expect(Math.abs(c.errorPct)).toBeLessThan(1e-6);
    // ResNet50 on 10 Gbit/s links with 32 GPUs; each link adds 0.1 ms of round trip (0.05 ms a stage).
    const p = model.prediction.find((r) => r.gbit === 10 && r.workers === 32)!;
    expect(p.allreduceMs).toBeCloseTo(1000 * ring(32, 4 * 23_520_842, 1.25e9, ALPHA + 0.05e-3), 6);
    expect(p.efficiency).toBeCloseTo(0.16 / (0.16 + p.allreduceMs / 1000), 9);
    expect(model.prediction).toHaveLength(12);
  });

  it('a missing measurement file is one line naming the script that writes it, exit 1', async () => {
    const run = runScript('cost-model.js', ['--allreduce', path.join(dir, 'none.json')], dir);
    await expect(run).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/^cost-model: error: cannot read .*none\.json \(ENOENT\): run node dist\/scripts\/bench-allreduce\.js/),
    });
    const err = (await run.catch((e: unknown) => e)) as { stderr: string };
    expect(err.stderr).not.toMatch(/\n\s+at /);
  });
});
