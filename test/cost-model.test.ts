// The cost model (scripts/cost-model) on measurements made up from the model
// itself with known parameters: the fit must recover them, and its predictions
// must follow the formula, without overlap and with buckets released on the
// FLOPs schedule, on fp32 and bf16 wires. A missing measurement file is one
// clear line.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { gradientReleaseSchedule } from '../src/common/model/flops.js';
import { buildModelSpec } from '../src/common/model/spec.js';
import { makeTempDir } from './helpers/data-fixtures.js';
import { runScript } from './helpers/node-process.js';

const dir = makeTempDir('cost-model');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const HOST = 0.5e9; // bytes/s the ring code moves per process
const TCP = 3e9; // raw loopback bytes/s
const ALPHA = 0.01; // s per ring stage
const CODEC = 3e-9; // s per element a rank sends on a bf16 wire
const NETNS_BYTES = 4 * 701_466;
const ring = (n: number, bytes: number, link: number, alpha: number): number =>
  2 * (n - 1) * alpha + ((2 * (n - 1)) / n) * bytes * (1 / link + 1 / HOST);
/** bf16: half the bytes on the wire, the host's fp32 work, and the codec per element. */
const ringBf16 = (n: number, elements: number, link: number, alpha: number): number =>
  2 * (n - 1) * alpha + ((2 * (n - 1)) / n) * elements * (2 / link + 4 / HOST + CODEC);

function writeInputs(): { allreduce: string; netns: string } {
  const busbw = 1 / (1 / TCP + 1 / HOST);
  const results = [2, 4].flatMap((workers) => [
    { algo: 'ring', workers, bytes: 94_083_368, medianMs: 100, busbwGBs: busbw / 1e9 },
    // Other algorithms and 16-bit wires must not enter the host rate; bf16 rows give the codec cost.
    { algo: 'gloo', workers, bytes: 94_083_368, medianMs: 10, busbwGBs: 9 },
    { algo: 'ring', wire: 'bf16', workers, bytes: 94_083_368, medianMs: 1000 * ringBf16(workers, 94_083_368 / 4, TCP, 0), busbwGBs: 0.1 },
    { algo: 'ring', wire: 'fp16', workers, bytes: 94_083_368, medianMs: 500, busbwGBs: 0.2 },
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
    expect(stdout).toMatch(/bf16 codec cost: 3\.00 ns an element sent, fitted on 2 loopback bf16 ring measurements/);
    const model = JSON.parse(fs.readFileSync(out, 'utf8')) as {
      hostBps: number; alpha: number; codecNs: number; checks: { errorPct: number }[]; prediction: { gbit: number; workers: number; allreduceMs: number; efficiency: number }[];
    };
    expect(model.hostBps / HOST).toBeCloseTo(1, 6);
    expect(model.codecNs).toBeCloseTo(CODEC * 1e9, 6);
    expect(model.alpha).toBeCloseTo(ALPHA, 9);
    expect(model.checks).toHaveLength(4);
    for (const c of model.checks) expect(Math.abs(c.errorPct)).toBeLessThan(1e-6);
    // ResNet50 on 10 Gbit/s links with 32 GPUs; each link adds 0.1 ms of round trip (0.05 ms a stage).
    const p = model.prediction.find((r) => r.gbit === 10 && r.workers === 32)!;
    expect(p.allreduceMs).toBeCloseTo(1000 * ring(32, 4 * 23_520_842, 1.25e9, ALPHA + 0.05e-3), 6);
    expect(p.efficiency).toBeCloseTo(0.16 / (0.16 + p.allreduceMs / 1000), 9);
    expect(model.prediction).toHaveLength(12);
  });

  it('releases buckets on the FLOPs schedule and all-reduces them in order on one thread; only what backward does not hide is exposed', async () => {
    const out = path.join(dir, 'overlap', 'cost-model.json');
    // Inputs given as flags: no measurement file is read.
    const stdout = await runScript('cost-model.js', ['--host-gbs', '0.5', '--alpha-ms', '1', '--codec-ns', '3', '--allreduce', path.join(dir, 'none.json'), '--out', out], dir);
    expect(stdout).toMatch(/host rate \(ring code, per process\): 0\.50 GB\/s, as given/);
    expect(stdout).toMatch(/issue 14's goal, 85% at N=32 on 25 Gbit\/s with bf16 and overlap: the model says \d+%/);
    interface Scenario { gbit: number; workers: number; wire: string; overlap: boolean; allreduceMs: number; exposedMs: number; stepMs: number; efficiency: number }
    const model = JSON.parse(fs.readFileSync(out, 'utf8')) as {
      buckets: { index: number; params: number; elements: number; releaseMs: number }[]; scenarios: Scenario[]; prediction: unknown[];
    };
    expect(model.scenarios).toHaveLength(3 * 4 * 2 * 2);
    expect(model.prediction).toHaveLength(12);

    // The buckets, rebuilt here: reverse parameter order, closed once at 1 MiB, then at 25 MiB.
    const spec = buildModelSpec({ name: 'resnet50', width: 64, numClasses: 10, inChannels: 3, norm: 'batch' });
    const { releaseMs } = gradientReleaseSchedule(spec, 32, 150);
    const expected: { params: number; elements: number; releaseMs: number }[] = [];
    let open = { params: 0, elements: 0, releaseMs: 0 };
    for (let i = spec.params.length - 1; i >= 0; i--) {
      open = { params: open.params + 1, elements: open.elements + spec.params[i].size, releaseMs: releaseMs[i] };
      if (4 * open.elements >= (expected.length === 0 ? 1 : 25) * 1024 * 1024) {
        expected.push(open);
        open = { params: 0, elements: 0, releaseMs: 0 };
      }
    }
    if (open.params > 0) expected.push(open);
    expect(model.buckets.map(({ params, elements, releaseMs }) => ({ params, elements, releaseMs }))).toEqual(expected);
    expect(model.buckets.reduce((s, b) => s + b.elements, 0)).toBe(spec.paramCount);
    expect(model.buckets.at(-1)!.releaseMs).toBe(150); // the stem, at the end of backward
    expect(model.buckets[0].releaseMs).toBeGreaterThan(50); // after forward

    // One comm thread: each bucket starts at max(its release, the previous one's end).
    for (const s of model.scenarios.filter((x) => x.overlap)) {
      const link = (s.gbit * 1e9) / 8;
      const alpha = 1e-3 + 0.05e-3;
      const seconds = (e: number) => (s.wire === 'fp32' ? ring(s.workers, 4 * e, link, alpha) : ringBf16(s.workers, e, link, alpha));
      let end = 0;
      for (const b of expected) end = Math.max(b.releaseMs, end) + 1000 * seconds(b.elements);
      expect(s.exposedMs).toBeCloseTo(Math.max(0, end - 150), 6);
      expect(s.allreduceMs).toBeCloseTo(expected.reduce((t, b) => t + 1000 * seconds(b.elements), 0), 6);
      expect(s.stepMs).toBeCloseTo(160 + s.exposedMs, 9);
      expect(s.efficiency).toBeCloseTo(160 / s.stepMs, 9);
      // The last bucket cannot start before backward ends, and no bucket waits on another once backward is over.
      expect(s.exposedMs).toBeGreaterThanOrEqual(1000 * seconds(expected.at(-1)!.elements) - 1e-9);
      expect(s.exposedMs).toBeLessThanOrEqual(s.allreduceMs);
      const whole = model.scenarios.find((x) => !x.overlap && x.wire === s.wire && x.gbit === s.gbit && x.workers === s.workers)!;
      expect(whole.allreduceMs).toBeCloseTo(1000 * seconds(spec.paramCount), 6);
    }
  });

  it('hides all but the last bucket when the wire and host are fast, and refuses --params of another model', async () => {
    const out = path.join(dir, 'fast', 'cost-model.json');
    await runScript('cost-model.js', ['--host-gbs', '1000', '--alpha-ms', '0', '--link-rtt-ms', '0', '--wires', 'fp32', '--out', out], dir);
    const model = JSON.parse(fs.readFileSync(out, 'utf8')) as { buckets: { elements: number }[]; scenarios: { overlap: boolean; gbit: number; workers: number; exposedMs: number; allreduceMs: number }[] };
    expect(model.scenarios).toHaveLength(24);
    const s = model.scenarios.find((x) => x.overlap && x.gbit === 100 && x.workers === 32)!;
    // Each bucket is done before the next is released, so only the stem's bucket, summed after backward, shows.
    const last = model.buckets.at(-1)!.elements;
    expect(s.exposedMs).toBeCloseTo(1000 * ((2 * 31) / 32) * 4 * last * (1 / 12.5e9 + 1 / 1e12), 6);
    expect(s.exposedMs).toBeLessThan(s.allreduceMs / 5);

    const bad = runScript('cost-model.js', ['--host-gbs', '1', '--params', '11173962', '--out', out], dir);
    await expect(bad).rejects.toMatchObject({ code: 2, stderr: expect.stringMatching(/^cost-model: error: --params 11173962 is not resnet50 at --width 64 \(23520842 parameters\)/) });
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
