#!/usr/bin/env node
// `coordinator`: runs a training job. With --workers 1 it trains in this
// process; distributed runs (--workers > 1) come with the coordinator of the
// distributed-training issue.
import { Command, Option } from 'commander';
import { addTrainOptions, configFromOptions } from '../common/config.js';
import { runMain, UsageError } from '../common/cli-errors.js';
import { train } from '../common/trainer.js';

const program = addTrainOptions(
  new Command('coordinator')
    .description('Train a CIFAR ResNet (data-parallel across --workers replicas)')
    .addOption(new Option('--workers <n>', 'number of replicas').default(1).argParser((v) => Number(v))),
);
program.showHelpAfterError('(run "coordinator --help" for all flags)');
program.exitOverride((err) => {
  process.exit(err.exitCode === 0 ? 0 : 2);
});

await runMain('coordinator', async () => {
  program.parse();
  const opts = program.opts();
  if (!Number.isInteger(opts.workers) || opts.workers < 1) throw new UsageError(`--workers must be a positive integer, got ${String(opts.workers)}`);
  if (opts.workers > 1) {
    throw new UsageError(`--workers ${opts.workers}: distributed training is not available in this version yet; use --workers 1`);
  }
  const cfg = configFromOptions(opts);
  const result = await train(cfg, { log: (line) => console.log(line), progressStream: process.stdout });
  const best = result.history.reduce((b, m) => (m.test_acc > b ? m.test_acc : b), 0);
  console.log(`done: ${result.state.step} steps, best test_acc ${best.toFixed(4)}; outputs in ${cfg.out}`);
});
