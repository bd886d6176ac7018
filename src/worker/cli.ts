#!/usr/bin/env node
// `worker --connect host:port`: joins a coordinator as one data-parallel replica.
import { Command } from 'commander';
import { runMain, UsageError } from '../common/cli-errors.js';

const program = new Command('worker')
  .description('Join a coordinator as one training replica')
  .requiredOption('--connect <host:port>', 'coordinator address')
  .option('--token <token>', 'shared secret (or TFJS_DDP_TOKEN)')
  .option('--backend <name>', 'TensorFlow.js backend', 'auto');
program.exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));

await runMain('worker', async () => {
  program.parse();
  const { connect } = program.opts<{ connect: string }>();
  if (!/^[^:\s]+:\d{1,5}$/.test(connect)) throw new UsageError(`--connect expects host:port, got "${connect}"`);
  throw new UsageError('remote workers are not available in this version yet: run "coordinator --workers 1" to train in one process');
});
