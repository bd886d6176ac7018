#!/usr/bin/env node
// `coordinator`: runs a training job. With --workers 1 (and no --local-workers)
// it trains in this process; otherwise it coordinates N data-parallel workers,
// --local-workers of them as threads here and the rest joining with
// `worker --connect host:port --token T`.
import { WIRE_NAMES } from '../common/allreduce/wire-format.js';
import fs from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { TlsFiles } from './dashboard/http-server.js';
import type { BackendChoice } from '../common/backend/names.js';
import { tensorflowInstalled } from '../common/backend/backend.js';
import { addTrainOptions, configFromOptions } from '../common/cli/train-options.js';
import { exitOnUsageError, intFlag, listFlag, numberFlag, portFlag } from '../common/cli/flags.js';
import { runMain, UsageError } from '../common/cli/run-main.js';
import { train } from '../common/training/single-process.js';
import { runCoordinator } from './coordinator.js';
import { WORKER_LOSS_POLICIES } from './membership.js';
import { TOKEN_ENV } from './admission.js';
import { assignGpus, GPU_ID_HELP, GpuAssignmentError, isGpuId } from './gpu-assignment.js';
import { defaultLocalMode, threadModeRefusal } from './local-workers.js';
import { DEFAULT_FIRST_STEP_ALLOWANCE_MS } from './watchdog.js';

const DEFAULT_PORT = 29500;

/** CUDA device ids, kept as written: each local worker process gets one as CUDA_VISIBLE_DEVICES (see gpu-assignment.ts). */
const gpuIds = listFlag((id: string): string => {
  if (!isGpuId(id)) throw new InvalidArgumentError(`expected ${GPU_ID_HELP}, got "${id}"`);
  return id;
}, '0,1,2,3');

const program = addTrainOptions(
  new Command('coordinator')
    .description('Train a CIFAR ResNet (data-parallel across --workers replicas)')
    .addOption(new Option('--workers <n>', 'number of replicas').default(1).argParser(intFlag(1)))
    .addOption(new Option('--local-workers <k>', 'how many replicas run on this machine, as threads or processes (default: all)').argParser(intFlag(0)))
    .option('--host <addr>', 'interface the control server listens on', '127.0.0.1')
    .addOption(new Option('--port <n>', 'control server port (0: any free port)').default(DEFAULT_PORT).argParser(portFlag))
    .option('--token <secret>', `shared secret remote workers must present (or ${TOKEN_ENV})`)
    .addOption(new Option('--allreduce <kind>', 'gradient all-reduce algorithm').choices(['ring', 'star']).default('ring'))
    .addOption(new Option('--wire <format>', "the ring's wire format: bf16 and fp16 halve the bytes and are compressed (lossy sums; replicas stay bit-identical)")
      .choices([...WIRE_NAMES]).default('fp32'))
    .addOption(new Option('--checksum-every <steps>', 'compare the replicas\' weights every N steps').default(50).argParser(intFlag(1)))
    .option('--per-worker-batch', '--batch-size is per worker: global batch and lr scale by --workers (linear scaling rule; add --warmup-epochs)', false)
    .addOption(new Option('--local-mode <mode>', 'local workers as threads or child processes (default: process for the tensorflow backend, else thread)').choices(['thread', 'process']))
    .addOption(new Option('--dashboard <on>', 'serve the live dashboard at http://host:port/').choices(['true', 'false']).default('true'))
    .addOption(new Option('--worker-timeout <seconds>', 'a worker that sends nothing for this long (plus twice the longest step) is lost').default(30).argParser(numberFlag(0, true)))
    .addOption(new Option('--first-step-timeout <seconds>', 'until a step has been measured, how long a silent worker is allowed on top of --worker-timeout ' +
      '(backend start-up, kernel compilation: raise it for TensorFlow on A100/H100/H200, which compiles PTX for minutes on first start)')
      .default(DEFAULT_FIRST_STEP_ALLOWANCE_MS / 1000).argParser(numberFlag(0)))
    .addOption(new Option('--on-worker-loss <policy>', 'when a worker is lost: shrink (go on with the survivors), wait (for a replacement worker), abort (checkpoint, exit 1)')
      .choices([...WORKER_LOSS_POLICIES]).default('shrink'))
    .option('--tls-cert <file>', 'PEM certificate: serve wss:// and https:// (workers connect with wss://host:port --ca <file>)')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .addOption(new Option('--gpus <ids>', 'GPUs for local worker processes, one each as its CUDA_VISIBLE_DEVICES: indexes (0,1,2,3), GPU-<uuid> or MIG-<uuid>; ' +
      'integers index into an inherited CUDA_VISIBLE_DEVICES (default: its GPUs, with --backend tensorflow)').argParser(gpuIds)),
);
exitOnUsageError(program);

await runMain('coordinator', async () => {
  program.parse();
  const opts = program.opts();
  const localWorkers: number = opts.localWorkers ?? opts.workers;
  if (localWorkers > opts.workers) {
    throw new UsageError(`--local-workers must be an integer from 0 to --workers (${opts.workers}), got ${localWorkers}`);
  }
  const remote = opts.workers - localWorkers;
  if (remote > 0 && !opts.token && !process.env[TOKEN_ENV]) {
    throw new UsageError(`${remote} remote worker(s) need a shared secret: pass --token <secret> (or set ${TOKEN_ENV}) here and to every worker`);
  }
  const requestedGpus: string[] | undefined = opts.gpus;
  if (requestedGpus && opts.localMode === 'thread') throw new UsageError('--gpus needs local worker processes: drop --local-mode thread');
  const threadRefusal = opts.localMode === 'thread' ? threadModeRefusal(opts.backend) : null;
  if (threadRefusal !== null) throw new UsageError(threadRefusal);
  if (opts.wire !== 'fp32' && opts.allreduce !== 'ring') throw new UsageError(`--wire ${opts.wire} needs --allreduce ring: the star sums in fp32`);
  if (Boolean(opts.tlsCert) !== Boolean(opts.tlsKey)) throw new UsageError('--tls-cert and --tls-key go together: pass both, or neither');
  const tls = opts.tlsCert ? readTlsFiles(opts.tlsCert, opts.tlsKey) : undefined;
  const cfg = configFromOptions(opts);
  const log = (line: string) => console.log(line);
  if (opts.workers === 1 && opts.localWorkers === undefined && !opts.localMode && !requestedGpus) {
    const result = await train(cfg, { log, progressStream: process.stdout });
    const best = result.history.reduce((b, m) => (m.test_acc > b ? m.test_acc : b), 0);
    console.log(`done: ${result.state.step} steps, best test_acc ${best.toFixed(4)}; outputs in ${cfg.out}`);
    return;
  }
  const localMode = opts.localMode ?? (requestedGpus ? 'process' : defaultLocalMode(opts.backend));
  const gpus = localMode === 'process' ? localGpus(localWorkers, requestedGpus, opts.backend, log) : undefined;
  const result = await runCoordinator(cfg, {
    workers: opts.workers, localWorkers, host: opts.host, port: opts.port, token: opts.token,
    allreduce: opts.allreduce, wire: opts.wire, checksumEvery: opts.checksumEvery, perWorkerBatch: opts.perWorkerBatch,
    localMode, gpus, dashboard: opts.dashboard === 'true', tls, workerTimeoutMs: 1000 * opts.workerTimeout,
    firstStepTimeoutMs: 1000 * opts.firstStepTimeout, onWorkerLoss: opts.onWorkerLoss, log, progressStream: process.stdout,
  });
  const best = result.history.reduce((b, m) => (m.test_acc > b ? m.test_acc : b), 0);
  for (const c of result.groupChanges) console.log(`group change at step ${c.step}: ${c.from} -> ${c.to} workers${c.lost.length > 0 ? ` (lost ${c.lost.join(', ')})` : ''}`);
  console.log(`done: ${result.steps} steps on ${opts.workers} workers, best test_acc ${best.toFixed(4)}; outputs in ${cfg.out}`);
});

/**
 * Each local worker process's CUDA_VISIBLE_DEVICES: from --gpus, else (for a
 * backend that may use the GPU) from the inherited CUDA_VISIBLE_DEVICES.
 */
function localGpus(workers: number, requested: string[] | undefined, backend: BackendChoice, log: (line: string) => void): string[] | undefined {
  const mayUseGpu = backend === 'tensorflow' || (backend === 'auto' && tensorflowInstalled());
  if (requested === undefined && !mayUseGpu) return undefined;
  try {
    const assignment = assignGpus({
      workers, gpus: requested, inherited: process.env.CUDA_VISIBLE_DEVICES, allowGrowth: process.env.TF_FORCE_GPU_ALLOW_GROWTH,
    });
    if (assignment?.note) log(assignment.note);
    return assignment?.gpus;
  } catch (err) {
    if (err instanceof GpuAssignmentError) throw new UsageError(err.message);
    throw err;
  }
}

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
