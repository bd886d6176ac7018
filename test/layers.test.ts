// The layout is the architecture: src/common's folders are layers, and a
// module may import only from its own layer or from those below it. This test
// reads every import in src/ and scripts/ and fails on an import that runs up
// the layers or on an import circle, naming the files.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { root } from './helpers/node-process.js';

/** Bottom first. A layer may use every layer before it in this list. */
const LAYERS = [
  'common/fs', // atomic files, locating compiled scripts, the package version
  'common/model', // ResNet spec, forward pass, BatchNorm, the replica
  'common/optim', // SGD, the learning-rate schedule
  'common/backend', // choosing and initialising the TensorFlow.js backend
  'common/data', // datasets, augmentation, sampler, batch loader
  'common/image', // outside images as model input (predict)
  'common/io', // checkpoints, safetensors, metrics, plots, progress, exports
  'common/allreduce', // ring and star all-reduce over links
  'common/training', // config, run state, one step, the single-process trainer
  'common/protocol', // control messages; they carry the training config
  'common/cli', // flag parsing and exit codes shared by every command
  'worker',
  'coordinator',
  'cli',
  'scripts',
];

function layerOf(file: string): string {
  const rel = path.relative(root, file).split(path.sep);
  if (rel[0] === 'scripts') return 'scripts';
  if (rel[1] === 'common') return `common/${rel[2]}`;
  return rel[1];
}

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'public' ? [] : sources(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

const files = [...sources(path.join(root, 'src')), ...sources(path.join(root, 'scripts'))];

/** The backticked names in docs/DESIGN.md's module map, as patterns over a file's path (`*` = any name). */
function moduleMapPatterns(): RegExp[] {
  const design = fs.readFileSync(path.join(root, 'docs/DESIGN.md'), 'utf8');
  const map = design.slice(design.indexOf('## Module map'), design.indexOf('\n## ', design.indexOf('## Module map') + 1));
  // Only file names and globs: a layer's folder name alone does not describe its files.
  return [...map.matchAll(/`([\w./*-]*[.*][\w./*-]*)`/g)].map((m) => {
    const glob = m[1].replace(/[.]/g, '\\.').replace(/\*/g, '[^/]*');
    return new RegExp(`(^|/)${glob}(/|$)`);
  });
}

/** Relative imports of a file, resolved to the .ts files they name. */
function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)\.js'/g)].map((m) => path.resolve(path.dirname(file), `${m[1]}.ts`));
}

describe('layout', () => {
  it('puts every module in a known layer, and nothing at the top of src/common', () => {
    for (const f of files) expect(LAYERS, path.relative(root, f)).toContain(layerOf(f));
  });

  it("is described in docs/DESIGN.md's module map, every file", () => {
    const patterns = moduleMapPatterns();
    const all = [...files, ...fs.readdirSync(path.join(root, 'scripts')).map((f) => path.join(root, 'scripts', f))];
    const missing = all.map((f) => path.relative(root, f)).filter((rel) => !patterns.some((p) => p.test(rel)));
    expect(missing).toEqual([]);
  });

  it('has no import that runs up the layers', () => {
    const upward: string[] = [];
    for (const f of files) {
      for (const target of importsOf(f)) {
        const from = LAYERS.indexOf(layerOf(f));
        const to = LAYERS.indexOf(layerOf(target));
        // worker and coordinator are peers: the coordinator may name the worker's option type (local workers).
        const peers = layerOf(f) === 'coordinator' && layerOf(target) === 'worker';
        if (to > from && !peers) upward.push(`${path.relative(root, f)} -> ${path.relative(root, target)}`);
      }
    }
    expect(upward).toEqual([]);
  });

  it('has no import circle', () => {
    const graph = new Map(files.map((f) => [f, importsOf(f).filter((t) => fs.existsSync(t))]));
    const state = new Map<string, 'open' | 'done'>();
    const circles: string[] = [];
    const visit = (f: string, trail: string[]): void => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'open') {
        circles.push([...trail.slice(trail.indexOf(f)), f].map((p) => path.relative(root, p)).join(' -> '));
        return;
      }
      state.set(f, 'open');
      for (const t of graph.get(f) ?? []) visit(t, [...trail, f]);
      state.set(f, 'done');
    };
    for (const f of files) visit(f, []);
    expect(circles).toEqual([]);
  });
});
