// The scale test: trains the same model on the same data with 1, 2 and 4
// workers (same seed, same global batch, so the same global batches) and shows
// whether N workers converge like one, and how much faster they are.
//
//   npx tsc -p . && node dist/scripts/scale-test.js \
//     [--workers 1,2,4] [--dataset fashion-mnist] [--model resnet18] [--width 8] \
//     [--epochs 3] [--batch-size 128] [--train-limit 4096] [--test-limit 1000] \
//     [--backend wasm] [--per-worker-batch] [--seeds 1] [--wire fp32] [--out runs/scale-test]
//
// With --wire bf16|fp16 the multi-worker runs all-reduce over the ring in
// that 16-bit format (compressed: lossy sums; the threads then skip their
// shared memory, which sums in fp32), while N=1 has nothing to exchange: the
// table then shows how far compressed sums move accuracy from one worker,
// next to the spread of N=1's own seeds.
//
// With --seeds K every N is trained K times (seeds 0..K-1, the same K for
// every N), and accuracies are reported as mean ± std over the seeds: the
// gap between N=1 and N=4 means something only next to the spread that a
// different seed gives N=1 itself.
//
// Writes OUT/scale.png (test accuracy and loss curves, one line per N),
// OUT/scale.json and OUT/scale.md (the table), and each run's own outputs in
// OUT/nN/. With --per-worker-batch every worker keeps --batch-size, so the
// global batch and lr grow with N (linear scaling rule): the curves then
// compare the two recipes rather than the same computation.

import fs from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { DEFAULTS, type TrainConfig } from '../src/common/training/config.js';
import { runCoordinator } from '../src/coordinator/coordinator.js';
import { SHARED_MEMORY_ENV } from '../src/coordinator/local-workers.js';
import { WIRE_NAMES, type WireName } from '../src/common/allreduce/wire-format.js';
import { writeLinePlotPng, type PlotSeries } from '../src/common/io/plot/line-plot.js';
import type { EpochMetrics } from '../src/common/io/metrics.js';
import type { BackendChoice } from '../src/common/backend/names.js';
import type { DatasetName } from '../src/common/data/types.js';
import type { ModelName } from '../src/common/model/spec.js';
import { backendOption, datasetOption, exitOnUsageError, intFlag, listFlag, modelOption } from '../src/common/cli/flags.js';
import { runMain } from '../src/common/cli/run-main.js';
import { measurePeakRss } from './peak-rss.js';

interface Options {
  workers: number[];
  dataset: DatasetName;
  model: ModelName;
  width: number;
  epochs: number;
  batchSize: number;
  trainLimit: number;
  testLimit: number;
  backend: BackendChoice;
  seed: number;
  seeds: number;
  perWorkerBatch: boolean;
  wire: WireName;
  out: string;
}

const program = exitOnUsageError(new Command('scale-test')
  .description('Train the same model on the same global batches with 1, 2, 4... workers and compare convergence and speed')
  .addOption(new Option('--workers <list>', 'worker counts to compare, the first is the reference').argParser(listFlag(intFlag(1))).default([1, 2, 4], '1,2,4'))
  .addOption(datasetOption('training data', 'fashion-mnist'))
  .addOption(modelOption('resnet18'))
  .addOption(new Option('--width <n>', 'base width').argParser(intFlag(1)).default(8))
  .addOption(new Option('--epochs <n>', 'epochs (the cosine schedule anneals over them)').argParser(intFlag(1)).default(3))
  .addOption(new Option('--batch-size <n>', 'global batch size (per worker with --per-worker-batch)').argParser(intFlag(1)).default(128))
  .addOption(new Option('--train-limit <n>', 'class-balanced subset of the training set').argParser(intFlag(1)).default(4096))
  .addOption(new Option('--test-limit <n>', 'class-balanced subset of the test set').argParser(intFlag(1)).default(1000))
  .addOption(backendOption('wasm'))
  .addOption(new Option('--seed <n>', 'first seed').argParser(intFlag(0)).default(0))
  .addOption(new Option('--seeds <k>', 'train every N with seeds seed..seed+k-1 and report mean ± std').argParser(intFlag(1)).default(1))
  .addOption(new Option('--wire <format>', "the ring's wire format for N > 1 (bf16, fp16: compressed)").choices([...WIRE_NAMES]).default('fp32'))
  .option('--per-worker-batch', '--batch-size is per worker: global batch and lr grow with N (linear scaling rule)', false)
  .option('--out <dir>', 'output directory: scale.png, scale.md, scale.json and each run in nN/', 'runs/scale-test'));

interface Row {
  workers: number;
  globalBatch: number;
  /** Per seed: final and best test accuracy. */
  finalTestAcc: number[];
  bestTestAcc: number[];
  /** Largest |test_acc(N) - test_acc(first N)| over epochs and seeds (same seed compared), in accuracy points. */
  maxGapPoints: number;
  wallSeconds: number;
  imagesPerS: number;
  speedup: number;
  efficiency: number;
  allReduceShare: number;
  /** Peak RSS of this process (coordinator and worker threads) over the seeds; the most tensor MB one worker held. */
  peakRssMb: number;
  tensorMb: number;
  /** Per seed. */
  histories: EpochMetrics[][];
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const std = (xs: number[]) => (xs.length < 2 ? 0 : Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1)));
const pct = (xs: number[]) => `${(100 * mean(xs)).toFixed(2)}%` + (xs.length > 1 ? ` ± ${(100 * std(xs)).toFixed(2)}` : '');

async function main(opts: Options): Promise<void> {
  const base: TrainConfig = {
    ...DEFAULTS,
    model: opts.model, width: opts.width, dataset: opts.dataset,
    epochs: opts.epochs, batchSize: opts.batchSize, trainLimit: opts.trainLimit,
    testLimit: opts.testLimit, backend: opts.backend, seed: opts.seed, plots: false,
    // The schedule of a 61-epoch run would hardly move in a few epochs: anneal over this run instead.
    tMax: opts.epochs,
  };
  const worldSizes = opts.workers;
  // The ring carries the 16-bit format; local threads would otherwise sum in shared memory, in fp32.
  if (opts.wire !== 'fp32') process.env[SHARED_MEMORY_ENV] = '0';
  const seedCount = opts.seeds;

  const rows: Row[] = [];
  for (const workers of worldSizes) {
    const row: Row = {
      workers, globalBatch: 0, finalTestAcc: [], bestTestAcc: [], maxGapPoints: 0, wallSeconds: 0, imagesPerS: 0, speedup: 0, efficiency: 0,
      allReduceShare: 0, peakRssMb: 0, tensorMb: 0, histories: [],
    };
    let trainSeconds = 0;
    let images = 0;
    for (let k = 0; k < seedCount; k++) {
      const seed = base.seed + k;
      const out = path.join(opts.out, seedCount > 1 ? `n${workers}-seed${seed}` : `n${workers}`);
      console.log(`--- ${workers} worker(s)${seedCount > 1 ? `, seed ${seed}` : ''} ---`);
      const started = Date.now();
      const { result, peakRssMb } = await measurePeakRss(() => runCoordinator({ ...base, seed, out }, {
        workers, port: 0, perWorkerBatch: opts.perWorkerBatch, wire: opts.wire, dashboard: false, log: (line) => console.log(`  ${line}`),
      }));
      row.peakRssMb = Math.max(row.peakRssMb, peakRssMb);
      row.tensorMb = Math.max(row.tensorMb, result.peakTensorBytes / 2 ** 20);
      row.wallSeconds += (Date.now() - started) / 1000;
      trainSeconds += result.history.reduce((t, m) => t + m.seconds, 0);
      images += result.history.reduce((n, m) => n + m.images_per_s * m.seconds, 0);
      row.globalBatch = result.config.batchSize;
      row.finalTestAcc.push(result.history.at(-1)!.test_acc);
      row.bestTestAcc.push(Math.max(...result.history.map((m) => m.test_acc)));
      row.allReduceShare += result.allReduceShare / seedCount;
      const reference = rows[0]?.histories[k] ?? result.history;
      row.maxGapPoints = Math.max(row.maxGapPoints, 100 * Math.max(...result.history.map((m, i) => Math.abs(m.test_acc - reference[i].test_acc))));
      row.histories.push(result.history);
    }
    row.wallSeconds /= seedCount;
    row.imagesPerS = images / trainSeconds;
    rows.push(row);
  }
  for (const r of rows) {
    r.speedup = r.imagesPerS / rows[0].imagesPerS;
    r.efficiency = r.speedup / (r.workers / rows[0].workers);
  }

  const header = `| workers | global batch | final test acc${seedCount > 1 ? ` (mean ± std, ${seedCount} seeds)` : ''} | best test acc | ` +
    `final gap vs N=${rows[0].workers} (points) | max gap vs N=${rows[0].workers} (points) | wall s | img/s | speedup | efficiency | all-reduce share | ` +
    'peak RSS MB | tensor MB/worker |';
  const table = [
    header,
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.workers} | ${r.globalBatch} | ${pct(r.finalTestAcc)} | ${pct(r.bestTestAcc)} | ` +
      `${(100 * (mean(r.finalTestAcc) - mean(rows[0].finalTestAcc))).toFixed(2)} | ` +
      `${r.maxGapPoints.toFixed(2)} | ${r.wallSeconds.toFixed(1)} | ${r.imagesPerS.toFixed(1)} | ${r.speedup.toFixed(2)}x | ` +
      `${(100 * r.efficiency).toFixed(0)}% | ${(100 * r.allReduceShare).toFixed(1)}% | ${r.peakRssMb.toFixed(0)} | ${r.tensorMb.toFixed(1)} |`),
  ].join('\n');
  // The yardstick for "max gap": how far the first N's own seeds stray from each other at one epoch.
  const seedSpreadPoints = seedCount > 1
    ? 100 * Math.max(...rows[0].histories[0].map((_, i) => {
      const accs = rows[0].histories.map((h) => h[i].test_acc);
      return Math.max(...accs) - Math.min(...accs);
    }))
    : null;
  const seedSpreadLine = seedSpreadPoints === null ? '' : `\nmax gap compares runs of the same seed; for scale, N=${rows[0].workers}'s own ` +
    `${seedCount} seeds differ by up to ${seedSpreadPoints.toFixed(2)} points in test accuracy at one epoch`;
  const title = `${base.model} width ${base.width} on ${base.dataset} (${base.trainLimit} train / ${base.testLimit} test), ` +
    `${base.epochs} epochs, ${opts.perWorkerBatch ? `per-worker batch ${base.batchSize}` : `global batch ${base.batchSize}`}, ${base.backend}` +
    (seedCount > 1 ? `, seeds ${base.seed}..${base.seed + seedCount - 1} (curves: mean)` : '') +
    (opts.wire === 'fp32' ? '' : `, ${opts.wire} wire for N > 1 (compressed)`);
  console.log(`\n${title}\n${table}${seedSpreadLine}`);

  fs.mkdirSync(opts.out, { recursive: true });
  const series = (pick: (m: EpochMetrics) => number): PlotSeries[] =>
    rows.map((r) => ({
      name: `${r.workers} worker${r.workers === 1 ? '' : 's'}`,
      points: r.histories[0].map((m, i) => [m.epoch, mean(r.histories.map((h) => pick(h[i])))] as [number, number]),
    }));
  await writeLinePlotPng(path.join(opts.out, 'scale.png'), {
    title,
    panels: [
      { title: 'test accuracy', xLabel: 'epoch', yLabel: 'accuracy', series: series((m) => m.test_acc), legend: 'lower right' },
      { title: 'train loss', xLabel: 'epoch', yLabel: 'loss', series: series((m) => m.train_loss) },
      { title: 'test loss', xLabel: 'epoch', yLabel: 'loss', series: series((m) => m.test_loss) },
    ],
  });
  fs.writeFileSync(path.join(opts.out, 'scale.md'), `${title}\n\n${table}\n${seedSpreadLine}\n`);
  fs.writeFileSync(path.join(opts.out, 'scale.json'), JSON.stringify({ title, config: base, rows, seedSpreadPoints }, null, 2));
  console.log(`\nwrote ${path.join(opts.out, 'scale.png')}, scale.md and scale.json`);
}

await runMain('scale-test', async () => {
  program.parse();
  await main(program.opts<Options>());
});
