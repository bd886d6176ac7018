// Our flat model state as a PyTorch state_dict in safetensors form, and back.
// The names, shapes and dtypes are the seed model's, so
// `model.load_state_dict(safetensors.torch.load_file(f), strict=True)` works,
// and a state_dict saved by PyTorch imports without naming the architecture:
// model, width, classes and input channels are all readable from the shapes.
import { buildModelSpec, MODEL_NAMES, type ModelConfig, type ModelName, type ModelSpec } from '../../model/spec.js';
import { stateFromTorch, stateToTorch, torchShape, type ModelState } from '../../model/torch-layout.js';
import type { SafetensorsContents, SafetensorsTensor } from '../safetensors.js';

/** state_dict tensors in the model's order, ready for encodeSafetensors. */
/**
 * The file contradicts a flag the user passed (--model, --width): the import
 * command reports it as a usage error, since fixing the flag fixes the run.
 */
export class StateDictFlagMismatch extends Error {
  override name = 'StateDictFlagMismatch';
}

export function stateDictTensors(spec: ModelSpec, state: ModelState): Map<string, SafetensorsTensor> {
  const out = new Map<string, SafetensorsTensor>();
  for (const [name, t] of stateToTorch(spec, state)) {
    out.set(name, 'int64' in t
      ? { dtype: 'I64', shape: t.shape, data: new BigInt64Array([t.int64]) }
      : { dtype: 'F32', shape: t.shape, data: t.data });
  }
  return out;
}

/** Every key `load_state_dict(strict=True)` expects, with its PyTorch shape. */
export function expectedStateDict(spec: ModelSpec): Map<string, { shape: number[]; dtype: 'F32' | 'I64' }> {
  const out = new Map<string, { shape: number[]; dtype: 'F32' | 'I64' }>();
  for (const p of spec.params) out.set(p.name, { shape: torchShape(p), dtype: 'F32' });
  for (const bn of spec.batchNorms) {
    out.set(`${bn.name}.running_mean`, { shape: [bn.channels], dtype: 'F32' });
    out.set(`${bn.name}.running_var`, { shape: [bn.channels], dtype: 'F32' });
    out.set(`${bn.name}.num_batches_tracked`, { shape: [], dtype: 'I64' });
  }
  return out;
}

export interface StateDictOptions {
  /** Key prefix to strip, e.g. "module." (DataParallel) or "step2/" (golden fixtures). */
  prefix?: string;
  /** What the caller claims; each must agree with the shapes. */
  model?: ModelName;
  width?: number;
}

export interface ImportedStateDict {
  config: ModelConfig;
  spec: ModelSpec;
  state: ModelState;
}

/** Reads and strictly checks a state_dict; every problem is one Error naming the key and the fix. */
export function stateDictFromSafetensors(contents: SafetensorsContents, options: StateDictOptions = {}): ImportedStateDict {
  const prefix = options.prefix ?? '';
  const tensors = new Map<string, SafetensorsTensor>();
  for (const [name, t] of contents.tensors) if (name.startsWith(prefix)) tensors.set(name.slice(prefix.length), t);

  const config = inferConfig(tensors, contents, options);
  const spec = buildModelSpec(config);
  checkKeys(spec, tensors, config, options.model !== undefined);

  const f32 = (key: string): Float32Array | undefined => tensors.get(key)?.data as Float32Array | undefined;
  const counter = tensors.get('bn1.num_batches_tracked');
  const step = counter ? Number((counter.data as BigInt64Array)[0]) : 0;
  if (!Number.isSafeInteger(step) || step < 0) throw new Error(`bn1.num_batches_tracked is ${step}; it must be a non-negative integer`);
  return { config, spec, state: stateFromTorch(spec, f32, step) };
}

function inferConfig(tensors: Map<string, SafetensorsTensor>, contents: SafetensorsContents, options: StateDictOptions): ModelConfig {
  const stem = tensors.get('conv1.weight');
  const linear = tensors.get('linear.weight');
  if (!stem || !linear) {
    const sample = [...contents.tensors.keys()].slice(0, 3).join(', ');
    throw new Error(
      `no ${stem ? 'linear.weight' : 'conv1.weight'}${options.prefix ? ` under prefix "${options.prefix}"` : ''}: this is not a state_dict of the CIFAR ResNet ` +
        `(its keys start ${sample || '(none)'}); if every key carries a prefix such as "module.", pass --prefix`,
    );
  }
  if (stem.shape.length !== 4 || linear.shape.length !== 2) {
    throw new Error(`conv1.weight ${JSON.stringify(stem.shape)} / linear.weight ${JSON.stringify(linear.shape)} are not 4-D / 2-D: not the CIFAR ResNet`);
  }
  const width = stem.shape[0];
  if (options.width !== undefined && options.width !== width) {
    throw new StateDictFlagMismatch(`--width ${options.width} does not match the file: conv1.weight has ${width} output channels, so the width is ${width}; drop --width or fix it`);
  }
  const base = { width, numClasses: linear.shape[0], inChannels: stem.shape[1], norm: tensors.has('bn1.weight') ? 'batch' as const : 'none' as const };
  const fits = (name: ModelName) => {
    const expected = expectedStateDict(buildModelSpec({ ...base, name }));
    return [...expected.keys()].every((k) => tensors.has(k)) && [...tensors.keys()].every((k) => expected.has(k));
  };
  if (options.model !== undefined) {
    // Checked in full by checkKeys, whose message lists what differs.
    return { ...base, name: options.model };
  }
  const name = MODEL_NAMES.find(fits);
  if (!name) {
    throw new Error(
      `the keys fit none of ${MODEL_NAMES.join(', ')} at width ${width}; pass --model to see which keys differ ` +
        `(a state_dict of another network cannot be imported)`,
    );
  }
  return { ...base, name };
}

/** `claimed`: the model came from --model, so a mismatch is the flag's fault (a usage error). */
function checkKeys(spec: ModelSpec, tensors: Map<string, SafetensorsTensor>, config: ModelConfig, claimed: boolean): void {
  const expected = expectedStateDict(spec);
  const what = `${config.name} width ${config.width}`;
  const missing = [...expected.keys()].filter((k) => !tensors.has(k));
  const extra = [...tensors.keys()].filter((k) => !expected.has(k));
  const list = (keys: string[]) => keys.slice(0, 3).join(', ') + (keys.length > 3 ? ` and ${keys.length - 3} more` : '');
  if (missing.length > 0 || extra.length > 0) {
    throw new (claimed ? StateDictFlagMismatch : Error)(
      `the file is not a ${what} state_dict:` +
        (missing.length > 0 ? ` missing ${list(missing)};` : '') +
        (extra.length > 0 ? ` unexpected ${list(extra)};` : '') +
        ' check --model, or --prefix if the keys carry one',
    );
  }
  for (const [key, want] of expected) {
    const t = tensors.get(key)!;
    // PyTorch itself accepts [1] for a 0-d buffer (a 0.3-era compatibility rule), and
    // some writers store scalars that way (the golden fixtures do).
    const scalarOk = want.shape.length === 0 && t.shape.length === 1 && t.shape[0] === 1;
    if (t.dtype !== want.dtype) {
      throw new Error(`${key} is ${t.dtype}, expected ${want.dtype}; save the state_dict without converting dtypes (model.float() for half precision)`);
    }
    if (!scalarOk && JSON.stringify(t.shape) !== JSON.stringify(want.shape)) {
      throw new Error(`${key} has shape ${JSON.stringify(t.shape)}, ${what} needs ${JSON.stringify(want.shape)}`);
    }
  }
}
