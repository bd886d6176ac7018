// Scalars a step uses every time (BatchNorm's epsilon and element count, the
// loss scale), made once per backend and kept. A number literal in an op
// becomes a fresh tensor on every call: on tfjs-node a host tensor and a
// host-to-device copy for each of them, hundreds per ResNet50 step.
import * as tf from '@tensorflow/tfjs-core';

/** Enough for every layer size and batch size of a run; past it, scalars are made per call again rather than kept forever. */
const MAX_CACHED = 256;
const cache = new Map<string, tf.Scalar>();

/** The float32 scalar `value` on the active backend. Kept: never dispose it. */
export function constant(value: number): tf.Scalar {
  const key = `${tf.getBackend()}:${value}`;
  const cached = cache.get(key);
  if (cached !== undefined && !cached.isDisposed) return cached;
  // Full: an ordinary scalar, which the caller's tidy (or customGrad) disposes.
  if (cache.size >= MAX_CACHED) return tf.scalar(value, 'float32');
  const made = tf.keep(tf.scalar(value, 'float32'));
  cache.set(key, made);
  return made;
}
