// How far one weight vector is from another: the largest difference over the
// largest magnitude, the measure the N-workers-vs-1 tests bound.

/** max |a - b| / max |b|. */
export function relativeError(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}
