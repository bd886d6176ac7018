// A small cost model of one data-parallel step, calibrated on this project's
// own measurements, checked against the emulated cluster, and used to predict
// ResNet50 scaling on real links.
//
//   step(N)      = compute + allreduce(N) + optimizer
//   allreduce(N) = 2(N-1) * alpha  +  2(N-1)/N * bytes * (1/link + 1/host)
//
// - `link` is the link bandwidth (bytes/s); `alpha` the per-stage latency of
//   the ring (2(N-1) stages, each at least one link delay plus a message's
//   software overhead).
// - `host` is how fast one Node process moves and sums gradient bytes through
//   the ring when the wire is not the limit. It is calibrated from the
//   loopback all-reduce benchmark, where the wire is the raw TCP loopback
//   bandwidth measured in the same run: 1/busbw = 1/tcp + 1/host.
// - alpha is calibrated from the emulated cluster's smallest model, where
//   bytes hardly matter.
//
//   node dist/scripts/cost-model.js [--allreduce runs/bench-allreduce.json] \
//     [--netns runs/netns-1gbit/summary.tsv,...] [--compute-ms 150] [--params 23520842]

import fs from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { exitOnUsageError, intFlag, listFlag, numberFlag } from '../src/common/cli/flags.js';
import { runMain } from '../src/common/cli/run-main.js';

interface Options {
  allreduce: string;
  netns: string[];
  computeMs: number;
  optimizerMs: number;
  params: number;
  netnsParams: number;
  out: string;
}

const program = exitOnUsageError(new Command('cost-model')
  .description('Fit a cost model of one data-parallel step to the all-reduce benchmark (and the emulated cluster), and predict ResNet50 scaling on real links')
  .option('--allreduce <file>', 'the report of node dist/scripts/bench-allreduce.js', 'runs/bench-allreduce.json')
  .addOption(new Option('--netns <files>', 'summary.tsv files of scripts/netns-cluster.sh, comma-separated, to fit the per-stage latency')
    .argParser(listFlag((f) => f, 'runs/netns-1gbit/summary.tsv,runs/netns-10gbit/summary.tsv')).default([], 'none'))
  .addOption(new Option('--compute-ms <ms>', "per-GPU forward+backward of ResNet50 at the recipe's per-GPU batch (an input, not measured here)").argParser(numberFlag(0)).default(150))
  .addOption(new Option('--optimizer-ms <ms>', 'per-GPU optimizer time of one step').argParser(numberFlag(0)).default(10))
  .addOption(new Option('--params <n>', 'parameters of the predicted model (ResNet50)').argParser(intFlag(1)).default(23520842))
  .addOption(new Option('--netns-params <n>', 'parameters of the model the emulated cluster trained').argParser(intFlag(1)).default(701466))
  .option('--out <file>', 'JSON report', 'runs/cost-model.json'));

interface AllReduceRow { algo: string; workers: number; bytes: number; medianMs: number; busbwGBs: number }
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

const ringSeconds = (n: number, bytes: number, linkBps: number, hostBps: number, alpha: number): number =>
  n <= 1 ? 0 : 2 * (n - 1) * alpha + ((2 * (n - 1)) / n) * bytes * (1 / linkBps + 1 / hostBps);

function main(opts: Options): void {
  // 1. Host rate from the loopback benchmark (largest buffer, ring, every N measured).
  const report = JSON.parse(readMeasurement(opts.allreduce, 'node dist/scripts/bench-allreduce.js (--allreduce)')) as AllReduceReport;
  const rings = report.results.filter((r) => r.algo === 'ring');
  if (rings.length === 0) throw new Error(`${opts.allreduce} has no ring results: run node dist/scripts/bench-allreduce.js with --algos ring`);
  const hostRates = rings.map((r) => {
    const tcp = report.rawTcp.find((t) => t.bytes === r.bytes)!.GBs * 1e9;
    const bus = r.busbwGBs * 1e9;
    return 1 / Math.max(1 / bus - 1 / tcp, 1e-12);
  });
  const hostBps = hostRates.reduce((a, b) => a + b, 0) / hostRates.length;
  console.log(`host rate (ring code, per process): ${(hostBps / 1e9).toFixed(2)} GB/s, from ${rings.length} loopback ring measurements`);

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
  const netnsBytes = 4 * opts.netnsParams;
  let alpha = 50e-6; // a prior for when no cluster run is given: a loopback message round of the ring
  if (netnsRows.length > 0) {
    // Least squares for alpha alone: residual = measured - bandwidth term = 2(N-1) alpha.
    const xs = netnsRows.map((r) => 2 * (r.workers - 1));
    const ys = netnsRows.map((r) => r.allreduce_ms / 1000 - ringSeconds(r.workers, netnsBytes, parseRate(r.rate), hostBps, 0));
    alpha = Math.max(0, xs.reduce((s, x, i) => s + x * ys[i], 0) / xs.reduce((s, x) => s + x * x, 0));
  }
  console.log(`per-stage latency alpha: ${(alpha * 1e3).toFixed(2)} ms${netnsRows.length ? ` (fitted on ${netnsRows.length} emulated-cluster runs)` : ' (prior; pass --netns to fit)'}`);

  const checks = netnsRows.map((r) => {
    const predicted = 1000 * ringSeconds(r.workers, netnsBytes, parseRate(r.rate), hostBps, alpha);
    return { workers: r.workers, rate: r.rate, measuredMs: r.allreduce_ms, predictedMs: predicted, errorPct: (100 * (predicted - r.allreduce_ms)) / r.allreduce_ms };
  });
  if (checks.length > 0) {
    console.log('\ncheck against the emulated cluster (all-reduce per step)');
    console.log('| N | link | measured ms | predicted ms | error |');
    console.log('|---|---|---|---|---|');
    for (const c of checks) console.log(`| ${c.workers} | ${c.rate} | ${c.measuredMs.toFixed(1)} | ${c.predictedMs.toFixed(1)} | ${c.errorPct.toFixed(0)}% |`);
  }

  // 3. Prediction: ResNet50 gradients on real links.
  const bytes = 4 * opts.params;
  const computeS = opts.computeMs / 1000;
  const optimS = opts.optimizerMs / 1000;
  const links = [10, 25, 100];
  const sizes = [4, 8, 16, 32];
  const table: { gbit: number; workers: number; allreduceMs: number; stepMs: number; efficiency: number }[] = [];
  console.log(`\npredicted ResNet50 (${(bytes / 1e6).toFixed(1)} MB of gradients) step with compute ${opts.computeMs} ms + optimizer ${opts.optimizerMs} ms per GPU`);
  console.log('| link | N | all-reduce ms | step ms | scaling efficiency |');
  console.log('|---|---|---|---|---|');
  for (const gbit of links) {
    for (const n of sizes) {
      const ar = ringSeconds(n, bytes, (gbit * 1e9) / 8, hostBps, alpha + 0.1e-3 / 2);
      const step = computeS + optimS + ar;
      const efficiency = (computeS + optimS) / step;
      table.push({ gbit, workers: n, allreduceMs: 1000 * ar, stepMs: 1000 * step, efficiency });
      console.log(`| ${gbit} Gbit/s | ${n} | ${(1000 * ar).toFixed(0)} | ${(1000 * step).toFixed(0)} | ${(100 * efficiency).toFixed(0)}% |`);
    }
  }
  console.log('(links assumed to add 0.1 ms round-trip latency; compute overlaps nothing: the all-reduce starts after backward)');
  fs.mkdirSync(path.dirname(opts.out), { recursive: true });
  fs.writeFileSync(opts.out, JSON.stringify({ hostBps, alpha, checks, prediction: table, computeMs: opts.computeMs }, null, 2));
  console.log(`\nwrote ${opts.out}`);
}

await runMain('cost-model', async () => {
  program.parse();
  main(program.opts<Options>());
});
