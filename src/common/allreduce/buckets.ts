// Gradient buckets, as PyTorch DDP cuts them (torch/nn/parallel/distributed.py,
// `_DEFAULT_FIRST_BUCKET_BYTES` and `bucket_cap_mb`): parameters in reverse
// order, because backward produces the last layers' gradients first, grouped
// into buckets that close once they reach the cap (`capMb`; the parameter
// that reaches it is the bucket's last, so a bucket can pass the cap by one
// parameter, as in PyTorch's compute_bucket_assignment_by_size), except the
// first, which closes at `firstMb`, so that communication starts early.
//
// The flat gradient keeps the parameters in forward order, so a bucket of
// consecutive parameters in reverse order is one contiguous range of it:
// bucket 0 ends at the end of the vector, the last bucket starts at 0.
//
// Every rank builds the same plan from the same model and flags, and reduces
// the buckets strictly in bucket order (see "The ordering rule" in
// docs/DESIGN.md); a bucket's all-reduce carries its own sequence number, so
// a rank that reduces another bucket than its peers fails on the first frame.

/** PyTorch's defaults: 25 MB buckets, and a first bucket of 1 MB. */
export const DEFAULT_BUCKET_CAP_MB = 25;
export const DEFAULT_FIRST_BUCKET_MB = 1;
const MB = 1024 * 1024;

export interface Bucket {
  /** Position in reduce order: 0 is reduced first. */
  index: number;
  /** The range of the flat gradient it covers. */
  offset: number;
  count: number;
  /** Indexes (into the model's parameter list) of the parameters in it. */
  params: number[];
}

/** What the plan needs of a parameter: where it sits in the flat vector. */
export interface ParamRange {
  offset: number;
  size: number;
}

export interface BucketPlan {
  buckets: Bucket[];
  /** bucketOf[p]: the bucket that holds parameter p. */
  bucketOf: Int32Array;
  elements: number;
}

/**
 * Cuts `params` (in forward order, contiguous from offset 0) into buckets in
 * reverse order, each closed once it holds `capMb` MB (fp32) or more, the
 * first at `firstMb` (default 1 MB, or the cap if that is smaller).
 */
export function planBuckets(
  params: readonly ParamRange[], capMb = DEFAULT_BUCKET_CAP_MB, firstMb = Math.min(DEFAULT_FIRST_BUCKET_MB, capMb),
): BucketPlan {
  if (!(capMb > 0)) throw new RangeError(`the bucket cap must be above 0 MB, got ${capMb}`);
  if (!(firstMb > 0)) throw new RangeError(`the first bucket's cap must be above 0 MB, got ${firstMb}`);
  let expected = 0;
  for (const [i, p] of params.entries()) {
    if (p.offset !== expected || !Number.isInteger(p.size) || p.size < 1) {
      throw new Error(`internal: parameter ${i} at [${p.offset}, +${p.size}) does not follow the one before it (expected offset ${expected})`);
    }
    expected += p.size;
  }
  const buckets: Bucket[] = [];
  const bucketOf = new Int32Array(params.length);
  let open: Bucket | null = null;
  for (let p = params.length - 1; p >= 0; p--) {
    const size = params[p].size;
    open ??= { index: buckets.length, offset: params[p].offset + size, count: 0, params: [] };
    open.offset -= size;
    open.count += size;
    open.params.push(p);
    bucketOf[p] = open.index;
    // PyTorch's rule (compute_bucket_assignment_by_size): add, then close once the cap is reached.
    if (open.count * 4 >= (buckets.length === 0 ? firstMb : capMb) * MB) {
      buckets.push(open);
      open = null;
    }
  }
  if (open !== null) buckets.push(open);
  return { buckets, bucketOf, elements: expected };
}

/** An exchange that reduces the gradient bucket by bucket as backward produces it (CommThread.bucketedExchange; training/step.ts drives it). */
export interface BucketedExchange {
  readonly plan: BucketPlan;
  /** Arms this step's buckets, before forward (takes their sequence numbers). */
  begin(): void;
  /** Bucket `index`'s gradient is in place; called from inside backward, so it must not wait. */
  release(index: number): void;
  /** Resolves once bucket `index`'s sum over the ranks is in place. */
  reduced(index: number): Promise<void>;
}

/**
 * Which buckets have all their gradients, as backward hands parameters over
 * (one step's worth; `reset` for the next). Backward produces them in
 * roughly reverse order, not exactly (a block's shortcut and main path), so
 * a bucket is complete when its last parameter arrives, whatever the order.
 */
export class BucketFill {
  private readonly missing: Int32Array;
  private readonly seen: Uint8Array;

  constructor(private readonly plan: BucketPlan) {
    this.missing = new Int32Array(plan.buckets.length);
    this.seen = new Uint8Array(plan.bucketOf.length);
    this.reset();
  }

  reset(): void {
    this.plan.buckets.forEach((b, i) => (this.missing[i] = b.params.length));
    this.seen.fill(0);
  }

  /** Parameter `p`'s gradient is in place; returns its bucket if that made the bucket complete, else -1. */
  arrived(p: number): number {
    if (this.seen[p]) throw new Error(`internal: parameter ${p}'s gradient arrived twice in one backward pass`);
    this.seen[p] = 1;
    const b = this.plan.bucketOf[p];
    return --this.missing[b] === 0 ? b : -1;
  }
}
