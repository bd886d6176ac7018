// Seeded random numbers that are identical on every machine and thread.
//
// Why this generator: data-parallel training needs every rank to derive the
// same shuffle and the same per-image augmentation from a few integers
// (seed, epoch, image index), with no shared state between threads. So we
// use a counter-based design:
//
// - The generator is "splitmix32": a Weyl counter (state += golden ratio
//   constant, odd, so the period is the full 2^32) whose value is passed
//   through Chris Wellons' `lowbias32` integer finalizer. The finalizer is a
//   bijection, so over one period every 32-bit output appears exactly once,
//   and even the first outputs of nearby states are well mixed. Its whole
//   state is one uint32, which makes it trivially serializable.
// - `mixSeed` folds any number of integers into one well-mixed uint32 using
//   the same finalizer, so independent streams (one per image per epoch) are
//   derived statelessly instead of by advancing a shared generator, which
//   would make results depend on processing order.
//
// Everything uses 32-bit integer math (Math.imul, >>> 0), which is exact and
// identical in every JavaScript engine; no floating point reaches the state.

const GOLDEN_GAMMA = 0x9e3779b9;
const TWO_POW_32 = 0x1_0000_0000;

/** Wellons' lowbias32: a fast bijective 32-bit hash with very low bias. */
export function hash32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d);
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b);
  x = (x ^ (x >>> 16)) >>> 0;
  return x;
}

/**
 * Folds integers into one 32-bit seed. Order matters: mixSeed(1, 2) differs
 * from mixSeed(2, 1). Each value may be any safe integer (negative too); both
 * its low and high 32-bit words are mixed in, so seeds like Date.now() do not
 * collide with their low 32 bits alone.
 */
export function mixSeed(...parts: number[]): number {
  let h = 0x243f6a88; // first digits of pi: an arbitrary non-zero start
  for (let i = 0; i < parts.length; i++) {
    const v = parts[i];
    if (!Number.isSafeInteger(v)) {
      throw new Error(`mixSeed: part ${i} is ${v}; every seed part must be a safe integer`);
    }
    const lo = v >>> 0;
    const hi = Math.floor(v / TWO_POW_32) >>> 0;
    h = hash32((h + GOLDEN_GAMMA) ^ hash32(lo));
    h = hash32((h + GOLDEN_GAMMA) ^ hash32(hi));
  }
  return h;
}

/**
 * A seed for a named purpose ("synthetic-train", "train-subset", ...), so that
 * one --seed gives independent streams and adding a new stream does not shift
 * the existing ones.
 */
export function seedFor(seed: number, purpose: string): number {
  const codes: number[] = [];
  for (let i = 0; i < purpose.length; i++) codes.push(purpose.charCodeAt(i));
  return mixSeed(seed, ...codes);
}

/** splitmix32 generator; see the file comment for the reasoning. */
export class Rng {
  private s: number;

  /** Starts from a raw uint32 state, e.g. one saved from `state` earlier. */
  constructor(state: number) {
    if (!Number.isInteger(state) || state < 0 || state >= TWO_POW_32) {
      throw new Error(`Rng: state ${state} must be an integer in [0, 2^32); use Rng.seeded(...) for arbitrary seeds`);
    }
    this.s = state;
  }

  /** A generator whose stream is determined by the given integers (see mixSeed). */
  static seeded(...parts: number[]): Rng {
    return new Rng(mixSeed(...parts));
  }

  /** The current state; `new Rng(rng.state)` continues the same stream. */
  get state(): number {
    return this.s;
  }

  /** Uniform integer in [0, 2^32). */
  nextUint32(): number {
    this.s = (this.s + GOLDEN_GAMMA) >>> 0;
    return hash32(this.s);
  }

  /** Uniform float in [0, 1) with 32 bits of resolution. */
  nextFloat(): number {
    return this.nextUint32() / TWO_POW_32;
  }

  /**
   * Uniform integer in [0, bound), without modulo bias: draws that fall in the
   * incomplete last block of size `2^32 mod bound` are rejected and redrawn.
   */
  nextInt(bound: number): number {
    if (!Number.isInteger(bound) || bound < 1 || bound > TWO_POW_32) {
      throw new Error(`Rng.nextInt: bound ${bound} must be an integer in [1, 2^32]`);
    }
    const limit = TWO_POW_32 - (TWO_POW_32 % bound);
    let r = this.nextUint32();
    while (r >= limit) r = this.nextUint32();
    return r % bound;
  }

  /** Shuffles `values` in place (Fisher-Yates, unbiased) and returns it. */
  shuffle<T extends { length: number; [i: number]: number }>(values: T): T {
    for (let i = values.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const t = values[i];
      values[i] = values[j];
      values[j] = t;
    }
    return values;
  }
}
