// Conversion between our flat vectors (TensorFlow.js layouts) and PyTorch
// state_dict tensors, so the golden fixtures, safetensors export and import
// all speak the seed model's names and layouts.
import type { ModelSpec, ParamSpec } from './spec.js';

export interface TorchTensor {
  shape: number[];
  data: Float32Array;
}

/** TF.js shape → PyTorch shape: conv [kh,kw,in,out] → [out,in,kh,kw]; linear [in,out] → [out,in]. */
export function torchShape(p: ParamSpec): number[] {
  if (p.shape.length === 4) return [p.shape[3], p.shape[2], p.shape[0], p.shape[1]];
  if (p.shape.length === 2) return [p.shape[1], p.shape[0]];
  return p.shape.slice();
}

/** Copies one parameter from PyTorch layout into `out` (TF.js layout). */
export function fromTorch(p: ParamSpec, src: Float32Array, out: Float32Array): void {
  if (src.length !== p.size) throw new Error(`${p.name}: expected ${p.size} values (${torchShape(p).join('x')}), got ${src.length}`);
  if (p.shape.length === 4) {
    const [kh, kw, cin, cout] = p.shape;
    for (let co = 0; co < cout; co++)
      for (let ci = 0; ci < cin; ci++)
        for (let i = 0; i < kh; i++)
          for (let j = 0; j < kw; j++) out[((i * kw + j) * cin + ci) * cout + co] = src[((co * cin + ci) * kh + i) * kw + j];
  } else if (p.shape.length === 2) {
    const [fin, fout] = p.shape;
    for (let o = 0; o < fout; o++) for (let k = 0; k < fin; k++) out[k * fout + o] = src[o * fin + k];
  } else {
    out.set(src);
  }
}

/** Copies one parameter from TF.js layout into a new PyTorch-layout array. */
export function toTorch(p: ParamSpec, src: Float32Array): Float32Array {
  const out = new Float32Array(p.size);
  if (p.shape.length === 4) {
    const [kh, kw, cin, cout] = p.shape;
    for (let co = 0; co < cout; co++)
      for (let ci = 0; ci < cin; ci++)
        for (let i = 0; i < kh; i++)
          for (let j = 0; j < kw; j++) out[((co * cin + ci) * kh + i) * kw + j] = src[((i * kw + j) * cin + ci) * cout + co];
  } else if (p.shape.length === 2) {
    const [fin, fout] = p.shape;
    for (let o = 0; o < fout; o++) for (let k = 0; k < fin; k++) out[o * fin + k] = src[k * fout + o];
  } else {
    out.set(src);
  }
  return out;
}

export interface ModelState {
  weights: Float32Array;
  runningStats: Float32Array;
  numBatchesTracked: number;
}

/**
 * Builds our flat state from state_dict tensors. `get(name)` returns the
 * PyTorch tensor for a key (or undefined); every key must be present.
 */
export function stateFromTorch(spec: ModelSpec, get: (key: string) => Float32Array | undefined, numBatchesTracked = 0): ModelState {
  const need = (key: string): Float32Array => {
    const t = get(key);
    if (!t) throw new Error(`state_dict has no "${key}", which ${spec.config.name} (width ${spec.config.width}) needs`);
    return t;
  };
  const weights = new Float32Array(spec.paramCount);
  for (const p of spec.params) fromTorch(p, need(p.name), weights.subarray(p.offset, p.offset + p.size));
  const runningStats = new Float32Array(spec.runningStatsSize);
  for (const bn of spec.batchNorms) {
    const mean = need(`${bn.name}.running_mean`);
    const variance = need(`${bn.name}.running_var`);
    if (mean.length !== bn.channels || variance.length !== bn.channels) {
      throw new Error(`${bn.name}: running statistics have ${mean.length}/${variance.length} channels, expected ${bn.channels}`);
    }
    runningStats.set(mean, bn.offset);
    runningStats.set(variance, bn.offset + bn.channels);
  }
  return { weights, runningStats, numBatchesTracked };
}

/** The state_dict entries (PyTorch names and layouts) of a flat state, in the model's order. */
export function stateToTorch(spec: ModelSpec, state: ModelState): Map<string, TorchTensor | { shape: number[]; int64: bigint }> {
  const out = new Map<string, TorchTensor | { shape: number[]; int64: bigint }>();
  for (const p of spec.params) out.set(p.name, { shape: torchShape(p), data: toTorch(p, state.weights.subarray(p.offset, p.offset + p.size)) });
  for (const bn of spec.batchNorms) {
    out.set(`${bn.name}.running_mean`, { shape: [bn.channels], data: state.runningStats.slice(bn.offset, bn.offset + bn.channels) });
    out.set(`${bn.name}.running_var`, { shape: [bn.channels], data: state.runningStats.slice(bn.offset + bn.channels, bn.offset + 2 * bn.channels) });
    out.set(`${bn.name}.num_batches_tracked`, { shape: [], int64: BigInt(state.numBatchesTracked) });
  }
  return out;
}
