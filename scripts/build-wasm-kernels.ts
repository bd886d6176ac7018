// Assembles every WebAssembly kernel (scripts/wasm-kernels.ts: the SGD pass,
// the 16-bit wire formats, the shared-memory sum) into its *-bytes.ts. Run
// after editing a .wat:
//
//   npx tsc -p . && node dist/scripts/build-wasm-kernels.js [--check]
//
// --check exits 1 if a committed bytes module differs from a fresh assembly
// (test/wasm-kernels.test.ts does the same, so they cannot drift apart).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { exitOnUsageError } from '../src/common/cli/flags.js';
import { runMain } from '../src/common/cli/run-main.js';
import { assembleKernel, renderKernelModule, WASM_KERNELS } from './wasm-kernels.js';

const program = exitOnUsageError(new Command('build-wasm-kernels')
  .description('Assemble the .wat kernels (SGD, wire formats, shared-memory sum) into their *-bytes.ts modules (wabt)')
  .option('--check', 'only compare the committed bytes with a fresh assembly'));

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

await runMain('build-wasm-kernels', async () => {
  const { check } = program.parse().opts<{ check?: boolean }>();
  const stale: string[] = [];
  for (const kernel of WASM_KERNELS) {
    const fresh = renderKernelModule(kernel, await assembleKernel(repo, kernel));
    const target = path.join(repo, kernel.out);
    const committed = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : '';
    if (committed === fresh) {
      console.log(`${kernel.out} matches ${path.basename(kernel.wat)}`);
    } else if (check) {
      stale.push(kernel.out);
    } else {
      fs.writeFileSync(target, fresh);
      console.log(`wrote ${kernel.out}`);
    }
  }
  if (stale.length > 0) throw new Error(`${stale.join(', ')} stale: run node dist/scripts/build-wasm-kernels.js`);
});
