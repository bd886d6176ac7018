// A trained model as the utility commands (export, evaluate, predict) need it:
// the checkpoint's weights and running statistics with the network they
// belong to and the class names it predicts. Accepts a checkpoint file or a
// run directory, so `tfjs-ddp evaluate runs/demo` works without a file name.
import fs from 'node:fs';
import { CheckpointError, loadNewestValidCheckpoint, readCheckpoint } from '../io/checkpoint.js';
import type { TrainConfig } from './config.js';
import { datasetInfo, isDatasetName } from '../data/dataset-info.js';
import { buildModelSpec, isModelName, type ModelSpec } from '../model/spec.js';
import type { CheckpointMeta } from './run-state.js';

export interface TrainedModel {
  /** The checkpoint file actually read. */
  file: string;
  config: TrainConfig;
  spec: ModelSpec;
  classes: readonly string[];
  weights: Float32Array;
  runningStats: Float32Array;
  /** Optimizer steps the weights have seen (PyTorch's num_batches_tracked). */
  step: number;
  epoch: number;
}

const FILE_HINT = 'pass a ckpt-e*-s*.safetensors file or the --out directory of a training run';

export async function loadTrainedModel(fileOrDir: string, warn: (message: string) => void = () => {}): Promise<TrainedModel> {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(fileOrDir);
  } catch {
    throw new Error(`checkpoint ${fileOrDir} does not exist; ${FILE_HINT}`);
  }
  let file = fileOrDir;
  let loaded: { meta: CheckpointMeta; tensors: Record<string, Float32Array> };
  try {
    if (stat.isDirectory()) {
      const newest = await loadNewestValidCheckpoint<CheckpointMeta>(fileOrDir, warn);
      file = newest.path;
      loaded = newest;
    } else {
      loaded = await readCheckpoint<CheckpointMeta>(fileOrDir);
    }
  } catch (err) {
    // A PyTorch state_dict is the likely mix-up here, and it has a one-command fix.
    if (err instanceof CheckpointError && /not a tfjs-ddp checkpoint/.test(err.message)) {
      throw new Error(`${err.message}; for a PyTorch state_dict run \`tfjs-ddp import ${fileOrDir} --out DIR\` first`);
    }
    throw err;
  }
  return fromCheckpoint(file, loaded.meta, loaded.tensors);
}

function fromCheckpoint(file: string, meta: CheckpointMeta, tensors: Record<string, Float32Array>): TrainedModel {
  const cfg = meta?.config;
  if (!cfg || !isModelName(cfg.model) || !isDatasetName(cfg.dataset) || !Number.isInteger(cfg.width)) {
    throw new CheckpointError(file, 'its metadata has no usable config (model, width, dataset); it was not written by tfjs-ddp training or import');
  }
  const info = datasetInfo(cfg.dataset);
  const spec = buildModelSpec({
    name: cfg.model, width: cfg.width, norm: cfg.norm ?? 'batch', numClasses: info.classes.length, inChannels: info.channels,
  });
  const { weights, running_stats: runningStats } = tensors;
  if (weights?.length !== spec.paramCount || (runningStats?.length ?? 0) !== spec.runningStatsSize) {
    throw new CheckpointError(
      file,
      `its tensors (weights ${weights?.length ?? 'missing'}, running_stats ${runningStats?.length ?? 'missing'}) do not fit ` +
        `${cfg.model} width ${cfg.width} on ${cfg.dataset} (${spec.paramCount} and ${spec.runningStatsSize} values); the file is damaged or edited`,
    );
  }
  return {
    file, config: cfg, spec, classes: info.classes,
    weights, runningStats: runningStats ?? new Float32Array(0),
    step: meta.step ?? 0, epoch: meta.epoch ?? 0,
  };
}
