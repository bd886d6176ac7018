// The smallest real training run the coordinator tests share: ResNet18
// width 2 on 36 synthetic images, cpu backend, 3 steps an epoch.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULTS, type TrainConfig } from '../../src/common/training/config.js';

export function tinyRunConfig(overrides: Partial<TrainConfig>): TrainConfig {
  return {
    ...DEFAULTS, model: 'resnet18', width: 2, dataset: 'synthetic', backend: 'cpu',
    trainLimit: 36, testLimit: 12, batchSize: 12, epochs: 2, seed: 3, plots: false, loaderThreads: 1,
    out: fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-run-')), ...overrides,
  };
}
