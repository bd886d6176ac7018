#!/usr/bin/env node
// `worker --connect host:port --token T`: joins a coordinator as one data-parallel replica.
import { Command, Option } from 'commander';
import { backendOption, exitOnUsageError, numberFlag, portFlag } from '../common/cli/flags.js';
import { runMain, UsageError } from '../common/cli/run-main.js';
import type { BackendChoice } from '../common/backend/names.js';
import { CACHE_ENV, defaultCacheDir } from '../common/data/dataset-cache.js';
import { TOKEN_ENV } from '../common/protocol/index.js';
import { parseCoordinatorAddress, runWorker } from './worker.js';

/** Lets cluster managers (Kubernetes, Slurm) inject the address instead of a flag. */
const CONNECT_ENV = 'TFJS_DDP_COORDINATOR';

const program = new Command('worker')
  .description('Join a coordinator as one training replica')
  .option('--connect <address>', `coordinator address: host:port, or wss://host:port for TLS (or ${CONNECT_ENV})`)
  .option('--token <token>', `shared secret (or ${TOKEN_ENV})`)
  .addOption(backendOption(null, "TensorFlow.js backend (default: the coordinator's --backend)"))
  .option('--ring-host <addr>', 'address this worker\'s all-reduce endpoint listens on and the other workers reach it at', '127.0.0.1')
  .addOption(new Option('--ring-port <n>', 'port of this worker\'s all-reduce endpoint (0: any free port; fix it to open a firewall)').default(0).argParser(portFlag))
  .option('--ca <file>', 'PEM certificate (or CA) to trust for a wss:// coordinator')
  .option('--cache-dir <dir>', `where received datasets are cached by content hash (default: $${CACHE_ENV} or ~/.cache/tfjs-ddp)`)
  .option('--no-cache', 'do not cache the received dataset')
  .addOption(new Option('--reconnect-timeout <seconds>', 'keep trying to reach the coordinator (also after it crashed, for coordinator --resume) this long').default(60).argParser(numberFlag(0)));
exitOnUsageError(program);

await runMain('worker', async () => {
  program.parse();
  const opts = program.opts<{ connect?: string; token?: string; backend?: BackendChoice; ringHost: string; ringPort: number; cacheDir?: string; cache: boolean; reconnectTimeout: number; ca?: string }>();
  const connect = opts.connect ?? process.env[CONNECT_ENV];
  if (!connect) throw new UsageError(`no coordinator address: pass --connect host:port (or set ${CONNECT_ENV})`);
  try {
    parseCoordinatorAddress(connect);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const token = opts.token ?? process.env[TOKEN_ENV];
  if (!token) throw new UsageError(`no token: pass --token <secret> (or set ${TOKEN_ENV}) as given to the coordinator`);
  await runWorker({
    connect, token, backend: opts.backend, ringHost: opts.ringHost, ringPort: opts.ringPort, cacheDir: opts.cache ? (opts.cacheDir ?? defaultCacheDir()) : null,
    reconnectTimeoutMs: 1000 * opts.reconnectTimeout, caPath: opts.ca, log: (line) => console.log(`worker: ${line}`),
  });
  console.log('worker: done');
});
