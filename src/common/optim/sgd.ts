// SGD with momentum and weight decay, exactly as torch.optim.SGD (dampening 0,
// no Nesterov) applies it to every parameter:
//   g += wd * w;  buf = first ? g : m * buf + g;  w -= lr * buf
// Math.fround after each operation reproduces PyTorch's float32 arithmetic, so
// the result is the same on every replica and close to PyTorch's to the ulp.

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
  const n = weights.length;
  if (grads.length !== n || momentumBuf.length !== n) {
    throw new Error(`sgdStep: lengths differ (weights ${n}, grads ${grads.length}, momentum ${momentumBuf.length})`);
  }
  const f = Math.fround;
  const lr = f(hyper.lr);
  const m = f(hyper.momentum);
  const wd = f(hyper.weightDecay);
  for (let i = 0; i < n; i++) {
    const w = weights[i];
    const g = wd !== 0 ? f(grads[i] + f(wd * w)) : grads[i];
    const buf = m === 0 ? g : firstStep ? g : f(f(m * momentumBuf[i]) + g);
    momentumBuf[i] = buf;
    weights[i] = f(w - f(lr * buf));
  }
}

/** PyTorch's BatchNorm running average: r = (1 - momentum) * r + momentum * batch (variance already unbiased). */
export function updateRunningStats(running: Float32Array, batchStats: Float32Array, momentum = 0.1): void {
  if (running.length !== batchStats.length) throw new Error('running statistics and batch statistics differ in length');
  const f = Math.fround;
  const keep = f(1 - momentum);
  const m = f(momentum);
  for (let i = 0; i < running.length; i++) running[i] = f(f(keep * running[i]) + f(m * batchStats[i]));
}
