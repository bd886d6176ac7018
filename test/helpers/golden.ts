// Loads the PyTorch reference fixtures in test/fixtures/golden (made by
// scripts/make-golden.py, described in test/fixtures/golden/README.md) into our
// flat layouts.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors, type SafetensorsContents } from '../../src/common/io/safetensors.js';
import { buildModelSpec, type ModelName, type ModelSpec } from '../../src/common/model/spec.js';
import { fromTorch, stateFromTorch, type ModelState } from '../../src/common/model/torch-layout.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/**
 * test/fixtures/golden, or TFJS_DDP_GOLDEN_DIR to check a freshly generated
 * set (python3 scripts/make-golden.py --out DIR) without replacing the committed one.
 */
export const GOLDEN_DIR = process.env.TFJS_DDP_GOLDEN_DIR
  ? path.resolve(process.env.TFJS_DDP_GOLDEN_DIR)
  : path.join(repoRoot, 'test/fixtures/golden');

/** The fixture file of one model: `<model>-w4.safetensors`. */
export function goldenFile(model: ModelName): string {
  return path.join(GOLDEN_DIR, `${model}-w4.safetensors`);
}

export interface Golden {
  spec: ModelSpec;
  file: SafetensorsContents;
  f32(key: string): Float32Array;
  state(prefix: 'init' | 'step1' | 'step2'): ModelState;
  /** Trainable tensors under a prefix (e.g. grad/) as one flat vector in our layout. */
  params(prefix: string): Float32Array;
  inputNhwc: Float32Array;
  labels: Int32Array;
  batch: number;
}

export function loadGolden(model: ModelName): Golden {
  const file = goldenFile(model);
  if (!fs.existsSync(file)) throw new Error(`golden fixture ${file} is missing: restore it from git or regenerate it with python3 scripts/make-golden.py`);
  const contents = readSafetensors(new Uint8Array(fs.readFileSync(file)), file);
  const width = Number(contents.metadata.width);
  const batch = Number(contents.metadata.batch);
  const spec = buildModelSpec({ name: model, width, numClasses: 10, inChannels: 3, norm: 'batch' });
  const f32 = (key: string): Float32Array => {
    const t = contents.tensors.get(key);
    if (!t) throw new Error(`golden fixture has no ${key}`);
    if (!(t.data instanceof Float32Array)) throw new Error(`golden ${key} is ${t.dtype}, expected F32`);
    return t.data;
  };
  const int = (key: string): number => Number((contents.tensors.get(key)!.data as BigInt64Array)[0]);
  const labels = Int32Array.from(contents.tensors.get('labels')!.data as BigInt64Array, (v) => Number(v));
  return {
    spec,
    file: contents,
    f32,
    state: (prefix) =>
      stateFromTorch(
        spec,
        (key) => (contents.tensors.has(`${prefix}/${key}`) ? f32(`${prefix}/${key}`) : undefined),
        int(`${prefix}/bn1.num_batches_tracked`),
      ),
    params: (prefix) => {
      const flat = new Float32Array(spec.paramCount);
      for (const p of spec.params) fromTorch(p, f32(`${prefix}/${p.name}`), flat.subarray(p.offset, p.offset + p.size));
      return flat;
    },
    inputNhwc: f32('input_nhwc'),
    labels,
    batch,
  };
}

/** max |a - b| / max |b|: the error relative to the tensor's scale. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return scale === 0 ? diff : diff / scale;
}
