// How a replica's parameters cross between the host's flat vector and the
// device's per-parameter tensors, chosen per backend for what each transfer
// costs there:
//
//  - 'one-tensor' (tensorflow, and so the GPU): the weights go up as one
//    tensor and are split on the device; the gradients are concatenated on
//    the device and come back in one read. Each tfjs-node upload is its own
//    host-to-device copy and each read a device sync plus a copy, so 161 of
//    each per ResNet50 step would cost more than the bytes they move.
//  - 'per-tensor' (wasm, cpu): the device *is* host memory, a concatenation
//    would be one more pass over every byte, and a wasm upload copies into the
//    wasm heap at once. On wasm the gradients are read straight out of its
//    heap: dataSync would first copy each into a fresh array. One pass per
//    direction is the least either can do.
//
// test/tfjs-node-conformance.test.ts runs the 'one-tensor' path on the cpu
// backend, so its kernels are checked against tfjs-node's.
import * as tf from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { ModelSpec } from './spec.js';

export type TransferMode = 'one-tensor' | 'per-tensor';

export function transferModeFor(backend: string): TransferMode {
  return backend === 'tensorflow' ? 'one-tensor' : 'per-tensor';
}

/** The device tensors of `weights`, one per parameter of `spec`; the caller owns them. */
export function uploadParams(spec: ModelSpec, weights: Float32Array, mode: TransferMode): tf.Tensor[] {
  if (mode === 'one-tensor') {
    return tf.tidy(() => {
      // tfjs-node copies the values into a TF tensor the first time an op uses
      // them and wasm into its heap at once; split uses them at once, so the
      // optimizer may reuse `weights`. The cpu backend's split would share them.
      const all = tf.tensor1d(tf.getBackend() === 'cpu' ? weights.slice() : weights);
      return tf.split(all, spec.params.map((p) => p.size)).map((t, i) => tf.reshape(t, spec.params[i].shape));
    });
  }
  // A subarray where the backend copies at once (wasm, into its heap). The
  // cpu backend keeps the very array it is given, and tfjs-node reads it only
  // when an op first uses the tensor, while the optimizer reuses ours.
  const copies = tf.getBackend() === 'wasm';
  return spec.params.map((p) => {
    const values = copies ? weights.subarray(p.offset, p.offset + p.size) : weights.slice(p.offset, p.offset + p.size);
    return tf.tensor(values, p.shape, 'float32');
  });
}

/**
 * Writes the gradient tensors, one per parameter of `spec`, into the flat
 * vector `out`; with `add`, adds them to what `out` holds (gradient
 * accumulation), in float32.
 */
export function readGradients(spec: ModelSpec, grads: tf.Tensor[], out: Float32Array, mode: TransferMode, add = false): void {
  if (mode === 'one-tensor') {
    const flat = tf.tidy(() => tf.concat(grads.map((g) => tf.reshape(g, [-1]))));
    try {
      const values = flat.dataSync() as Float32Array;
      if (add) addInto(values, out, 0);
      else out.set(values);
    } finally {
      flat.dispose();
    }
    return;
  }
  spec.params.forEach((p, i) => readTensorInto(grads[i], out, p.offset, add));
}

/**
 * One tensor's values into out[offset...]: straight from the wasm heap, or
 * with dataSync elsewhere (on tfjs-node, a device sync: the gradient hooks
 * of a bucketed step pay it once per parameter). With `add`, added to what
 * is there instead.
 */
export function readTensorInto(t: tf.Tensor, out: Float32Array, offset: number, add = false): void {
  const values = wasmHeapView(t) ?? (t.dataSync() as Float32Array);
  if (add) addInto(values, out, offset);
  else out.set(values, offset);
}

/**
 * out[offset + i] += values[i], one float32 addition each: the sum of two
 * float32s computed in float64 and stored into a Float32Array is rounded
 * once, to the float32 sum (float64 holds it exactly enough), so the result
 * is deterministic and equals float32 arithmetic.
 */
function addInto(values: Float32Array, out: Float32Array, offset: number): void {
  if (offset + values.length > out.length) throw new RangeError('internal: gradient values past the end of the flat vector');
  for (let i = 0; i < values.length; i++) out[offset + i] += values[i];
}

/**
 * A float32 tensor's values where the wasm backend keeps them, valid until
 * the next op (which may grow the heap); null on any other backend. Reads
 * the backend's public fields, as its own kernels do.
 */
function wasmHeapView(t: tf.Tensor): Float32Array | null {
  if (t.dtype !== 'float32' || tf.getBackend() !== 'wasm') return null;
  const backend = tf.backend() as Partial<BackendWasm>;
  const data = backend.dataIdMap?.get(t.dataId);
  // Emscripten's heap view; the package's types leave the Emscripten module untyped here.
  const heap = (backend.wasm as { HEAPU8?: Uint8Array } | undefined)?.HEAPU8;
  if (data === undefined || heap === undefined) return null;
  return new Float32Array(heap.buffer, heap.byteOffset + data.memoryOffset, t.size);
}
