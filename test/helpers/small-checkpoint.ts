// A tiny trained checkpoint for the utility-command tests: one epoch of
// resnet18 width 4 on 64 synthetic images (four SGD steps). Trained on wasm,
// which takes under 1 s where cpu takes 25 s; the checkpoint is the same kind.
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULTS, type TrainConfig } from '../../src/common/training/config.js';
import { train, type TrainResult } from '../../src/common/training/single-process.js';
import { makeTempDir } from './data-fixtures.js';

export interface SmallCheckpoint {
  dir: string;
  file: string;
  cfg: TrainConfig;
  result: TrainResult;
}

export async function trainSmallCheckpoint(overrides: Partial<TrainConfig> = {}): Promise<SmallCheckpoint> {
  const dir = makeTempDir('ckpt');
  const cfg: TrainConfig = {
    ...DEFAULTS, model: 'resnet18', width: 4, dataset: 'synthetic', trainLimit: 64, testLimit: 40,
    epochs: 1, batchSize: 16, backend: 'wasm', out: dir, plots: false, loaderThreads: 1, ...overrides,
  };
  const result = await train(cfg, { log: () => {} });
  const names = fs.readdirSync(dir).filter((f) => f.startsWith('ckpt-'));
  if (names.length !== 1) throw new Error(`expected one checkpoint in ${dir}, found ${names.join(', ') || 'none'}`);
  return { dir, file: path.join(dir, names[0]), cfg, result };
}
