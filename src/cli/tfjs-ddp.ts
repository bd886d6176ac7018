#!/usr/bin/env node
// `tfjs-ddp <subcommand>`: utilities around training runs.
import { Command, Option } from 'commander';
import { exitOnUsageError, intFlag } from '../common/cli/flags.js';
import { runMain } from '../common/cli/run-main.js';
import { buildModelSpec, MODEL_NAMES } from '../common/model/spec.js';
import { registerEvaluate } from './commands/evaluate.js';
import { registerExport } from './commands/export.js';
import { registerImport } from './commands/import.js';
import { registerPredict } from './commands/predict.js';

const program = new Command('tfjs-ddp').description('tfjs-ddp utilities');
program
  .command('models')
  .description('list the models with their trainable parameter counts')
  .addOption(new Option('--width <n>', 'base width').default(64).argParser(intFlag(1)))
  .addOption(new Option('--classes <n>', 'output classes').default(10).argParser(intFlag(1)))
  .addOption(new Option('--in-channels <n>', 'input channels (3 for CIFAR-10, 1 for Fashion-MNIST)').default(3).argParser(intFlag(1)))
  .action((opts: { width: number; classes: number; inChannels: number }) => {
    const rows = MODEL_NAMES.map((name) => {
      const spec = buildModelSpec({ name, width: opts.width, numClasses: opts.classes, inChannels: opts.inChannels, norm: 'batch' });
      return [name, spec.paramCount.toLocaleString('en-US'), String(spec.batchNorms.length)];
    });
    const header = ['model', 'parameters', 'batchnorms'];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
    console.log(`width ${opts.width}, ${opts.classes} classes, ${opts.inChannels} input channels`);
    console.log(line(header));
    for (const r of rows) console.log(line(r));
  });

registerExport(program);
registerImport(program);
registerEvaluate(program);
registerPredict(program);
exitOnUsageError(program);

await runMain('tfjs-ddp', async () => {
  await program.parseAsync();
});
