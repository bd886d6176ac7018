// System packages some tests need (real Fashion-MNIST, Chromium, PyTorch),
// and the one rule for a test whose package is missing: in CI (CI=true, which
// .ci/run sets after installing them all) the test fails, so a broken CI
// machine never passes by skipping; elsewhere the test is skipped, and the
// skip says which package to install (printed on stderr, and as the skip's
// note in the verbose reporter).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'vitest';
import { DEFAULT_FASHION_MNIST_DIR } from '../../src/common/data/fashion-mnist.js';

/** CI=true (or 1): missing system packages fail the tests that need them instead of skipping them. */
export const inCI = /^(true|1)$/i.test(process.env.CI ?? '');

export interface SystemDep {
  /** What is needed, for messages: "Chromium at /usr/bin/chromium". */
  readonly name: string;
  /** The command that installs it: "apt-get install chromium". */
  readonly installHint: string;
  /** Whether it is there (checked once, on first use). */
  readonly present: boolean;
  /**
   * Call first in a test that needs it: returns when present; otherwise
   * throws in CI, or skips the test, saying how to install it.
   */
  need(ctx: TestContext): void;
  /** A test that needs it: `dep.test(title, fn, timeout)` in place of `test(title, fn, timeout)`. */
  test(title: string, fn: (ctx: TestContext) => unknown, timeout?: number): void;
}

export function requireSystemDep(name: string, check: () => boolean, installHint: string): SystemDep {
  let present: boolean | null = null;
  const dep: SystemDep = {
    name,
    installHint,
    get present() {
      present ??= check();
      return present;
    },
    need(ctx) {
      if (dep.present) return;
      if (inCI) {
        throw new Error(`${name} is missing, and CI=true makes that a failure: install it with \`${installHint}\` (.ci/run does)`);
      }
      const note = `needs ${name}: ${installHint}`;
      console.warn(`skipped "${ctx.task.name}": it ${note}`);
      ctx.skip(note);
    },
    test(title, fn, timeout) {
      test(title, (ctx) => {
        dep.need(ctx);
        return fn(ctx);
      }, timeout);
    },
  };
  return dep;
}

const FASHION_MNIST_FILES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'];

/** The real Fashion-MNIST from the Debian package (what `--dataset fashion-mnist` reads by default). */
export const fashionMnist = requireSystemDep(
  `Fashion-MNIST at ${DEFAULT_FASHION_MNIST_DIR}`,
  () => FASHION_MNIST_FILES.every((f) => [f, `${f}.gz`].some((name) => fs.existsSync(path.join(DEFAULT_FASHION_MNIST_DIR, name)))),
  'apt-get install dataset-fashion-mnist',
);

export const CHROMIUM_PATH = '/usr/bin/chromium';

/** Debian's Chromium, driven by playwright-core. */
export const chromium = requireSystemDep(`Chromium at ${CHROMIUM_PATH}`, () => {
  try {
    fs.accessSync(CHROMIUM_PATH, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}, 'apt-get install chromium');

export const SYSTEM_PYTHON = '/usr/bin/python3';

/** PyTorch with its gloo backend for the system Python (the benchmarks' comparisons). */
export const pytorch = requireSystemDep(
  `PyTorch with gloo for ${SYSTEM_PYTHON}`,
  () => spawnSync(SYSTEM_PYTHON, ['-c', 'import torch.distributed as d; assert d.is_gloo_available()'], { stdio: 'ignore' }).status === 0,
  'apt-get install python3-torch',
);
