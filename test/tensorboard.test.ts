// --tensorboard: event files where the native package exists; elsewhere one
// plain line saying why not, and the run goes on with metrics.jsonl.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect, test } from 'vitest';
import { DEFAULTS } from '../src/common/training/config.js';
import { train } from '../src/common/training/single-process.js';
import { tensorflowInstalled } from '../src/common/backend/backend.js';
import { readMetrics } from '../src/common/io/metrics.js';

test('--tensorboard writes event files, or says plainly that it cannot', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-tb-'));
  const tbDir = path.join(out, 'tb');
  const lines: string[] = [];
  const result = await train({
    ...DEFAULTS, model: 'resnet18', width: 2, dataset: 'synthetic', trainLimit: 16, testLimit: 10, epochs: 1, batchSize: 16,
    backend: 'wasm', out, plots: false, loaderThreads: 1, tensorboard: tbDir,
  }, { log: (l) => lines.push(l) });
  expect(result.history).toHaveLength(1);
  expect(await readMetrics(path.join(out, 'metrics.jsonl'))).toHaveLength(1);
  if (tensorflowInstalled()) {
    expect(lines).toContainEqual(`tensorboard: writing event files to ${tbDir}`);
    expect(fs.readdirSync(tbDir).some((f) => f.startsWith('events.out.tfevents'))).toBe(true);
  } else {
    expect(lines).toContainEqual(expect.stringMatching(
      /^tensorboard: not available \(backend "tensorflow" needs @tensorflow\/tfjs-node-gpu .*\); the same scalars are in metrics\.jsonl$/));
    expect(fs.existsSync(tbDir)).toBe(false);
  }
}, 60_000);
