// What the training step sees of gradient exchange: one call that sums a
// buffer across ranks. Ring and star implement it; the step is handed one
// (or none, for a single worker), never a concrete algorithm.

/** Sums gradients across all data-parallel workers. */
export interface AllReducer {
  /**
   * Replaces `buf` in place with the elementwise sum of every rank's `buf`.
   * Every rank must call it with the same `seq` (the sequence number of this all-reduce: 0, 1, 2, ... in call order) and the same length; every
   * rank ends with bit-identical contents. Rejects with an Error naming the
   * peer and the problem if a frame is malformed or a link drops; after such
   * an error the reducer is unusable (its links are closed so that the other
   * ranks fail promptly instead of waiting forever).
   */
  allReduceSum(buf: Float32Array, seq: number): Promise<void>;
  close(): Promise<void>;
}
