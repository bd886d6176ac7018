// `tfjs-ddp import <file.safetensors> --out DIR`: a PyTorch state_dict of the
// seed model (or a `tfjs-ddp export --format safetensors`) as a tfjs-ddp
// checkpoint, ready for evaluate, predict, export, or training with --resume.
import fs from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { UsageError } from '../../common/cli/run-main.js';
import { checkpointFileName, listCheckpoints } from '../../common/io/checkpoint.js';
import { DEFAULTS, type TrainConfig } from '../../common/training/config.js';
import { DATASET_NAMES, datasetInfo, isDatasetName } from '../../common/data/dataset-info.js';
import { StateDictFlagMismatch, stateDictFromSafetensors } from '../../common/io/export/torch-state-dict.js';
import type { ModelName } from '../../common/model/spec.js';
import { readSafetensors, SafetensorsError } from '../../common/io/safetensors.js';
import { saveCheckpoint, type RunState } from '../../common/training/run-state.js';
import type { DatasetName } from '../../common/data/types.js';
import { datasetOption, intFlag, modelOption } from '../../common/cli/flags.js';

export interface ImportOptions {
  out: string;
  model?: ModelName;
  width?: number;
  dataset?: DatasetName;
  prefix?: string;
}

/** Writes the checkpoint and returns its path. */
export async function runImport(file: string, opts: ImportOptions, log: (line: string) => void = console.log): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`cannot import ${file}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}; pass a .safetensors state_dict`);
  }
  let contents: ReturnType<typeof readSafetensors>;
  try {
    contents = readSafetensors(bytes, file);
  } catch (err) {
    if (!(err instanceof SafetensorsError)) throw err;
    const fix = err.problem === 'truncated'
      ? 'the file is incomplete (an interrupted download or copy); copy it again'
      : 'save the state_dict with safetensors.torch.save_file(model.state_dict(), path)';
    throw new Error(`cannot import ${err.message}; ${fix}`);
  }
  const { config, spec, state } = asUsageError(() => stateDictFromSafetensors(contents, { prefix: opts.prefix, model: opts.model, width: opts.width }));
  if (!DATASET_NAMES.some((d) => datasetInfo(d).classes.length === config.numClasses)) {
    throw new Error(`the model predicts ${config.numClasses} classes, and no tfjs-ddp dataset (${DATASET_NAMES.join(', ')}) has that many; it cannot be imported`);
  }
  const dataset = chooseDataset(opts.dataset, contents.metadata.dataset, config.inChannels);
  const info = datasetInfo(dataset);
  if (info.channels !== config.inChannels || info.classes.length !== config.numClasses) {
    throw new UsageError(
      `the model takes ${config.inChannels}-channel images and predicts ${config.numClasses} classes, but ${dataset} has ` +
        `${info.channels} channel(s) and ${info.classes.length} classes; pass the --dataset it was trained on`,
    );
  }
  const existing = await listCheckpoints(opts.out);
  if (existing.length > 0) {
    // --resume picks the highest step, so an import beside other checkpoints could silently lose to them.
    throw new UsageError(`${opts.out} already holds checkpoints (${existing[0].name}); choose an empty --out directory`);
  }

  const cfg: TrainConfig = { ...DEFAULTS, model: config.name, width: config.width, norm: config.norm, dataset, out: opts.out };
  const trainState: RunState = {
    weights: state.weights,
    // A zero buffer equals PyTorch's fresh one: the first SGD step then uses the plain gradient.
    momentum: new Float32Array(spec.paramCount),
    runningStats: state.runningStats,
    step: state.numBatchesTracked,
    epoch: 0,
    stepInEpoch: 0,
    epochTotals: { lossSum: 0, correct: 0, seen: 0, seconds: 0 },
    history: [],
  };
  await saveCheckpoint(cfg, spec, trainState);
  const written = path.join(opts.out, checkpointFileName(0, trainState.step));
  log(`imported ${file}: ${config.name} width ${config.width}, ${config.numClasses} classes, ${config.inChannels} input channel(s), ` +
    `${config.norm === 'batch' ? 'BatchNorm' : 'no normalisation'}, dataset ${dataset}, step ${trainState.step}`);
  log(`wrote ${written}`);
  return written;
}

/** A file that contradicts --model or --width is the flag's fault: exit 2, as for any bad flag. */
function asUsageError<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (err instanceof StateDictFlagMismatch) throw new UsageError(err.message);
    throw err;
  }
}

function chooseDataset(flag: DatasetName | undefined, fromMetadata: string | undefined, inChannels: number): DatasetName {
  if (flag) return flag;
  if (isDatasetName(fromMetadata)) return fromMetadata;
  if (inChannels === 1) return 'fashion-mnist'; // the only greyscale dataset
  throw new UsageError(
    'the file does not say which dataset the model was trained on and a 3-channel model may be cifar10 or synthetic; pass --dataset cifar10 or --dataset synthetic',
  );
}

export function registerImport(program: Command): void {
  program
    .command('import')
    .description('make a checkpoint from a PyTorch state_dict in safetensors form (model, width, classes and channels are read from the shapes)')
    .argument('<file>', '.safetensors file with the state_dict')
    .requiredOption('--out <dir>', 'directory for the checkpoint (must hold no checkpoints yet)')
    .addOption(modelOption(undefined, 'expected network (default: inferred from the keys)'))
    .addOption(new Option('--width <n>', 'expected base width (default: inferred from conv1.weight)').argParser(intFlag(1)))
    .addOption(datasetOption('dataset the model was trained on (class names, input format); needed for 3-channel models unless the file says'))
    .option('--prefix <p>', 'strip this prefix from every key, e.g. "module." for DataParallel state_dicts')
    .action(async (file: string, opts: ImportOptions) => {
      await runImport(file, opts);
    });
}
