// Every committed WebAssembly kernel is a fresh assembly of its .wat source
// (scripts/wasm-kernels.ts), so the bytes that run are the code that is read.
import path from 'node:path';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, test } from 'vitest';
import { assembleKernel, renderKernelModule, WASM_KERNELS } from '../scripts/wasm-kernels.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

test.each(WASM_KERNELS)('$out is the assembly of $wat', async (kernel) => {
  const fresh = renderKernelModule(kernel, await assembleKernel(repo, kernel));
  expect(fs.readFileSync(path.join(repo, kernel.out), 'utf8')).toBe(fresh);
});
