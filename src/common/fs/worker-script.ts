// Locating the compiled JavaScript file a worker thread should run.
//
// Worker threads (piscina) load plain JavaScript. In production the caller is
// itself compiled (dist/src/...js) and the worker script sits next to it. When
// the caller runs as TypeScript source (src/...ts under vitest or a TS
// loader), the worker must still be the compiled file, so we map the source
// location to its place under dist/.

import { existsSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The nearest directory at or above `start` that holds a package.json. */
export function findPackageRoot(start: string): string | undefined {
  let dir = start;
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/**
 * Absolute path of a compiled worker script.
 * @param fromUrl the caller's `import.meta.url`
 * @param relativeJsPath the script's path relative to the caller, as it is in
 *   dist/ (ending in `.js`), e.g. `'../worker/augment-worker.js'`
 * @throws if the compiled file does not exist (the project was not built)
 */
export function resolveWorkerScript(fromUrl: string, relativeJsPath: string): string {
  if (!relativeJsPath.endsWith('.js')) {
    throw new Error(`resolveWorkerScript: '${relativeJsPath}' must name the compiled .js file`);
  }
  const callerPath = fileURLToPath(fromUrl);
  const callerDir = dirname(callerPath);
  let scriptPath: string;
  if (/\.[cm]?ts$/.test(callerPath)) {
    const root = findPackageRoot(callerDir);
    if (root === undefined) {
      throw new Error(`resolveWorkerScript: no package.json found above ${callerDir}; cannot locate dist/`);
    }
    scriptPath = resolve(root, 'dist', relative(root, callerDir), relativeJsPath);
  } else {
    scriptPath = resolve(callerDir, relativeJsPath);
  }
  if (!existsSync(scriptPath)) {
    throw new Error(
      `Worker script ${scriptPath} does not exist; run \`npm run build\` first to compile the TypeScript sources`,
    );
  }
  return scriptPath;
}
