// Assembles src/common/allreduce/wire-kernel.wat into wire-kernel-bytes.ts, the
// module's bytes as base64 that wire-format.ts loads without a file read or a
// build step at install time. Run after editing the .wat:
//
//   npx tsc -p . && node dist/scripts/build-wire-kernel.js [--check]
//
// --check exits 1 if the committed bytes differ from a fresh assembly
// (test/wire-format.test.ts does the same, so the two cannot drift apart).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { exitOnUsageError } from '../src/common/cli/flags.js';
import { runMain } from '../src/common/cli/run-main.js';
import { assembleWireKernel, renderWireKernelModule } from './wire-kernel-source.js';

const program = exitOnUsageError(new Command('build-wire-kernel')
  .description('Assemble src/common/allreduce/wire-kernel.wat into wire-kernel-bytes.ts (wabt)')
  .option('--check', 'only compare the committed bytes with a fresh assembly'));

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const target = path.join(repo, 'src/common/allreduce/wire-kernel-bytes.ts');

await runMain('build-wire-kernel', async () => {
  const { check } = program.parse().opts<{ check?: boolean }>();
  const fresh = renderWireKernelModule(await assembleWireKernel(repo));
  const committed = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : '';
  if (check) {
    if (committed !== fresh) throw new Error(`${path.relative(repo, target)} is stale: run node dist/scripts/build-wire-kernel.js`);
    console.log(`${path.relative(repo, target)} matches wire-kernel.wat`);
    return;
  }
  fs.writeFileSync(target, fresh);
  console.log(`wrote ${path.relative(repo, target)}`);
});
