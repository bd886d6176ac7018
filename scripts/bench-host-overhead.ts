// What a training step costs the host beyond forward and backward, against
// the least that work could cost: streaming the same bytes once through memory.
//
//   overhead = everything in a step that is not forward/backward and not the
//              exchange: the gradient read from the device, the finite checks,
//              the one-step undo of elastic membership, SGD, the BatchNorm
//              statistics and the upload of the new weights. Measured on the
//              real step (src/common/training/step.ts) with the worker's state
//              (src/worker/replica-state.ts), so the undo is the one workers pay.
//   bound    = the memory traffic no implementation can avoid, timed in the
//              same run: the gradient crosses from the device to the host
//              (read + write), SGD reads gradient, weights and momentum and
//              writes weights and momentum, the weights cross back (read +
//              write). That is 9 passes over the parameters, timed as 4.5
//              Float32Array copies (a copy reads one pass and writes one).
//
//   npx tsc -p . && node dist/scripts/bench-host-overhead.js [--model resnet50] [--width 64] [--batch 2] [--steps 5] [--backend wasm]
//
// Writes runs/bench-host-overhead.json with overheadMs, boundMs and ratio
// (target: ratio <= 1.5, issue 12). The batch only changes forward/backward,
// which is not counted, so a small one keeps the run short.
import fs from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { initBackend, describeBackend } from '../src/common/backend/backend.js';
import { BACKEND_CHOICES, type BackendChoice } from '../src/common/backend/names.js';
import { MODEL_NAMES, type ModelName } from '../src/common/model/spec.js';
import { exitOnUsageError, intFlag } from '../src/common/cli/flags.js';
import { runMain } from '../src/common/cli/run-main.js';
import { TrainStep } from '../src/common/training/step.js';
import { ReplicaState } from '../src/worker/replica-state.js';
import { seededStep } from './seeded-step.js';
import { median } from './timing-stats.js';

const program = exitOnUsageError(new Command('bench-host-overhead')
  .description("A step's host cost beyond forward/backward (gradient read, checks, undo, SGD, upload) against streaming the same bytes once; writes runs/bench-host-overhead.json")
  .addOption(new Option('--model <name>', 'model').choices(MODEL_NAMES).default('resnet50'))
  .addOption(new Option('--width <n>', 'base width').argParser(intFlag(1)).default(64))
  .addOption(new Option('--batch <n>', 'images per step (forward/backward is not counted)').argParser(intFlag(1)).default(2))
  .addOption(new Option('--steps <n>', 'timed steps, after one warm-up step').argParser(intFlag(1)).default(5))
  .addOption(new Option('--backend <name>', 'TensorFlow.js backend').choices(BACKEND_CHOICES).default('wasm'))
  .option('--out <file>', 'where the JSON goes', 'runs/bench-host-overhead.json'));

interface Options { model: ModelName; width: number; batch: number; steps: number; backend: BackendChoice; out: string }

const spread = (xs: number[]): string => `${Math.min(...xs).toFixed(1)}-${Math.max(...xs).toFixed(1)}`;

/** Median time of one Float32Array copy of `n` values, after a warm-up copy. */
function copyMs(n: number, reps: number): number[] {
  const src = new Float32Array(n).fill(1);
  const dst = new Float32Array(n);
  dst.set(src);
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const start = performance.now();
    dst.set(src);
    times.push(performance.now() - start);
  }
  return times;
}

async function main(o: Options): Promise<void> {
  await initBackend(o.backend);
  const seeded = seededStep(o.model, o.width, o.batch);
  const { spec, replica, batch } = seeded;
  const p = spec.paramCount;
  console.log(`${o.model} width ${o.width}: ${(p / 1e6).toFixed(2)} M parameters (${(p * 4 / 2 ** 20).toFixed(0)} MiB), backend ${describeBackend()}`);

  // The worker's state, so the step pays the worker's one-step undo.
  const seedState = seeded.state;
  const state = new ReplicaState({ weights: seedState.params.weights, momentum: seedState.params.momentum, runningStats: seedState.runningStats, step: 0 });
  const step = new TrainStep(replica, state, {
    hyper: { momentum: 0.9, weightDecay: 5e-4 },
    // A worker's exchange, with no one to exchange with: the step then checks its own gradient, as a worker does.
    exchange: { allReduce: async () => {} },
    hooks: { beforeUpdate: async () => state.rememberBeforeStep() },
  });

  const rows: { backwardMs: number; readMs: number; updateMs: number; overheadMs: number }[] = [];
  for (let i = 0; i <= o.steps; i++) {
    const r = await step.run(batch, batch.count, 0.01);
    const readMs = r.gradMs - r.backwardMs;
    const updateMs = r.stepMs - r.gradMs - r.reduceMs;
    if (i > 0) rows.push({ backwardMs: r.backwardMs, readMs, updateMs, overheadMs: readMs + updateMs });
    process.stdout.write(`step ${i}${i === 0 ? ' (warm-up)' : ''}: forward+backward ${r.backwardMs.toFixed(0)} ms, ` +
      `read+check ${readMs.toFixed(1)} ms, undo+sgd+upload ${updateMs.toFixed(1)} ms\n`);
  }
  replica.dispose();

  const copies = copyMs(p, 2 * o.steps + 1);
  const boundMs = 4.5 * median(copies);
  const overhead = rows.map((r) => r.overheadMs);
  const overheadMs = median(overhead);
  const ratio = overheadMs / boundMs;
  const result = {
    model: o.model, width: o.width, params: p, backend: describeBackend(), batch: o.batch, steps: o.steps,
    overheadMs, overheadRangeMs: [Math.min(...overhead), Math.max(...overhead)],
    readMs: median(rows.map((r) => r.readMs)), updateMs: median(rows.map((r) => r.updateMs)),
    backwardMs: median(rows.map((r) => r.backwardMs)),
    copyMs: median(copies), boundPasses: 9, boundMs, ratio, target: 1.5, meetsTarget: ratio <= 1.5,
    date: new Date().toISOString(),
  };
  console.log(`overhead ${overheadMs.toFixed(1)} ms (${spread(overhead)}): read+check ${result.readMs.toFixed(1)}, undo+sgd+upload ${result.updateMs.toFixed(1)}`);
  console.log(`bound    ${boundMs.toFixed(1)} ms (9 passes of ${(p * 4 / 2 ** 20).toFixed(0)} MiB; one copy ${result.copyMs.toFixed(1)} ms)`);
  console.log(`ratio    ${ratio.toFixed(2)} (target <= 1.5: ${result.meetsTarget ? 'met' : 'missed'})`);
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  fs.writeFileSync(o.out, JSON.stringify(result, null, 2) + '\n');
  console.log(`wrote ${o.out}`);
}

await runMain('bench-host-overhead', async () => main(program.parse().opts<Options>()));
