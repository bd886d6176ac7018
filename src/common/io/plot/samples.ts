// samples.png: what the network actually sees after augmentation, as in the
// seed's sample grid. Shared by the single-process trainer and the coordinator.
import path from 'node:path';
import { globalBatches } from '../../data/sampler.js';
import { makeBatch, NORMALIZE } from '../../data/augment.js';
import { writeSamplesPng } from './charts.js';
import type { Dataset } from '../../data/types.js';

/** samples.png: 8 augmented training images of the first epoch, with their class names. */
export async function writeSamples(cfg: { seed: number; out: string }, data: Dataset): Promise<void> {
  const set = data.train;
  const indices = globalBatches(set.count, 8, cfg.seed, 0, { shuffle: true })[0];
  const { x, y } = makeBatch(set, indices, { augment: true, seed: cfg.seed, epoch: 0, ...NORMALIZE });
  const pixelsPer = set.height * set.width * set.channels;
  const images = Array.from(indices, (_, i) => {
    // Undo the normalisation (x * 0.5 + 0.5), as the seed's plot does.
    const pixels = new Uint8Array(pixelsPer);
    for (let k = 0; k < pixelsPer; k++) pixels[k] = Math.round(Math.min(1, Math.max(0, x[i * pixelsPer + k] * 0.5 + 0.5)) * 255);
    return { pixels, height: set.height, width: set.width, channels: set.channels, label: data.classes[y[i]] };
  });
  await writeSamplesPng(path.join(cfg.out, 'samples.png'), images);
}
