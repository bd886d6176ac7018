// `tfjs-ddp export <checkpoint> --format tfjs|safetensors --out DIR`: the
// trained weights for use outside tfjs-ddp, as a TensorFlow.js LayersModel or
// as a PyTorch state_dict of the seed model.
import path from 'node:path';
import { Command, Option } from 'commander';
import { initBackend } from '../../common/backend/backend.js';
import { writeFileAtomic } from '../../common/fs/atomic-file.js';
import { encodeSafetensors } from '../../common/io/safetensors.js';
import { loadTrainedModel, type TrainedModel } from '../../common/training/trained-model.js';
import { buildLayersModel } from '../../common/io/export/tfjs-layers-model.js';
import { directorySaveHandler } from '../../common/io/export/tfjs-model-files.js';
import { stateDictTensors } from '../../common/io/export/torch-state-dict.js';
import { packageVersion } from '../../common/fs/package-version.js';

export const EXPORT_FORMATS = ['tfjs', 'safetensors'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];
export const SAFETENSORS_NAME = 'model.safetensors';

export interface ExportOptions {
  format: ExportFormat;
  out: string;
}

/** Writes the export into `opts.out` and returns the paths written. */
export async function runExport(checkpoint: string, opts: ExportOptions, log: (line: string) => void = console.log): Promise<string[]> {
  const model = await loadTrainedModel(checkpoint, (m) => process.stderr.write(`warning: ${m}\n`));
  const files = opts.format === 'tfjs' ? await exportTfjs(model, opts.out) : [await exportSafetensors(model, opts.out)];
  log(`exported ${model.file} (${model.config.model} width ${model.config.width}, step ${model.step}) as ${opts.format}:`);
  for (const f of files) log(`  ${f}`);
  return files;
}

async function exportTfjs(model: TrainedModel, out: string): Promise<string[]> {
  // Building the graph only needs some backend; cpu is always there and loads fastest.
  await initBackend('cpu');
  const layers = buildLayersModel(model.spec, model.weights, model.runningStats);
  const written: string[] = [];
  try {
    await layers.save(directorySaveHandler(out, written));
  } catch (err) {
    throw new Error(`cannot write the TensorFlow.js model to ${out}: ${(err as Error).message}; choose a writable --out`);
  } finally {
    layers.dispose();
  }
  return written.map((f) => path.join(out, f));
}

async function exportSafetensors(model: TrainedModel, out: string): Promise<string> {
  const tensors = stateDictTensors(model.spec, { weights: model.weights, runningStats: model.runningStats, numBatchesTracked: model.step });
  // "format: pt" is what transformers and safetensors.torch look for; the rest lets
  // `tfjs-ddp import` restore the dataset without flags.
  const bytes = encodeSafetensors(tensors, {
    format: 'pt',
    model: model.config.model,
    width: String(model.config.width),
    dataset: model.config.dataset,
    num_classes: String(model.spec.config.numClasses),
    in_channels: String(model.spec.config.inChannels),
    step: String(model.step),
    writer: `tfjs-ddp ${packageVersion()}`,
  });
  try {
    return await writeFileAtomic(out, SAFETENSORS_NAME, [bytes]);
  } catch (err) {
    throw new Error(`cannot write ${path.join(out, SAFETENSORS_NAME)}: ${(err as Error).message}; choose a writable --out`);
  }
}

export function registerExport(program: Command): void {
  program
    .command('export')
    .description('write a checkpoint as a TensorFlow.js LayersModel (model.json + shards) or a PyTorch state_dict (model.safetensors)')
    .argument('<checkpoint>', 'checkpoint file, or a run directory (its newest valid checkpoint)')
    .addOption(new Option('--format <format>', 'output format').choices([...EXPORT_FORMATS]).makeOptionMandatory())
    .requiredOption('--out <dir>', 'output directory')
    .action(async (checkpoint: string, opts: ExportOptions) => {
      await runExport(checkpoint, opts);
    });
}
