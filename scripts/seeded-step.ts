// One replica, its optimizer state and a batch, all from one seed, so that
// every process of a benchmark or smoke test builds the same weights and
// images (bench-train's replica rows, gpu-smoke's tensorflow-vs-cpu check).
import { buildModelSpec, initParams, initRunningStats, type ModelName, type ModelSpec } from '../src/common/model/spec.js';
import { Replica } from '../src/common/model/replica.js';
import { TrainStep, type OptimizerState } from '../src/common/training/step.js';
import { Rng } from '../src/common/data/rng.js';
import { SgdBuffers } from '../src/common/optim/sgd-buffers.js';

export interface SeededStep {
  spec: ModelSpec;
  replica: Replica;
  step: TrainStep;
  /** The state `step` trains (seeded weights, zero momentum). */
  state: OptimizerState;
  /** Uniform in [-1, 1), with uniform labels: the benchmarks measure arithmetic, not learning. */
  batch: { x: Float32Array; y: Int32Array; count: number };
}

/** The seed's SGD (momentum 0.9, weight decay 5e-4) on 32x32x3 inputs, 10 classes, no exchange. */
export function seededStep(model: ModelName, width: number, batchSize: number): SeededStep {
  const spec = buildModelSpec({ name: model, width, numClasses: 10, inChannels: 3, norm: 'batch' });
  const rng = new Rng(1);
  const batch = {
    x: Float32Array.from({ length: batchSize * 32 * 32 * 3 }, () => rng.nextFloat() * 2 - 1),
    y: Int32Array.from({ length: batchSize }, () => rng.nextInt(10)),
    count: batchSize,
  };
  const weights = initParams(spec, () => rng.nextFloat());
  const state = { params: new SgdBuffers(weights, new Float32Array(spec.paramCount)), runningStats: initRunningStats(spec), step: 0 };
  const replica = new Replica(spec, weights);
  return { spec, replica, batch, state, step: new TrainStep(replica, state, { hyper: { momentum: 0.9, weightDecay: 5e-4 } }) };
}
