#!/usr/bin/env node
// `coordinator`: runs a training job. With --workers 1 (and no --local-workers)
// it trains in this process; otherwise it coordinates N data-parallel workers,
// --local-workers of them as threads here and the rest joining with
// `worker --connect host:port --token T`.
import fs from 'node:fs';
import { Command, Option } from 'commander';
import type { TlsFiles } from './dashboard/http-server.js';
import { addTrainOptions, configFromOptions } from '../common/training/config.js';
import { runMain, UsageError } from '../common/cli/run-main.js';
import { train } from '../common/training/single-process.js';
import { runCoordinator } from './coordinator.js';
import { WORKER_LOSS_POLICIES } from './membership.js';
import { TOKEN_ENV } from './admission.js';

const DEFAULT_PORT = 29500;

const program = addTrainOptions(
  new Command('coordinator')
    .description('Train a CIFAR ResNet (data-parallel across --workers replicas)')
    .addOption(new Option('--workers <n>', 'number of replicas').default(1).argParser((v) => Number(v)))
    .addOption(new Option('--local-workers <k>', 'how many replicas run on this machine, as threads or processes (default: all)').argParser((v) => Number(v)))
    .option('--host <addr>', 'interface the control server listens on', '127.0.0.1')
    .addOption(new Option('--port <n>', 'control server port (0: any free port)').default(DEFAULT_PORT).argParser((v) => Number(v)))
    .option('--token <secret>', `shared secret remote workers must present (or ${TOKEN_ENV})`)
    .addOption(new Option('--allreduce <kind>', 'gradient all-reduce algorithm').choices(['ring', 'star']).default('ring'))
    .addOption(new Option('--checksum-every <steps>', 'compare the replicas\' weights every N steps').default(50).argParser((v) => Number(v)))
    .option('--per-worker-batch', '--batch-size is per worker: global batch and lr scale by --workers (linear scaling rule; add --warmup-epochs)', false)
    .addOption(new Option('--local-mode <mode>', 'local workers as threads or child processes (default: process for the tensorflow backend, else thread)').choices(['thread', 'process']))
    .addOption(new Option('--dashboard <on>', 'serve the live dashboard at http://host:port/').choices(['true', 'false']).default('true'))
    .addOption(new Option('--worker-timeout <seconds>', 'a worker that sends nothing for this long (plus twice the longest step) is lost').default(30).argParser((v) => Number(v)))
    .addOption(new Option('--on-worker-loss <policy>', 'when a worker is lost: shrink (go on with the survivors), wait (for a replacement worker), abort (checkpoint, exit 1)')
      .choices([...WORKER_LOSS_POLICIES]).default('shrink'))
    .option('--tls-cert <file>', 'PEM certificate: serve wss:// and https:// (workers connect with wss://host:port --ca <file>)')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option('--gpus <ids>', 'GPU ids for local worker processes, e.g. 0,1,2,3 (each gets its own CUDA_VISIBLE_DEVICES)'),
);
program.showHelpAfterError('(run "coordinator --help" for all flags)');
program.exitOverride((err) => {
  process.exit(err.exitCode === 0 ? 0 : 2);
});

await runMain('coordinator', async () => {
  program.parse();
  const opts = program.opts();
  if (!Number.isInteger(opts.workers) || opts.workers < 1) throw new UsageError(`--workers must be a positive integer, got ${String(opts.workers)}`);
  const localWorkers: number = opts.localWorkers ?? opts.workers;
  if (!Number.isInteger(localWorkers) || localWorkers < 0 || localWorkers > opts.workers) {
    throw new UsageError(`--local-workers must be an integer from 0 to --workers (${opts.workers}), got ${String(opts.localWorkers)}`);
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) throw new UsageError(`--port must be 0..65535, got ${String(opts.port)}`);
  if (!Number.isInteger(opts.checksumEvery) || opts.checksumEvery < 1) {
    throw new UsageError(`--checksum-every must be a positive integer, got ${String(opts.checksumEvery)}`);
  }
  const remote = opts.workers - localWorkers;
  if (remote > 0 && !opts.token && !process.env[TOKEN_ENV]) {
    throw new UsageError(`${remote} remote worker(s) need a shared secret: pass --token <secret> (or set ${TOKEN_ENV}) here and to every worker`);
  }
  const gpus = opts.gpus === undefined ? undefined : String(opts.gpus).split(',').map((g) => g.trim());
  if (gpus && gpus.some((g) => !/^\d+$/.test(g))) throw new UsageError(`--gpus expects comma-separated GPU ids like 0,1,2,3, got "${String(opts.gpus)}"`);
  if (gpus && opts.localMode === 'thread') throw new UsageError('--gpus needs local worker processes: drop --local-mode thread');
  if (!Number.isFinite(opts.workerTimeout) || opts.workerTimeout <= 0) throw new UsageError(`--worker-timeout must be a positive number of seconds, got ${String(opts.workerTimeout)}`);
  if (Boolean(opts.tlsCert) !== Boolean(opts.tlsKey)) throw new UsageError('--tls-cert and --tls-key go together: pass both, or neither');
  const tls = opts.tlsCert ? readTlsFiles(opts.tlsCert, opts.tlsKey) : undefined;
  const cfg = configFromOptions(opts);
  const log = (line: string) => console.log(line);
  if (opts.workers === 1 && opts.localWorkers === undefined && !opts.localMode && !gpus) {
    const result = await train(cfg, { log, progressStream: process.stdout });
    const best = result.history.reduce((b, m) => (m.test_acc > b ? m.test_acc : b), 0);
    console.log(`done: ${result.state.step} steps, best test_acc ${best.toFixed(4)}; outputs in ${cfg.out}`);
    return;
  }
  const result = await runCoordinator(cfg, {
    workers: opts.workers, localWorkers, host: opts.host, port: opts.port, token: opts.token,
    allreduce: opts.allreduce, checksumEvery: opts.checksumEvery, perWorkerBatch: opts.perWorkerBatch,
    localMode: opts.localMode ?? (gpus ? 'process' : undefined), gpus, dashboard: opts.dashboard === 'true', tls, workerTimeoutMs: 1000 * opts.workerTimeout, onWorkerLoss: opts.onWorkerLoss, log, progressStream: process.stdout,
  });
  const best = result.history.reduce((b, m) => (m.test_acc > b ? m.test_acc : b), 0);
  for (const c of result.groupChanges) console.log(`group change at step ${c.step}: ${c.from} -> ${c.to} workers${c.lost.length > 0 ? ` (lost ${c.lost.join(', ')})` : ''}`);
  console.log(`done: ${result.steps} steps on ${opts.workers} workers, best test_acc ${best.toFixed(4)}; outputs in ${cfg.out}`);
});

function readTlsFiles(certPath: string, keyPath: string): TlsFiles {
  const read = (file: string, flag: string) => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new UsageError(`cannot read ${flag} ${file}: ${(err as Error).message}`);
    }
  };
  return { cert: read(certPath, '--tls-cert'), key: read(keyPath, '--tls-key'), certPath };
}
