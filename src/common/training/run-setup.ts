// What a run sets up before its first step, the same for the single-process
// trainer and the distributed coordinator: the dataset, the model, the state
// (fresh from the seed, or resumed from the newest valid checkpoint), the
// output directory with a fresh metrics.jsonl and samples.png, and the
// outputs that record every epoch. The backend is not set up here: the
// coordinator runs no TensorFlow.js.
import fs from 'node:fs';
import type { TrainConfig } from './config.js';
import type { Dataset } from '../data/types.js';
import type { ModelSpec } from '../model/spec.js';
import { loadDataset } from '../data/load-dataset.js';
import { writeSamples } from '../io/plot/samples.js';
import { TensorboardLog } from '../io/tensorboard.js';
import { freshState, modelSpecFor, resumeState, type RunState } from './run-state.js';
import { RunOutputs } from './run-outputs.js';

export interface PreparedRun {
  data: Dataset;
  spec: ModelSpec;
  state: RunState;
  outputs: RunOutputs;
}

/** `runsOn` ends the run's description line: the backend, or the workers and the all-reduce. */
export async function prepareRun(cfg: TrainConfig, log: (line: string) => void, runsOn: string): Promise<PreparedRun> {
  const data = await loadDataset({
    name: cfg.dataset, dataDir: cfg.dataDir, trainLimit: cfg.trainLimit, testLimit: cfg.testLimit,
    seed: cfg.seed, download: cfg.download, log,
  });
  const spec = modelSpecFor(cfg, data);
  log(`data: ${data.name}, ${data.train.count} train / ${data.test.count} test images; model: ${cfg.model} width ${cfg.width}, ` +
    `${spec.paramCount.toLocaleString('en-US')} parameters; ${runsOn}`);
  fs.mkdirSync(cfg.out, { recursive: true });

  const state = cfg.resume ? await resumeState(cfg, spec, log) : freshState(cfg, spec);
  const outputs = new RunOutputs(cfg, spec, data.train.count, log);
  // A resumed run keeps its metrics.jsonl (resumeState made it match the checkpoint) and its samples.
  if (!cfg.resume) fs.rmSync(outputs.metricsFile, { force: true });
  if (cfg.plots && !cfg.resume) await writeSamples(cfg, data);
  const tensorboard = cfg.tensorboard ? await TensorboardLog.open(cfg.tensorboard, log) : null;
  if (tensorboard) outputs.onEpoch.push((m) => tensorboard.epoch(m));
  return { data, spec, state, outputs };
}
