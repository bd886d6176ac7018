// The package's version, read from its package.json, so that the version has
// one source. Works from src/ (vitest) and from dist/ alike.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findPackageRoot } from './worker-script.js';

let cached: string | undefined;

export function packageVersion(): string {
  if (cached === undefined) {
    const root = findPackageRoot(dirname(fileURLToPath(import.meta.url)));
    const pkg = root ? (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version?: string }) : {};
    cached = pkg.version ?? 'unknown';
  }
  return cached;
}
