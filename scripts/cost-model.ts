// A small cost model of one data-parallel step, calibrated on this project's
// own measurements, checked against the emulated cluster, and used to predict
// ResNet50 scaling on real links, with and without overlapping the
// all-reduce with backward, on an fp32 or a bf16 wire.
//
// One ring all-reduce of E elements on N ranks:
//
//   ring(E) = 2(N-1)·alpha + 2(N-1)/N · E · (w/link + 4/host + codec)
//
// - `w` is the wire's bytes an element (fp32 4, bf16 2); `link` the link
//   bandwidth (bytes/s); `alpha` the per-stage latency of the ring (2(N-1)
//   stages, each at least one link delay plus a message's software overhead).
// - `host` is how fast one Node process moves and sums gradient bytes through
//   the ring when the wire is not the limit. It is calibrated on fp32 rows of
//   the loopback all-reduce benchmark, where the wire is the raw TCP loopback
//   bandwidth measured in the same run: 1/busbw = 1/tcp + 1/host. It is
//   charged per fp32 byte of the gradient whatever the wire: the sums stay
//   fp32 (src/common/allreduce/wire-format.ts), and section 1's bf16 rows fit
//   that (a codec cost of 3.1 and 2.7 ns at N=2 and 4) far better than
//   halving it too (4.1 against 6.7 ns).
// - `codec` (bf16 only) is the encode, decode and accumulate of each element
//   a rank sends: fitted on the report's bf16 ring rows when it has any,
//   else --codec-ns.
// - alpha is calibrated from the emulated cluster's smallest model, where
//   bytes hardly matter.
//
// A step, without overlap:   step(N) = compute + ring(all gradients) + optimizer
// A step, with overlap (issue 14):
//   - gradients go into buckets in reverse parameter order, the first closed
//     at 1 MiB, the others at 25 MiB (PyTorch DDP's rule: a bucket closes at
//     the parameter that takes it to its cap, so it may pass it);
//   - a bucket is released when backward has produced its last gradient, on
//     the GPU-class schedule of src/common/model/flops.ts (a layer's time in
//     proportion to its FLOPs, forward a third of compute, backward two);
//   - one communication thread all-reduces the buckets in order, each
//     starting when it is released and the previous one is done;
//   - exposed = the end of the last bucket's all-reduce - the end of backward
//     (0 if before), and step(N) = compute + exposed + optimizer.
//
//   node dist/scripts/cost-model.js [--allreduce runs/bench-allreduce.json] \
//     [--netns runs/netns-1gbit/summary.tsv,...] [--compute-ms 150] [--host-gbs 0.5 --alpha-ms 10.7]

import fs from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { exitOnUsageError, intFlag, listFlag, choiceFlag, modelOption, numberFlag } from '../src/common/cli/flags.js';
import { UsageError, runMain } from '../src/common/cli/run-main.js';
import { planBuckets } from '../src/common/allreduce/buckets.js';
import { gradientReleaseSchedule } from '../src/common/model/flops.js';
import { buildModelSpec, type ModelName, type ModelSpec } from '../src/common/model/spec.js';

type Wire = 'fp32' | 'bf16';
const WIRES: readonly Wire[] = ['fp32', 'bf16'];
const WIRE_BYTES: Record<Wire, number> = { fp32: 4, bf16: 2 };

interface Options {
  allreduce: string;
  netns: string[];
  computeMs: number;
  optimizerMs: number;
  model: ModelName;
  width: number;
  batch: number;
  params?: number;
  netnsParams: number;
  hostGbs?: number;
  alphaMs?: number;
  linkRttMs: number;
  wires: Wire[];
  codecNs: number;
  firstBucketMb: number;
  bucketMb: number;
  out: string;
}

const program = exitOnUsageError(new Command('cost-model')
  .description('Fit a cost model of one data-parallel step to the all-reduce benchmark (and the emulated cluster), and predict the scaling of a model on real links (ResNet50 by default), with and without overlapping the all-reduce with backward')
  .option('--allreduce <file>', 'the report of node dist/scripts/bench-allreduce.js (not read with --host-gbs)', 'runs/bench-allreduce.json')
  .addOption(new Option('--netns <files>', 'summary.tsv files of scripts/netns-cluster.sh, comma-separated, to fit the per-stage latency')
    .argParser(listFlag((f) => f, 'runs/netns-1gbit/summary.tsv,runs/netns-10gbit/summary.tsv')).default([], 'none'))
  .addOption(new Option('--host-gbs <GB/s>', 'host rate of the ring code per process, instead of fitting it from --allreduce').argParser(numberFlag(0, true)))
  .addOption(new Option('--alpha-ms <ms>', 'per-stage latency of the ring, instead of fitting it from --netns (prior without either: 0.05)').argParser(numberFlag(0)))
  .addOption(new Option('--link-rtt-ms <ms>', 'round trip a real link adds to every ring stage (half of it a stage)').argParser(numberFlag(0)).default(0.1))
  .addOption(new Option('--compute-ms <ms>', "per-GPU forward+backward of the predicted model at the per-GPU batch (an input, not measured here)").argParser(numberFlag(0, true)).default(150))
  .addOption(new Option('--optimizer-ms <ms>', 'per-GPU optimizer time of one step').argParser(numberFlag(0)).default(10))
  .addOption(modelOption('resnet50', 'the predicted model (its layers give the buckets and the gradient release schedule)'))
  .addOption(new Option('--width <n>', 'its base width').argParser(intFlag(1)).default(64))
  .addOption(new Option('--batch <n>', 'per-GPU batch (only the FLOPs split between layers depends on it)').argParser(intFlag(1)).default(32))
  .addOption(new Option('--params <n>', 'parameters of the predicted model: a check, it must be those of --model at --width').argParser(intFlag(1)))
  .addOption(new Option('--netns-params <n>', 'parameters of the model the emulated cluster trained').argParser(intFlag(1)).default(701466))
  .addOption(new Option('--wires <list>', `wire formats to predict, of ${WIRES.join(', ')}`).argParser(listFlag(choiceFlag(WIRES), 'fp32,bf16')).default([...WIRES], WIRES.join(',')))
  .addOption(new Option('--codec-ns <ns>', 'bf16 encode+decode+accumulate per element sent, when --allreduce has no bf16 ring rows to fit it on').argParser(numberFlag(0)).default(2.9))
  .addOption(new Option('--first-bucket-mb <MiB>', 'cap of the first gradient bucket (the last layers)').argParser(numberFlag(0, true)).default(1))
  .addOption(new Option('--bucket-mb <MiB>', 'cap of every other bucket').argParser(numberFlag(0, true)).default(25))
  .option('--out <file>', 'JSON report', 'runs/cost-model.json'));

interface AllReduceRow { algo: string; wire?: string; workers: number; bytes: number; medianMs: number; busbwGBs: number }
interface AllReduceReport { rawTcp: { bytes: number; GBs: number }[]; results: AllReduceRow[] }

// Bad or missing measurements are errors: runMain ends the run with one line and exit 1, not a stack trace.

/** A measurement file, or a failure that says which script writes it. */
function readMeasurement(file: string, writtenBy: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): run ${writtenBy} first, or pass its output's path`);
  }
}

interface Ring { n: number; linkBps: number; hostBps: number; alpha: number; codecS: number }

/** Seconds of one ring all-reduce of `elements` fp32 gradients sent on `wire`. */
const ringSeconds = (elements: number, wire: Wire, r: Ring): number =>
  r.n <= 1 ? 0 : 2 * (r.n - 1) * r.alpha + ((2 * (r.n - 1)) / r.n) * elements * (WIRE_BYTES[wire] / r.linkBps + 4 / r.hostBps + (wire === 'bf16' ? r.codecS : 0));

/** The fp32 ring rows give the host rate; the bf16 ones, when any, the codec cost on top of it, both per N. */
function fitHost(report: AllReduceReport, file: string): { hostBps: number; codecS?: number; rows: number; bf16Rows: number } {
  const tcpOf = (bytes: number): number => {
    const t = report.rawTcp.find((x) => x.bytes === bytes);
    if (!t) throw new Error(`${file} has no raw TCP figure for ${bytes} bytes`);
    return t.GBs * 1e9;
  };
  // Reports before the 16-bit wires have no `wire`: their rows are fp32.
  const rings = report.results.filter((r) => r.algo === 'ring' && (r.wire ?? 'fp32') === 'fp32');
  if (rings.length === 0) throw new Error(`${file} has no fp32 ring results: run node dist/scripts/bench-allreduce.js with --algos ring`);
  const hostOf = (r: AllReduceRow): number => 1 / Math.max(1 / (r.busbwGBs * 1e9) - 1 / tcpOf(r.bytes), 1e-12);
  const hostBps = rings.reduce((s, r) => s + hostOf(r), 0) / rings.length;
  const bf16 = report.results.filter((r) => r.algo === 'ring' && r.wire === 'bf16' && r.workers > 1);
  if (bf16.length === 0) return { hostBps, rows: rings.length, bf16Rows: 0 };
  const codecs = bf16.map((r) => {
    const fp32 = rings.find((f) => f.workers === r.workers && f.bytes === r.bytes);
    const host = fp32 ? hostOf(fp32) : hostBps;
    const elements = r.bytes / 4;
    const perElement = r.medianMs / 1000 / (((2 * (r.workers - 1)) / r.workers) * elements);
    return Math.max(0, perElement - 2 / tcpOf(r.bytes) - 4 / host);
  });
  return { hostBps, codecS: codecs.reduce((a, b) => a + b, 0) / codecs.length, rows: rings.length, bf16Rows: bf16.length };
}

interface Bucket { index: number; params: number; elements: number; releaseMs: number }

/** The workers' own buckets (allreduce/buckets.ts), each released with the last of its gradients on the FLOPs schedule. */
function timedBuckets(spec: ModelSpec, releaseMs: Float64Array, firstMb: number, capMb: number): Bucket[] {
  return planBuckets(spec.params, capMb, firstMb).buckets.map((b) => ({
    index: b.index, params: b.params.length, elements: b.count, releaseMs: Math.max(...b.params.map((p) => releaseMs[p])),
  }));
}

/** When the last bucket's all-reduce ends, ms after the start of forward: one thread, buckets in order. */
function overlappedEndMs(buckets: Bucket[], wire: Wire, ring: Ring): number {
  let end = 0;
  for (const b of buckets) end = Math.max(b.releaseMs, end) + 1000 * ringSeconds(b.elements, wire, ring);
  return end;
}

function main(opts: Options): void {
  const spec = buildModelSpec({ name: opts.model, width: opts.width, numClasses: 10, inChannels: 3, norm: 'batch' });
  if (opts.params !== undefined && opts.params !== spec.paramCount) {
    throw new UsageError(`--params ${opts.params} is not ${opts.model} at --width ${opts.width} (${spec.paramCount} parameters): pass the model with --model and --width`);
  }

  // 1. Host rate (and bf16 codec cost) from the loopback benchmark, or as given.
  let hostBps: number;
  let codecS = opts.codecNs * 1e-9;
  let codecSource = 'from --codec-ns';
  if (opts.hostGbs !== undefined) {
    hostBps = opts.hostGbs * 1e9;
    console.log(`host rate (ring code, per process): ${opts.hostGbs.toFixed(2)} GB/s, as given (--host-gbs)`);
  } else {
    const report = JSON.parse(readMeasurement(opts.allreduce, 'node dist/scripts/bench-allreduce.js (--allreduce)')) as AllReduceReport;
    const fit = fitHost(report, opts.allreduce);
    hostBps = fit.hostBps;
    console.log(`host rate (ring code, per process): ${(hostBps / 1e9).toFixed(2)} GB/s, from ${fit.rows} loopback ring measurements`);
    if (fit.codecS !== undefined) {
      codecS = fit.codecS;
      codecSource = `fitted on ${fit.bf16Rows} loopback bf16 ring measurements`;
    }
  }
  console.log(`bf16 codec cost: ${(codecS * 1e9).toFixed(2)} ns an element sent, ${codecSource}`);

  // 2. Per-stage latency and the check against the emulated cluster.
  interface NetnsRow { workers: number; rate: string; images_per_s: number; allreduce_ms: number }
  const parseRate = (rate: string): number => {
    const m = /^([\d.]+)\s*([kmg]?)bit$/i.exec(rate);
    if (!m) throw new Error(`cannot read link rate "${rate}"`);
    return (Number(m[1]) * { '': 1, k: 1e3, m: 1e6, g: 1e9 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g']) / 8;
  };
  const netnsRows: NetnsRow[] = opts.netns.flatMap((file) => {
    const [head, ...lines] = readMeasurement(file, 'sudo bash scripts/netns-cluster.sh (--netns)').trim().split('\n');
    const cols = head.split('\t');
    return lines.map((line) => {
      const cells = line.split('\t');
      const get = (name: string) => cells[cols.indexOf(name)];
      return { workers: Number(get('workers')), rate: get('rate'), images_per_s: Number(get('images_per_s')), allreduce_ms: Number(get('allreduce_ms')) };
    });
  }).filter((r) => r.workers > 1);
  // The emulated cluster ran fp32, the wire it is checked on.
  const netnsRing = (r: NetnsRow, alpha: number): Ring => ({ n: r.workers, linkBps: parseRate(r.rate), hostBps, alpha, codecS });
  let alpha = 50e-6; // a prior for when no cluster run is given: a loopback message round of the ring
  let alphaSource = 'prior; pass --netns to fit';
  if (opts.alphaMs !== undefined) {
    alpha = opts.alphaMs / 1000;
    alphaSource = 'as given (--alpha-ms)';
  } else if (netnsRows.length > 0) {
    // Least squares for alpha alone: residual = measured - bandwidth term = 2(N-1) alpha.
    const xs = netnsRows.map((r) => 2 * (r.workers - 1));
    const ys = netnsRows.map((r) => r.allreduce_ms / 1000 - ringSeconds(opts.netnsParams, 'fp32', netnsRing(r, 0)));
    alpha = Math.max(0, xs.reduce((s, x, i) => s + x * ys[i], 0) / xs.reduce((s, x) => s + x * x, 0));
    alphaSource = `fitted on ${netnsRows.length} emulated-cluster runs`;
  }
  console.log(`per-stage latency alpha: ${(alpha * 1e3).toFixed(2)} ms (${alphaSource})`);

  const checks = netnsRows.map((r) => {
    const predicted = 1000 * ringSeconds(opts.netnsParams, 'fp32', netnsRing(r, alpha));
    return { workers: r.workers, rate: r.rate, measuredMs: r.allreduce_ms, predictedMs: predicted, errorPct: (100 * (predicted - r.allreduce_ms)) / r.allreduce_ms };
  });
  if (checks.length > 0) {
    console.log('\ncheck against the emulated cluster (all-reduce per step)');
    console.log('| N | link | measured ms | predicted ms | error |');
    console.log('|---|---|---|---|---|');
    for (const c of checks) console.log(`| ${c.workers} | ${c.rate} | ${c.measuredMs.toFixed(1)} | ${c.predictedMs.toFixed(1)} | ${c.errorPct.toFixed(0)}% |`);
  }

  // 3. Prediction on real links: the whole gradient after backward, and buckets during it.
  const elements = spec.paramCount;
  const computeMs = opts.computeMs;
  const schedule = gradientReleaseSchedule(spec, opts.batch, computeMs);
  const buckets = timedBuckets(spec, schedule.releaseMs, opts.firstBucketMb, opts.bucketMb);
  const stageAlpha = alpha + opts.linkRttMs / 1000 / 2;
  console.log(`\n${opts.model} width ${opts.width}: ${(4 * elements / 1e6).toFixed(1)} MB of fp32 gradients in ${buckets.length} buckets ` +
    `(${opts.firstBucketMb} MiB first, then ${opts.bucketMb} MiB), released from ${schedule.forwardMs.toFixed(1)} ms (forward) ` +
    `to ${computeMs} ms (end of backward) on the FLOPs schedule (batch ${opts.batch}, ${(schedule.forwardFlops / opts.batch / 1e9).toFixed(2)} GFLOPs an image forward)`);
  console.log('| bucket | parameters | MB | released at ms |');
  console.log('|---|---|---|---|');
  for (const b of buckets) console.log(`| ${b.index} | ${b.params} | ${(4 * b.elements / 1e6).toFixed(1)} | ${b.releaseMs.toFixed(1)} |`);

  interface Scenario { gbit: number; workers: number; wire: Wire; overlap: boolean; allreduceMs: number; exposedMs: number; stepMs: number; efficiency: number }
  const scenarios: Scenario[] = [];
  const links = [10, 25, 100];
  const sizes = [4, 8, 16, 32];
  const useful = computeMs + opts.optimizerMs;
  for (const wire of opts.wires) {
    for (const gbit of links) {
      for (const n of sizes) {
        const ring: Ring = { n, linkBps: (gbit * 1e9) / 8, hostBps, alpha: stageAlpha, codecS };
        const whole = 1000 * ringSeconds(elements, wire, ring);
        const bucketed = buckets.reduce((s, b) => s + 1000 * ringSeconds(b.elements, wire, ring), 0);
        const exposed = Math.max(0, overlappedEndMs(buckets, wire, ring) - computeMs);
        for (const [overlap, allreduceMs, exposedMs] of [[false, whole, whole], [true, bucketed, exposed]] as const) {
          const stepMs = useful + exposedMs;
          scenarios.push({ gbit, workers: n, wire, overlap, allreduceMs, exposedMs, stepMs, efficiency: useful / stepMs });
        }
      }
    }
  }
  const find = (gbit: number, n: number, wire: Wire, overlap: boolean) =>
    scenarios.find((s) => s.gbit === gbit && s.workers === n && s.wire === wire && s.overlap === overlap)!;
  console.log(`\npredicted step with compute ${computeMs} ms + optimizer ${opts.optimizerMs} ms per GPU; links add ${opts.linkRttMs} ms round trip a stage ` +
    '(all-reduce ms: of the whole gradient / of all buckets one after another; exposed: what backward does not hide)');
  console.log(`| link | N | wire | all-reduce ms | step ms, no overlap | efficiency, no overlap | bucketed all-reduce ms | exposed ms | step ms, overlap | efficiency, overlap |`);
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const wire of opts.wires) {
    for (const gbit of links) {
      for (const n of sizes) {
        const a = find(gbit, n, wire, false);
        const b = find(gbit, n, wire, true);
        console.log(`| ${gbit} Gbit/s | ${n} | ${wire} | ${a.allreduceMs.toFixed(0)} | ${a.stepMs.toFixed(0)} | ${(100 * a.efficiency).toFixed(0)}% | ` +
          `${b.allreduceMs.toFixed(0)} | ${b.exposedMs.toFixed(0)} | ${b.stepMs.toFixed(0)} | ${(100 * b.efficiency).toFixed(0)}% |`);
      }
    }
  }
  if (opts.wires.includes('bf16')) {
    const goal = find(25, 32, 'bf16', true);
    console.log(`\nissue 14's goal, 85% at N=32 on 25 Gbit/s with bf16 and overlap: the model says ${(100 * goal.efficiency).toFixed(0)}%`);
  }

  // The fp32 rows without overlap keep the shape earlier reports had.
  const prediction = scenarios.filter((s) => s.wire === 'fp32' && !s.overlap)
    .map(({ gbit, workers, allreduceMs, stepMs, efficiency }) => ({ gbit, workers, allreduceMs, stepMs, efficiency }));
  fs.mkdirSync(path.dirname(opts.out), { recursive: true });
  fs.writeFileSync(opts.out, JSON.stringify({
    hostBps, alpha, codecNs: codecS * 1e9, checks, computeMs, optimizerMs: opts.optimizerMs, linkRttMs: opts.linkRttMs,
    model: { name: opts.model, width: opts.width, batch: opts.batch, params: elements, forwardFlops: schedule.forwardFlops, forwardMs: schedule.forwardMs },
    buckets, prediction, scenarios,
  }, null, 2));
  console.log(`\nwrote ${opts.out}`);
}

await runMain('cost-model', async () => {
  program.parse();
  main(program.opts<Options>());
});
