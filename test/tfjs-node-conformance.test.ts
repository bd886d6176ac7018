// The GPU path on a CPU: every kernel that a training step, an evaluation, a
// snapshot and an export dispatch, with the attributes we pass, must be one
// that the 'tensorflow' backend (@tensorflow/tfjs-node(-gpu) 4.22) accepts.
// That package cannot be installed here, so the calls are recorded on the cpu
// backend (tfjs-core maps ops and their gradients to the same kernels and
// attributes on every backend) and checked against the table of tfjs-node's
// kernels and rules in src/common/backend/tfjs-node-kernels.ts, each row read
// from the tfjs-node source file it names.
//
// This is what failed every GPU run at step 1: explicit padding in the 3x3
// convolutions reached tfjs-node's Conv2DBackpropInput/Filter, which throw
// "TF Backend supports only 'valid' and 'same' padding".
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/common/backend/backend.js';
import { TFJS_NODE_KERNELS, tfjsNodeProblem, type KernelCall } from '../src/common/backend/tfjs-node-kernels.js';
import { makeBatch, NORMALIZE } from '../src/common/data/augment.js';
import { generateSynthetic } from '../src/common/data/synthetic.js';
import { buildLayersModel } from '../src/common/io/export/tfjs-layers-model.js';
import { directorySaveHandler } from '../src/common/io/export/tfjs-model-files.js';
import { convPadding } from '../src/common/model/forward.js';
import { devicePathFor, Replica, type Batch } from '../src/common/model/replica.js';
import { buildModelSpec, initParams, initRunningStats, type ModelConfig } from '../src/common/model/spec.js';
import { evaluateRange } from '../src/common/training/evaluation.js';
import { TrainStep, type OptimizerState } from '../src/common/training/step.js';
import { SgdBuffers } from '../src/common/optim/sgd-buffers.js';
import { makeTempDir } from './helpers/data-fixtures.js';

const BACKEND = 'cpu';

/**
 * Wraps every registered kernel of a backend so that each call the engine
 * makes (ops, gradients run by the tape, tf.clone's Identity) is recorded
 * with its input shapes and dtypes and a copy of its attributes. Kernels
 * that a backend's kernel calls internally are plain function calls, not
 * dispatches, and are not recorded (tfjs-node runs its own there).
 */
class KernelRecorder {
  private calls: KernelCall[] = [];
  private readonly originals: tf.KernelConfig[] = [];

  install(backend: string): void {
    for (const config of tf.getKernelsForBackend(backend)) {
      this.originals.push(config);
      const kernelFunc: tf.KernelFunc = (args) => {
        this.calls.push({
          kernel: config.kernelName,
          inputs: Object.fromEntries(Object.entries(args.inputs).map(([name, t]) => [
            name, t == null ? null : { shape: [...t.shape], dtype: t.dtype },
          ])),
          attrs: structuredClone(args.attrs ?? {}) as Record<string, unknown>,
        });
        return config.kernelFunc(args);
      };
      tf.unregisterKernel(config.kernelName, backend);
      tf.registerKernel({ ...config, kernelFunc });
    }
  }

  uninstall(): void {
    for (const config of this.originals) {
      tf.unregisterKernel(config.kernelName, config.backendName);
      tf.registerKernel(config);
    }
    this.originals.length = 0;
  }

  /** The calls made by `run`. */
  async record(run: () => void | Promise<void>): Promise<KernelCall[]> {
    this.calls = [];
    await run();
    const calls = this.calls;
    this.calls = [];
    return calls;
  }
}

/** dtype[shape] of every tensor made from host values (tf.tensor, tf.scalar, ones...) while `run` runs; kernel outputs are not. */
async function recordHostTensors(run: () => Promise<unknown>): Promise<string[]> {
  const engine = tf.engine() as unknown as { makeTensor: (...args: unknown[]) => tf.Tensor };
  const original = engine.makeTensor;
  const made: string[] = [];
  engine.makeTensor = (...args: unknown[]) => {
    const [, shape, dtype] = args as [unknown, number[], tf.DataType];
    made.push(`${dtype ?? 'float32'}[${shape.join(',')}]`);
    return original.apply(engine, args);
  };
  try {
    await run();
  } finally {
    engine.makeTensor = original;
  }
  return made;
}

/** One line per distinct problem, with the kernels' attributes, so a failure says what to change. */
function problemsOf(calls: KernelCall[]): string[] {
  const problems = new Set<string>();
  for (const call of calls) {
    const problem = tfjsNodeProblem(call);
    if (problem !== null) problems.add(`${call.kernel} ${JSON.stringify(call.attrs)}: ${problem}`);
  }
  return [...problems];
}

function kernelNames(calls: KernelCall[]): string[] {
  return [...new Set(calls.map((c) => c.kernel))].sort();
}

function lcg(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 16807) % 2147483647) / 2147483647;
}

function randomBatch(count: number, seed: number): Batch {
  const rand = lcg(seed);
  return {
    x: Float32Array.from({ length: count * 32 * 32 * 3 }, () => rand() * 2 - 1),
    y: Int32Array.from({ length: count }, (_, i) => (i * 3 + seed) % 10),
    count,
  };
}

const recorder = new KernelRecorder();

beforeAll(async () => {
  await initBackend(BACKEND);
  recorder.install(BACKEND);
});

afterAll(() => recorder.uninstall());

const MODELS: ModelConfig[] = [
  { name: 'resnet18', width: 2, numClasses: 10, inChannels: 3, norm: 'batch' },
  { name: 'resnet50', width: 2, numClasses: 10, inChannels: 3, norm: 'batch' },
  { name: 'resnet18', width: 2, numClasses: 10, inChannels: 3, norm: 'none' },
];

describe.each(MODELS)('tfjs-node 4.22 accepts every kernel of $name ($norm norm)', (config) => {
  const spec = buildModelSpec(config);
  const state: OptimizerState = {
    params: new SgdBuffers(initParams(spec, lcg(7)), new Float32Array(spec.paramCount)), runningStats: initRunningStats(spec), step: 0,
  };
  let replica: Replica;
  beforeAll(() => {
    // The way weights and gradients cross on tfjs-node (one tensor each way), though this runs on cpu.
    replica = new Replica(spec, state.params.weights, undefined, devicePathFor('tensorflow'));
  });
  afterAll(() => replica.dispose());

  test('a training step (forward, backward, SGD, upload)', async () => {
    const step = new TrainStep(replica, state, { hyper: { momentum: 0.9, weightDecay: 5e-4 } });
    const calls = await recorder.record(async () => {
      await step.run(randomBatch(3, 1), 6, 0.1);
    });
    console.log(`${config.name}/${config.norm} training step: ${calls.length} kernel calls: ${kernelNames(calls).join(' ')}`);
    // The gradients really ran through the tape (not a path that skips them),
    // the ReLU's from Greater, and the parameters crossed as one tensor each way.
    expect(kernelNames(calls)).toEqual(expect.arrayContaining(['Conv2DBackpropFilter', 'Conv2DBackpropInput', 'Greater', 'Concat', 'SplitV']));
    expect(kernelNames(calls)).not.toContain('Step');
    expect(problemsOf(calls)).toEqual([]);
  });

  test('an evaluation and the logits of evaluate/predict', async () => {
    const testSet = generateSynthetic({ seed: 0, trainCount: 1, testCount: 5 }).test;
    const calls = await recorder.record(() => {
      evaluateRange(replica, testSet, state.runningStats, 4);
      replica.logits(randomBatch(2, 2), 'eval', state.runningStats);
      replica.logits(randomBatch(2, 3), 'train');
    });
    console.log(`${config.name}/${config.norm} evaluation: ${calls.length} kernel calls: ${kernelNames(calls).join(' ')}`);
    expect(kernelNames(calls)).toContain('Conv2D');
    expect(problemsOf(calls)).toEqual([]);
  });

  test("tfjs-node's way (one tensor each way, the ReLU mask from greater) gives this backend's gradients to the bit", () => {
    const batch = randomBatch(3, 5);
    const plain = new Replica(spec, state.params.weights, undefined, devicePathFor(BACKEND));
    const [a, b] = [new Float32Array(spec.paramCount), new Float32Array(spec.paramCount)];
    const ra = plain.computeGradients(batch, 1 / 3, a);
    const rb = replica.computeGradients(batch, 1 / 3, b);
    plain.dispose();
    expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
    expect(Buffer.from(ra.batchStats?.buffer ?? new ArrayBuffer(0)).equals(Buffer.from(rb.batchStats?.buffer ?? new ArrayBuffer(0)))).toBe(true);
    expect(ra.lossSum).toBe(rb.lossSum);
  });

  // On tfjs-node every tensor made from host values is a host allocation and
  // a copy to the GPU. After the first step (which makes the kept constants of
  // model/constants.ts) a step makes only what it must: the images, the
  // labels, the weights as one tensor, and tfjs-core's two seeds of the loss
  // gradient (a scalar and a [batch, classes] ones). Nothing activation-sized,
  // as tfjs-core's ReLU and Mean gradients would, and no per-parameter uploads.
  test('a training step makes host tensors only for the batch, the labels, the weights and the loss seeds', async () => {
    const step = new TrainStep(replica, state, { hyper: { momentum: 0.9, weightDecay: 5e-4 } });
    const batch = randomBatch(3, 4);
    await step.run(batch, 6, 0.1);
    const made = await recordHostTensors(() => step.run(batch, 6, 0.1));
    expect(made.sort()).toEqual([
      `float32[${spec.paramCount}]`, 'float32[3,10]', 'float32[3,32,32,3]', 'float32[]', 'int32[3]',
    ].sort());
  });

  // Today a snapshot dispatches nothing (the statistics are averaged and the
  // state is sent from host arrays); recorded so that a kernel added there is checked too.
  test('a snapshot (weights read back, statistics averaged on the host)', async () => {
    const calls = await recorder.record(() => {
      const weights = replica.getWeights();
      replica.setWeights(weights);
    });
    expect(problemsOf(calls)).toEqual([]);
  });

  test('an export: the LayersModel built, run and saved', async () => {
    const x = makeBatch(generateSynthetic({ seed: 0, trainCount: 1, testCount: 2 }).test, [0, 1], {
      augment: false, seed: 0, epoch: 0, ...NORMALIZE,
    }).x;
    const calls = await recorder.record(async () => {
      const model = buildLayersModel(spec, state.params.weights, state.runningStats);
      tf.tidy(() => (model.predict(tf.tensor4d(x, [2, 32, 32, 3])) as tf.Tensor).dataSync());
      await model.save(directorySaveHandler(makeTempDir('conformance-export')));
      model.dispose();
    });
    console.log(`${config.name}/${config.norm} export: ${calls.length} kernel calls: ${kernelNames(calls).join(' ')}`);
    expect(kernelNames(calls)).toContain('FusedConv2D');
    expect(problemsOf(calls)).toEqual([]);
  });
});

describe('the check itself', () => {
  let x: tf.Tensor4D;
  let w: tf.Tensor4D;
  beforeAll(() => {
    x = tf.tensor4d(Float32Array.from({ length: 2 * 8 * 8 * 3 }, lcg(3)), [2, 8, 8, 3]);
    w = tf.tensor4d(Float32Array.from({ length: 3 * 3 * 3 * 4 }, lcg(4)), [3, 3, 3, 4]);
  });
  afterAll(() => tf.dispose([x, w]));
  const convGrads = (stride: number, pad: tf.Conv2DAttrs['pad']) =>
    tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, stride, pad)))([x, w]);

  test('fails the explicit padding that broke every GPU run, naming the tfjs-node file', async () => {
    const explicit: tf.Conv2DAttrs['pad'] = [[0, 0], [1, 1], [1, 1], [0, 0]];
    const calls = await recorder.record(() => {
      tf.dispose(convGrads(2, explicit));
    });
    const problems = problemsOf(calls);
    expect(problems.some((p) => p.startsWith('Conv2DBackpropInput') && p.includes('tfjs-node/src/kernels/Conv2DBackpropInput.ts'))).toBe(true);
    expect(problems.some((p) => p.startsWith('Conv2DBackpropFilter') && p.includes('tfjs-node/src/kernels/Conv2DBackpropFilter.ts'))).toBe(true);
    expect(problems.every((p) => p.includes("supports only 'valid' and 'same'"))).toBe(true);
    // The forward alone is fine: tfjs-node's Conv2D passes explicit_paddings on.
    expect(problems.some((p) => p.startsWith('Conv2D '))).toBe(false);
  });

  test('fails a numeric pad in the forward convolution, and a kernel without a row', () => {
    const numeric = tfjsNodeProblem({
      kernel: 'Conv2D', inputs: { x: { shape: [1, 8, 8, 3], dtype: 'float32' }, filter: { shape: [3, 3, 3, 4], dtype: 'float32' } },
      attrs: { strides: 1, pad: 1, dataFormat: 'NHWC', dilations: 1 },
    });
    expect(numeric).toMatch(/NUMBER.*tfjs-node\/src\/kernels\/Conv2D\.ts/);
    const unknown = tfjsNodeProblem({ kernel: 'LogSoftmax', inputs: {}, attrs: {} });
    expect(unknown).toMatch(/no row for kernel LogSoftmax: read tfjs-node\/src\/kernels\/LogSoftmax\.ts/);
  });

  test('every row names the tfjs-node file of its kernel', () => {
    for (const [kernel, row] of Object.entries(TFJS_NODE_KERNELS)) {
      expect(row.source).toBe(`tfjs-node/src/kernels/${kernel}.ts`);
      expect(row.rule.length).toBeGreaterThan(0);
    }
  });

  test("the forward's padding computes what PyTorch's explicit padding does, gradients included", () => {
    const odd = tf.tensor4d(Float32Array.from({ length: 2 * 7 * 7 * 3 }, lcg(5)), [2, 7, 7, 3]);
    for (const input of [x, odd]) {
      for (const stride of [1, 2]) {
        const [, h, wd] = input.shape;
        const { prePad, pad } = convPadding({ pad: 1, stride }, [3, 3], [h, wd]);
        expect(pad).toBe(stride === 1 ? 'same' : 'valid');
        // At stride 2 an even side needs no zeros after it (no output reads them), an odd one does.
        if (stride === 2) expect(prePad).toEqual(h % 2 === 0 ? [[1, 0], [1, 0]] : [[1, 1], [1, 1]]);
        const ours = tf.grads((a: tf.Tensor, b: tf.Tensor) => {
          const padded = prePad === null ? a : tf.pad(a, [[0, 0], prePad[0], prePad[1], [0, 0]]);
          return tf.sum(tf.square(tf.conv2d(padded as tf.Tensor4D, b as tf.Tensor4D, stride, pad)));
        })([input, w]);
        const explicit = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
          tf.sum(tf.square(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, stride, [[0, 0], [1, 1], [1, 1], [0, 0]]))))([input, w]);
        for (let i = 0; i < 2; i++) {
          expect(ours[i]!.shape).toEqual(explicit[i]!.shape);
          const diff = tf.max(tf.abs(tf.sub(ours[i]!, explicit[i]!))).dataSync()[0]!;
          const scale = tf.max(tf.abs(explicit[i]!)).dataSync()[0]!;
          expect(diff / scale).toBeLessThan(1e-6);
        }
        tf.dispose([...ours, ...explicit]);
      }
    }
    odd.dispose();
    expect(convPadding({ pad: 0, stride: 2 }, [1, 1], [8, 8])).toEqual({ prePad: null, pad: 'valid' });
  });
});
