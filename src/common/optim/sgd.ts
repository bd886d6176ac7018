// SGD with momentum and weight decay, exactly as torch.optim.SGD (dampening 0,
// no Nesterov) applies it to every parameter:
//   g += wd * w;  buf = first ? g : m * buf + g;  w -= lr * buf
// Math.fround after each operation reproduces PyTorch's float32 arithmetic, so
// the result is the same on every replica and close to PyTorch's to the ulp.
// This is the reference; training runs the same arithmetic in WebAssembly
// SIMD (sgd-kernel.wat via sgd-buffers.ts), which gives the same bits.

export interface SgdHyper {
  lr: number;
  momentum: number;
  weightDecay: number;
}

/** Updates `weights` and `momentumBuf` in place. `firstStep` initialises the buffer with the gradient. */
export function sgdStep(
  weights: Float32Array,
  grads: Float32Array,
  momentumBuf: Float32Array,
  hyper: SgdHyper,
  firstStep: boolean,
): void {
  sgdInto({ weights, momentum: momentumBuf }, grads, { weights, momentum: momentumBuf }, hyper, firstStep);
}

export interface SgdArrays {
  weights: Float32Array;
  momentum: Float32Array;
}

/**
 * One step from `from` and `grads` into `to` (which may be `from`). Returns
 * false when a gradient value is not finite: `to` is then partly written and
 * must be discarded, which is why training writes into spare buffers.
 */
export function sgdInto(from: SgdArrays, grads: Float32Array, to: SgdArrays, hyper: SgdHyper, firstStep: boolean): boolean {
  const n = from.weights.length;
  for (const [name, a] of [['grads', grads], ['momentum', from.momentum], ['target weights', to.weights], ['target momentum', to.momentum]] as const) {
    if (a.length !== n) throw new Error(`sgd: lengths differ (weights ${n}, ${name} ${a.length})`);
  }
  const { lr, momentum: m, decay, useMomentum } = kernelArgs(hyper, firstStep);
  const { weights: w, momentum: buf } = from;
  const { weights: wo, momentum: mo } = to;
  const f = Math.fround;
  let finite = true;
  for (let i = 0; i < n; i++) {
    const x = w[i];
    const gi = grads[i];
    if (gi - gi !== 0) finite = false;
    const g = decay !== 0 ? f(gi + f(decay * x)) : gi;
    const b = useMomentum ? f(f(m * buf[i]) + g) : g;
    mo[i] = b;
    wo[i] = f(x - f(lr * b));
  }
  return finite;
}

/** The step's constants as float32, and whether the momentum buffer is read (not on the first step, nor without momentum). */
export function kernelArgs(hyper: SgdHyper, firstStep: boolean): { lr: number; momentum: number; decay: number; useMomentum: boolean } {
  const f = Math.fround;
  const momentum = f(hyper.momentum);
  return { lr: f(hyper.lr), momentum, decay: f(hyper.weightDecay), useMomentum: momentum !== 0 && !firstStep };
}

/** PyTorch's BatchNorm running average: r = (1 - momentum) * r + momentum * batch (variance already unbiased). */
export function updateRunningStats(running: Float32Array, batchStats: Float32Array, momentum = 0.1): void {
  if (running.length !== batchStats.length) throw new Error('running statistics and batch statistics differ in length');
  const f = Math.fround;
  const keep = f(1 - momentum);
  const m = f(momentum);
  for (let i = 0; i < running.length; i++) running[i] = f(f(keep * running[i]) + f(m * batchStats[i]));
}
