// `tfjs-ddp predict <checkpoint> image...`: the top-3 classes of each PNG or
// JPEG, with softmax probabilities. Images are converted to what the model
// was trained on (size, channels, Fashion-MNIST's frame) and normalised by
// the same makeBatch as training.
import { Command } from 'commander';
import { makeBatch, NORMALIZE } from '../../common/data/augment.js';
import { initBackend } from '../../common/backend/backend.js';
import { datasetInfo } from '../../common/data/dataset-info.js';
import { toModelInput } from '../../common/image/model-input.js';
import { readImageFile } from '../../common/image/read-image.js';
import { Replica } from '../../common/model/replica.js';
import { loadTrainedModel } from '../../common/training/trained-model.js';
import type { BackendChoice } from '../../common/backend/names.js';
import { backendOption } from '../../common/cli/flags.js';

export const TOP_K = 3;

export interface Prediction {
  image: string;
  top: { label: number; name: string; probability: number }[];
}

export interface PredictOptions {
  backend: BackendChoice;
}

export async function runPredict(checkpoint: string, images: string[], opts: PredictOptions, log: (line: string) => void = console.log): Promise<Prediction[]> {
  const model = await loadTrainedModel(checkpoint, (m) => process.stderr.write(`warning: ${m}\n`));
  const info = datasetInfo(model.config.dataset);
  // Decode everything before touching the backend: a typo in the last file name should fail fast.
  const inputs = images.map((file) => toModelInput(readImageFile(file), info));
  const size = info.height * info.width * info.channels;
  const set = {
    images: new Uint8Array(images.length * size),
    labels: new Uint8Array(images.length),
    count: images.length,
    height: info.height,
    width: info.width,
    channels: info.channels,
  };
  inputs.forEach((one, i) => set.images.set(one.images, i * size));
  const { x, y } = makeBatch(set, Array.from(inputs.keys()), { augment: false, seed: 0, epoch: 0, ...NORMALIZE });

  await initBackend(opts.backend);
  const replica = new Replica(model.spec, model.weights, [info.height, info.width, info.channels]);
  let logits: Float32Array;
  try {
    logits = replica.logits({ x, y, count: images.length }, 'eval', model.runningStats);
  } finally {
    replica.dispose();
  }
  const k = model.classes.length;
  const results = images.map((image, i) => {
    const probs = softmax(logits.subarray(i * k, (i + 1) * k));
    const top = Array.from(probs.keys())
      .sort((a, b) => probs[b] - probs[a])
      .slice(0, TOP_K)
      .map((label) => ({ label, name: model.classes[label], probability: probs[label] }));
    return { image, top };
  });
  const nameWidth = Math.max(...model.classes.map((c) => c.length));
  for (const r of results) {
    log(r.image);
    r.top.forEach((t, rank) => log(`  ${rank + 1}. ${t.name.padEnd(nameWidth)}  ${t.probability.toFixed(4)}`));
  }
  return results;
}

/** In float64 with the max subtracted, so large logits neither overflow nor lose the small classes. */
function softmax(logits: Float32Array): Float64Array {
  const max = Math.max(...logits);
  const e = Float64Array.from(logits, (v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

export function registerPredict(program: Command): void {
  program
    .command('predict')
    .description('print the top-3 classes with probabilities for each PNG or JPEG image')
    .argument('<checkpoint>', 'checkpoint file, or a run directory (its newest valid checkpoint)')
    .argument('<images...>', 'PNG or JPEG files (resized to the model input; colour or grey as the model needs)')
    .addOption(backendOption())
    .action(async (checkpoint: string, images: string[], opts: PredictOptions) => {
      await runPredict(checkpoint, images, opts);
    });
}
