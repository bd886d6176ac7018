// `tfjs-ddp evaluate` reproduces the run's own test metrics and draws the
// confusion matrix; `tfjs-ddp predict` classifies real PNG and JPEG files
// exactly as the trainer's forward pass does. In this process, through
// runEvaluate and runPredict: the numbers and the errors' wording. What the
// commands print, and their exit codes, is cli-utilities.test.ts.
import fs from 'node:fs';
import path from 'node:path';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { beforeAll, describe, expect, test } from 'vitest';
import { runEvaluate } from '../src/cli/commands/evaluate.js';
import { runPredict } from '../src/cli/commands/predict.js';
import { makeBatch } from '../src/common/data/augment.js';
import { initBackend } from '../src/common/backend/backend.js';
import { readCheckpoint } from '../src/common/io/checkpoint.js';
import { UsageError } from '../src/common/cli/run-main.js';
import { DEFAULTS } from '../src/common/training/config.js';
import { NORMALIZE } from '../src/common/data/augment.js';
import { FASHION_MNIST_CLASSES } from '../src/common/data/fashion-mnist.js';
import { generateSynthetic, SYNTHETIC_CLASSES } from '../src/common/data/synthetic.js';
import { buildModelSpec } from '../src/common/model/spec.js';
import { Replica } from '../src/common/model/replica.js';
import { freshState, saveCheckpoint, type CheckpointMeta } from '../src/common/training/run-state.js';
import { trainSmallCheckpoint, type SmallCheckpoint } from './helpers/small-checkpoint.js';
import { makeTempDir } from './helpers/data-fixtures.js';

const quiet = () => {};

function writePng(file: string, width: number, height: number, pixel: (x: number, y: number) => [number, number, number]): void {
  const png = new PNG({ width, height });
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const [r, g, b] = pixel(x, y);
      png.data.set([r, g, b, 255], (y * width + x) * 4);
    }
  }
  fs.writeFileSync(file, PNG.sync.write(png));
}

describe('evaluate and predict', () => {
  let ckpt: SmallCheckpoint;
  const test40 = generateSynthetic({ seed: 0, trainCount: 1, testCount: 40 }).test;
  const rgbOf = (index: number) => (x: number, y: number): [number, number, number] => {
    const o = ((index * 32 + y) * 32 + x) * 3;
    return [test40.images[o], test40.images[o + 1], test40.images[o + 2]];
  };
  beforeAll(async () => {
    ckpt = await trainSmallCheckpoint();
  });

  test("evaluate on the run's test set reproduces its test metrics and writes confusion.png", async () => {
    const out = makeTempDir('evaluate');
    // The run directory, not the file: evaluate picks its newest checkpoint.
    const r = await runEvaluate(ckpt.dir, { backend: 'wasm', batchSize: 128, out }, quiet);
    const [epoch] = ckpt.result.history;
    expect(r.total).toBe(40);
    expect(r.accuracy).toBe(epoch.test_acc);
    expect(r.loss).toBeCloseTo(epoch.test_loss, 5);
    expect(r.matrix.flat().reduce((a, b) => a + b, 0)).toBe(40);
    expect(r.matrix.map((row, c) => row[c]).reduce((a, b) => a + b, 0)).toBe(r.correct);
    const png = PNG.sync.read(fs.readFileSync(path.join(out, 'confusion.png')));
    expect(png.width).toBeGreaterThan(400);
    expect(png.height).toBeGreaterThan(400);
  });

  test('evaluate refuses a dataset the model cannot read, as a usage error', async () => {
    const refused = runEvaluate(ckpt.file, { backend: 'cpu', batchSize: 8, dataset: 'fashion-mnist' }, quiet);
    await expect(refused).rejects.toBeInstanceOf(UsageError);
    await expect(refused).rejects.toThrow(/trained on synthetic \(3-channel images\) and cannot classify fashion-mnist; drop --dataset/);
  });

  test('predict gives the top 3 of a PNG as the trainer computes them, and reads a JPEG', async () => {
    const dir = makeTempDir('predict');
    const pngFile = path.join(dir, 'sample.png');
    writePng(pngFile, 32, 32, rgbOf(0));
    // 64x64 nearest-neighbour enlargement of image 1, so predict has to resize it back.
    const big = new Uint8Array(64 * 64 * 4);
    for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) big.set([...rgbOf(1)(x >> 1, y >> 1), 255], (y * 64 + x) * 4);
    const jpgFile = path.join(dir, 'sample.jpg');
    fs.writeFileSync(jpgFile, jpeg.encode({ data: big, width: 64, height: 64 }, 95).data);

    const lines: string[] = [];
    const [p, j] = await runPredict(ckpt.file, [pngFile, jpgFile], { backend: 'cpu' }, (l) => lines.push(l));

    const { tensors } = await readCheckpoint<CheckpointMeta>(ckpt.file);
    await initBackend('cpu');
    const replica = new Replica(ckpt.result.spec, tensors.weights);
    const { x, y } = makeBatch(test40, [0], { augment: false, seed: 0, epoch: 0, ...NORMALIZE });
    const logits = Array.from(replica.logits({ x, y, count: 1 }, 'eval', tensors.running_stats));
    replica.dispose();
    const max = Math.max(...logits);
    const sum = logits.reduce((a, v) => a + Math.exp(v - max), 0);
    const expected = logits.map((v, c) => ({ c, p: Math.exp(v - max) / sum })).sort((a, b) => b.p - a.p).slice(0, 3);
    expect(p.top.map((t) => t.label)).toEqual(expected.map((e) => e.c));
    p.top.forEach((t, i) => expect(t.probability).toBeCloseTo(expected[i].p, 6));
    expect(p.top.map((t) => t.name)).toEqual(expected.map((e) => SYNTHETIC_CLASSES[e.c]));

    expect(j.top).toHaveLength(3);
    expect(j.top[0].probability).toBeGreaterThanOrEqual(j.top[1].probability);
    expect(j.top[1].probability).toBeGreaterThanOrEqual(j.top[2].probability);
    expect(j.top.reduce((a, t) => a + t.probability, 0)).toBeLessThanOrEqual(1 + 1e-9);
    // The printed top 1 is the computed one (the layout of the lines: cli-utilities.test.ts).
    expect(lines[1]).toMatch(new RegExp(`^  1\\. ${SYNTHETIC_CLASSES[expected[0].c]}\\s+0\\.\\d{4}$`));
  });

  test('predict with a Fashion-MNIST model turns a colour photo into a framed grey image', async () => {
    const cfg = { ...DEFAULTS, model: 'resnet18' as const, width: 4, dataset: 'fashion-mnist' as const, out: makeTempDir('predict-fm') };
    const spec = buildModelSpec({ name: 'resnet18', width: 4, numClasses: 10, inChannels: 1, norm: 'batch' });
    await saveCheckpoint(cfg, spec, freshState(cfg, spec));
    const file = path.join(cfg.out, 'photo.png');
    writePng(file, 50, 40, (x, y) => [x * 5, y * 6, 128]);
    const [r] = await runPredict(cfg.out, [file], { backend: 'cpu' }, quiet);
    expect(r.top.map((t) => t.name).every((n) => FASHION_MNIST_CLASSES.includes(n))).toBe(true);
  });

  test('predict names an unreadable image and how to fix it', async () => {
    const dir = makeTempDir('predict-bad');
    const text = path.join(dir, 'notes.png');
    fs.writeFileSync(text, 'hello');
    await expect(runPredict(ckpt.file, [text], { backend: 'cpu' }, quiet)).rejects.toThrow(
      /cannot read image .*notes\.png: not a PNG or JPEG file \(it starts with bytes 68 65 6c 6c\); convert it to PNG or JPEG/,
    );
    const cut = path.join(dir, 'cut.png');
    writePng(cut, 32, 32, rgbOf(2));
    fs.writeFileSync(cut, fs.readFileSync(cut).subarray(0, 60));
    await expect(runPredict(ckpt.file, [cut], { backend: 'cpu' }, quiet)).rejects.toThrow(/cannot read image .*cut\.png: corrupt PNG/);
    await expect(runPredict(ckpt.file, [path.join(dir, 'missing.jpg')], { backend: 'cpu' }, quiet)).rejects.toThrow(/missing\.jpg: no such file; check the path/);
  });
});
