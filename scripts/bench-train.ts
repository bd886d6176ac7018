// Training throughput of one replica (forward + backward + SGD + weight upload)
// per backend, measured side by side in one process so the ratio is fair on a
// noisy machine. Usage:
//   npx tsc -p . && node dist/scripts/bench-train.js [--width 16] [--batch 32] [--steps 5] [--backends wasm,cpu]
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { initBackend, describeBackend } from '../src/common/backend.js';
import { buildModelSpec, initParams, initRunningStats } from '../src/common/model/spec.js';
import { Replica } from '../src/common/replica.js';
import { sgdStep, updateRunningStats } from '../src/common/optim/sgd.js';
import { Rng } from '../src/common/rng.js';
import type { BackendName } from '../src/common/types.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'resnet18' },
    width: { type: 'string', default: '16' },
    batch: { type: 'string', default: '32' },
    steps: { type: 'string', default: '5' },
    backends: { type: 'string', default: 'wasm,cpu' },
  },
});
const width = Number(values.width);
const batchSize = Number(values.batch);
const steps = Number(values.steps);
const spec = buildModelSpec({ name: values.model as 'resnet18', width, numClasses: 10, inChannels: 3, norm: 'batch' });
const rng = new Rng(1);
const batch = {
  x: Float32Array.from({ length: batchSize * 32 * 32 * 3 }, () => rng.nextFloat() * 2 - 1),
  y: Int32Array.from({ length: batchSize }, () => rng.nextInt(10)),
  count: batchSize,
};

const rows: { backend: string; detail: string; msPerStep: number; imagesPerS: number; gradMs: number; optimMs: number }[] = [];
for (const backend of values.backends!.split(',') as BackendName[]) {
  await initBackend(backend);
  const weights = initParams(spec, () => rng.nextFloat());
  const momentum = new Float32Array(spec.paramCount);
  const running = initRunningStats(spec);
  const grad = new Float32Array(spec.paramCount);
  const replica = new Replica(spec, weights);
  let gradMs = 0;
  let optimMs = 0;
  // Step 0 warms up (kernel set-up, allocations) and is not timed.
  for (let step = 0; step <= steps; step++) {
    const t0 = performance.now();
    const res = replica.computeGradients(batch, 1 / batchSize, grad);
    const t1 = performance.now();
    sgdStep(weights, grad, momentum, { lr: 0.01, momentum: 0.9, weightDecay: 5e-4 }, step === 0);
    updateRunningStats(running, res.batchStats!);
    replica.setWeights(weights);
    const t2 = performance.now();
    if (step > 0) {
      gradMs += t1 - t0;
      optimMs += t2 - t1;
    }
  }
  replica.dispose();
  const msPerStep = (gradMs + optimMs) / steps;
  rows.push({ backend, detail: describeBackend(), msPerStep, imagesPerS: (batchSize * 1000) / msPerStep, gradMs: gradMs / steps, optimMs: optimMs / steps });
}

console.log(`${values.model} width ${width}, batch ${batchSize}, ${spec.paramCount.toLocaleString('en-US')} parameters, ${steps} timed steps`);
console.log('backend                    ms/step   img/s   fwd+bwd ms   sgd+upload ms');
for (const r of rows) {
  console.log(`${r.detail.padEnd(24)} ${r.msPerStep.toFixed(1).padStart(9)} ${r.imagesPerS.toFixed(1).padStart(7)} ${r.gradMs.toFixed(1).padStart(12)} ${r.optimMs.toFixed(1).padStart(15)}`);
}
if (rows.length > 1) console.log(`ratio ${rows[0].backend}/${rows[1].backend}: ${(rows[0].imagesPerS / rows[1].imagesPerS).toFixed(1)}x`);
fs.mkdirSync('runs', { recursive: true });
fs.writeFileSync('runs/bench-train.json', JSON.stringify({ model: values.model, width, batchSize, steps, rows }, null, 2));
