// The scale test: trains the same model on the same data with 1, 2 and 4
// workers (same seed, same global batch, so the same global batches) and shows
// whether N workers converge like one, and how much faster they are.
//
//   npx tsc -p . && node dist/scripts/scale-test.js \
//     [--workers 1,2,4] [--dataset fashion-mnist] [--model resnet18] [--width 8] \
//     [--epochs 3] [--batch-size 128] [--train-limit 4096] [--test-limit 1000] \
//     [--backend wasm] [--per-worker-batch] [--out runs/scale-test]
//
// Writes OUT/scale.png (test accuracy and loss curves, one line per N),
// OUT/scale.json and OUT/scale.md (the table), and each run's own outputs in
// OUT/nN/. With --per-worker-batch every worker keeps --batch-size, so the
// global batch and lr grow with N (linear scaling rule): the curves then
// compare the two recipes rather than the same computation.

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULTS, type TrainConfig } from '../src/common/config.js';
import { runCoordinator } from '../src/coordinator/coordinator.js';
import { writeLinePlotPng, type PlotSeries } from '../src/common/plot.js';
import type { EpochMetrics } from '../src/common/metrics.js';
import type { BackendChoice, DatasetName } from '../src/common/types.js';
import type { ModelName } from '../src/common/model/spec.js';

const { values } = parseArgs({
  options: {
    workers: { type: 'string', default: '1,2,4' },
    dataset: { type: 'string', default: 'fashion-mnist' },
    model: { type: 'string', default: 'resnet18' },
    width: { type: 'string', default: '8' },
    epochs: { type: 'string', default: '3' },
    'batch-size': { type: 'string', default: '128' },
    'train-limit': { type: 'string', default: '4096' },
    'test-limit': { type: 'string', default: '1000' },
    backend: { type: 'string', default: 'wasm' },
    seed: { type: 'string', default: '0' },
    'per-worker-batch': { type: 'boolean', default: false },
    out: { type: 'string', default: 'runs/scale-test' },
  },
});

const worldSizes = values.workers!.split(',').map(Number);
if (worldSizes.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`--workers expects a list like 1,2,4, got ${values.workers}`);
const base: TrainConfig = {
  ...DEFAULTS,
  model: values.model as ModelName, width: Number(values.width), dataset: values.dataset as DatasetName,
  epochs: Number(values.epochs), batchSize: Number(values['batch-size']), trainLimit: Number(values['train-limit']),
  testLimit: Number(values['test-limit']), backend: values.backend as BackendChoice, seed: Number(values.seed), plots: false,
  // The schedule of a 61-epoch run would hardly move in a few epochs: anneal over this run instead.
  tMax: Number(values.epochs),
};

interface Row {
  workers: number;
  globalBatch: number;
  finalTestAcc: number;
  bestTestAcc: number;
  /** Largest |test_acc(N) - test_acc(first N)| over epochs, in accuracy points. */
  maxGapPoints: number;
  wallSeconds: number;
  imagesPerS: number;
  speedup: number;
  efficiency: number;
  allReduceShare: number;
  history: EpochMetrics[];
}

const rows: Row[] = [];
for (const workers of worldSizes) {
  const out = path.join(values.out!, `n${workers}`);
  console.log(`--- ${workers} worker(s) ---`);
  const started = Date.now();
  const result = await runCoordinator({ ...base, out }, {
    workers, port: 0, perWorkerBatch: values['per-worker-batch'], dashboard: false, log: (line) => console.log(`  ${line}`),
  });
  const wallSeconds = (Date.now() - started) / 1000;
  const trainSeconds = result.history.reduce((s, m) => s + m.seconds, 0);
  const images = result.history.reduce((s, m) => s + m.images_per_s * m.seconds, 0);
  const reference = rows[0]?.history ?? result.history;
  rows.push({
    workers,
    globalBatch: result.config.batchSize,
    finalTestAcc: result.history.at(-1)!.test_acc,
    bestTestAcc: Math.max(...result.history.map((m) => m.test_acc)),
    maxGapPoints: 100 * Math.max(...result.history.map((m, i) => Math.abs(m.test_acc - reference[i].test_acc))),
    wallSeconds,
    imagesPerS: images / trainSeconds,
    speedup: 0,
    efficiency: 0,
    allReduceShare: result.allReduceShare,
    history: result.history,
  });
}
for (const r of rows) {
  r.speedup = r.imagesPerS / rows[0].imagesPerS;
  r.efficiency = r.speedup / (r.workers / rows[0].workers);
}

const header = '| workers | global batch | final test acc | best test acc | max gap vs N=' + rows[0].workers +
  ' (points) | wall s | img/s | speedup | efficiency | all-reduce share |';
const table = [
  header,
  '|---|---|---|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.workers} | ${r.globalBatch} | ${(100 * r.finalTestAcc).toFixed(2)}% | ${(100 * r.bestTestAcc).toFixed(2)}% | ` +
    `${r.maxGapPoints.toFixed(2)} | ${r.wallSeconds.toFixed(1)} | ${r.imagesPerS.toFixed(1)} | ${r.speedup.toFixed(2)}x | ` +
    `${(100 * r.efficiency).toFixed(0)}% | ${(100 * r.allReduceShare).toFixed(1)}% |`),
].join('\n');
const title = `${base.model} width ${base.width} on ${base.dataset} (${base.trainLimit} train / ${base.testLimit} test), ` +
  `${base.epochs} epochs, ${values['per-worker-batch'] ? `per-worker batch ${base.batchSize}` : `global batch ${base.batchSize}`}, ${base.backend}`;
console.log(`\n${title}\n${table}`);

fs.mkdirSync(values.out!, { recursive: true });
const series = (pick: (m: EpochMetrics) => number): PlotSeries[] =>
  rows.map((r) => ({ name: `${r.workers} worker${r.workers === 1 ? '' : 's'}`, points: r.history.map((m) => [m.epoch, pick(m)] as [number, number]) }));
await writeLinePlotPng(path.join(values.out!, 'scale.png'), {
  title,
  panels: [
    { title: 'test accuracy', xLabel: 'epoch', yLabel: 'accuracy', series: series((m) => m.test_acc), legend: 'lower right' },
    { title: 'train loss', xLabel: 'epoch', yLabel: 'loss', series: series((m) => m.train_loss) },
    { title: 'test loss', xLabel: 'epoch', yLabel: 'loss', series: series((m) => m.test_loss) },
  ],
});
fs.writeFileSync(path.join(values.out!, 'scale.md'), `${title}\n\n${table}\n`);
fs.writeFileSync(path.join(values.out!, 'scale.json'), JSON.stringify({ title, config: base, rows }, null, 2));
console.log(`\nwrote ${path.join(values.out!, 'scale.png')}, scale.md and scale.json`);
