// The optimizer's memory: weights and momentum twice over, and the step's
// gradient, side by side in one WebAssembly memory so that the SIMD kernel
// (sgd-kernel.wat) can read and write them without a copy.
//
// Why two of each: a step writes the new weights and momentum into the spare
// pair while it checks the gradient, and only a finite step makes the spare
// pair current. So the finite check costs no pass of its own, a non-finite
// step changes nothing, and the pair it replaced is the one-step undo that
// elastic membership needs (see `halt` in docs/PROTOCOL.md) without a copy.
//
// The memory is sized once and never grown: growing would detach every view.
// It is shared (a SharedArrayBuffer underneath), so that the communication
// thread (comm-thread.ts) can all-reduce the gradient where it lies. Where
// WebAssembly SIMD is missing, the same layout runs the JavaScript reference
// (sgdInto), which gives the same bits.
//
// A bucketed step (issue 14) runs the same pass bucket by bucket as each
// bucket's sum arrives (stepRange), all into the spare pair, and only then
// decides (commit): the step is applied if every bucket was finite, and
// skipped, changing nothing, if any was not. The kernel is elementwise, so
// the bits equal those of one pass over the whole vector.
import { SGD_KERNEL_BASE64 } from './sgd-kernel-bytes.js';
import { kernelArgs, sgdInto, type SgdArrays, type SgdHyper } from './sgd.js';

interface KernelExports {
  allFinite(p: number, n: number): number;
  sgd(w: number, m: number, g: number, wo: number, mo: number, n: number,
    lr: number, mom: number, wd: number, decay: number, useMomentum: number): number;
}

/** Which implementation runs the step: the SIMD kernel, or the JavaScript reference (tests compare the two). */
export type SgdKernel = 'wasm' | 'js';

const PAGE = 65536;
/** wasm32's address space; past it (200 M+ parameters) the JavaScript reference runs. */
const MAX_BYTES = 2 ** 32 - PAGE;

let compiled: WebAssembly.Module | null | undefined;

/** The kernel's module, compiled once per thread; null where this runtime lacks WebAssembly SIMD. */
function kernelModule(): WebAssembly.Module | null {
  if (compiled === undefined) {
    const bytes = Buffer.from(SGD_KERNEL_BASE64, 'base64');
    compiled = WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
  }
  return compiled;
}

/** Whether steps run on the SIMD kernel here (for logs and benchmarks). */
export function sgdKernelAvailable(): boolean {
  return kernelModule() !== null;
}

interface Slot { array: Float32Array; offset: number }

export class SgdBuffers {
  /** The step's gradient: this rank's, then the sum over the ranks. */
  readonly grad: Float32Array;
  readonly kernel: SgdKernel;
  /** The whole memory, shared: `grad` is a view of it at `grad.byteOffset`. */
  readonly memory: SharedArrayBuffer;
  private readonly exports: KernelExports | null;
  private readonly gradSlot: Slot;
  private readonly pairs: [{ w: Slot; m: Slot }, { w: Slot; m: Slot }];
  private current = 0;
  /** Whether the last step replaced the current pair (so undo swaps back); null when there is nothing to undo. */
  private lastStep: 'applied' | 'skipped' | null = null;

  constructor(weights: Float32Array, momentum: Float32Array, kernel: SgdKernel = 'wasm') {
    const n = weights.length;
    if (momentum.length !== n) throw new Error(`momentum has ${momentum.length} values, the weights ${n}`);
    // 16-byte aligned slots, for the kernel's 4-lane loads.
    const slotBytes = Math.ceil((n * 4) / 16) * 16;
    const bytes = 5 * slotBytes;
    const mod = kernel === 'wasm' && bytes <= MAX_BYTES ? kernelModule() : null;
    let buffer: SharedArrayBuffer;
    if (mod !== null) {
      const pages = Math.max(1, Math.ceil(bytes / PAGE));
      const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
      this.exports = new WebAssembly.Instance(mod, { env: { memory } }).exports as unknown as KernelExports;
      buffer = memory.buffer as unknown as SharedArrayBuffer;
    } else {
      this.exports = null;
      buffer = new SharedArrayBuffer(bytes);
    }
    this.memory = buffer;
    this.kernel = mod !== null ? 'wasm' : 'js';
    const slot = (i: number): Slot => ({ array: new Float32Array(buffer, i * slotBytes, n), offset: i * slotBytes });
    this.pairs = [{ w: slot(0), m: slot(1) }, { w: slot(2), m: slot(3) }];
    this.gradSlot = slot(4);
    this.grad = this.gradSlot.array;
    this.load(weights, momentum);
  }

  get weights(): Float32Array {
    return this.pairs[this.current].w.array;
  }

  get momentum(): Float32Array {
    return this.pairs[this.current].m.array;
  }

  /** Replaces weights and momentum with copies of these (a resume or a re-formed group); forgets the undo. */
  load(weights: Float32Array, momentum: Float32Array): void {
    if (weights.length !== this.grad.length || momentum.length !== this.grad.length) {
      throw new Error(`the state has ${weights.length} weights and ${momentum.length} momentum values; the model has ${this.grad.length}`);
    }
    this.weights.set(weights);
    this.momentum.set(momentum);
    this.lastStep = null;
  }

  /** Whether every value of the gradient is finite (one read-only pass). */
  gradFinite(): boolean {
    return this.rangeFinite(0, this.grad.length);
  }

  /** Whether grad[offset, offset + count) is finite. */
  rangeFinite(offset: number, count: number): boolean {
    this.checkRange(offset, count);
    if (this.exports !== null) return this.exports.allFinite(this.gradSlot.offset + offset * 4, count) === 1;
    for (let i = offset; i < offset + count; i++) if (this.grad[i] - this.grad[i] !== 0) return false;
    return true;
  }

  /**
   * One SGD step with the gradient in `grad`. Returns false, changing
   * nothing, when the gradient is not finite; the check is part of the pass.
   */
  step(hyper: SgdHyper, firstStep: boolean): boolean {
    return this.commit(this.stepRange(hyper, firstStep, 0, this.grad.length));
  }

  /**
   * The step's pass over [offset, offset + count) only, into the spare pair;
   * nothing is current until `commit`. Returns whether that range of the
   * gradient was finite.
   */
  stepRange(hyper: SgdHyper, firstStep: boolean, offset: number, count: number): boolean {
    this.checkRange(offset, count);
    const from = this.pairs[this.current];
    const to = this.pairs[1 - this.current];
    if (this.exports !== null) {
      const a = kernelArgs(hyper, firstStep);
      const at = offset * 4;
      return this.exports.sgd(from.w.offset + at, from.m.offset + at, this.gradSlot.offset + at, to.w.offset + at, to.m.offset + at, count,
        a.lr, a.momentum, a.decay, a.decay !== 0 ? 1 : 0, a.useMomentum ? 1 : 0) === 1;
    }
    const end = offset + count;
    return sgdInto(arrays(from, offset, end), this.grad.subarray(offset, end), arrays(to, offset, end), hyper, firstStep);
  }

  /**
   * Ends a step whose every range went through `stepRange`: applied (the
   * spare pair becomes current) when all were finite, else skipped. Returns
   * `finite`.
   */
  commit(finite: boolean): boolean {
    if (finite) this.current = 1 - this.current;
    this.lastStep = finite ? 'applied' : 'skipped';
    return finite;
  }

  private checkRange(offset: number, count: number): void {
    if (!Number.isInteger(offset) || !Number.isInteger(count) || offset < 0 || count < 0 || offset + count > this.grad.length) {
      throw new RangeError(`internal: range [${offset}, +${count}) is outside the ${this.grad.length} parameters`);
    }
  }

  /** Whether `undo` has a step to take back. */
  get canUndo(): boolean {
    return this.lastStep !== null;
  }

  /** Takes back the last step: the pair it replaced becomes current again (a skipped step changed nothing). */
  undo(): void {
    if (this.lastStep === null) throw new Error('internal: no optimizer step to undo');
    if (this.lastStep === 'applied') this.current = 1 - this.current;
    this.lastStep = null;
  }
}

function arrays(pair: { w: Slot; m: Slot }, start = 0, end = pair.w.array.length): SgdArrays {
  return { weights: pair.w.array.subarray(start, end), momentum: pair.m.array.subarray(start, end) };
}
