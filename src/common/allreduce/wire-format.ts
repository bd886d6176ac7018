// Wire formats for the ring all-reduce: how a chunk of float32 partial sums
// travels between neighbours.
//
//   fp32  IEEE binary32, 4 bytes an element: the bits of the Float32Array,
//         copied as they are (bit-exact, NaN payloads included).
//   bf16  bfloat16, 2 bytes: the high half of a binary32 (sign, the same
//         8-bit exponent, 7 mantissa bits). Same range as fp32, ~3 digits.
//   fp16  IEEE binary16, 2 bytes: sign, 5-bit exponent (bias 15), 10
//         mantissa bits, with subnormals down to 2^-24; max finite 65504.
//
// Every element is little-endian on the wire, element i at byte i*width of the
// given Uint8Array, which may start at any byteOffset (an unaligned view is
// copied through an aligned scratch block, so no DataView per element).
//
// Rounding is to nearest, ties to even, the IEEE 754 default: unbiased (a
// tie goes up as often as down, so rounding errors do not drift the sum in
// one direction over the ~2(N-1) hops and thousands of steps) and the same
// rule every framework uses, so a bf16/fp16 wire here carries exactly the
// bits PyTorch would produce:
//   bf16 is c10::detail::round_to_nearest_even of pytorch/pytorch
//        c10/util/BFloat16.h: bits = (u + 0x7FFF + ((u >> 16) & 1)) >> 16,
//        and any NaN becomes the canonical quiet NaN 0x7FC0 (sign dropped).
//   fp16 matches c10::detail::fp16_ieee_from_fp32_value of c10/util/Half.h:
//        round to nearest even, overflow (|x| >= 65520) to +-Inf,
//        subnormals rounded at 2^-24, NaN to sign | 0x7E00; decode is
//        fp16_ieee_to_fp32_bits (exact, NaN payloads kept).
// Node 20 has no Math.f16round, so both are done here on the integer bits.
//
// Why partial sums stay fp32: a reduce-scatter hop receives a neighbour's
// partial sum and adds it into its own fp32 buffer (`accumulate`); its own
// contribution is never rounded, and the running sum is rounded to the wire
// format only when it is sent (`encode`), once per hop. The chunk owner, who
// ends up with the full sum, rounds it once (`roundInPlace`) and broadcasts
// those 16-bit values in the all-gather; every other replica decodes them
// (`decodeInto`). Because the owner keeps decode(encode(sum)), not the fp32
// sum, every replica, the owner included, stores identical bits, so the
// replicas' weights cannot drift apart.
//
// Speed (23.5M elements per all-reduce): `wireFormat` runs the WebAssembly
// SIMD kernels of wire-kernel.wat (blocks of 16384 elements copied through
// the module's memory); where SIMD is missing, or with kernel 'js', the
// JavaScript kernels below run instead (integer views, a 64K-entry table for
// fp16 decode). Both give the same bits (test/wire-format.test.ts).

import { endianness } from 'node:os';
import { WIRE_KERNEL_BASE64 } from './wire-kernel-bytes.js';

// The aligned fast paths read host-order typed arrays as the wire's
// little-endian bytes; every platform this project runs on is little-endian.
if (endianness() !== 'LE') {
  throw new Error('wire formats are little-endian and use host-order typed arrays; this platform is big-endian');
}

export type WireName = 'fp32' | 'bf16' | 'fp16';
export const WIRE_NAMES: readonly WireName[] = Object.freeze(['fp32', 'bf16', 'fp16'] as const);

export interface WireFormat {
  readonly name: WireName;
  readonly bytesPerElement: 2 | 4;
  /** dst bytes <- src floats, round to nearest even (fp32: a plain copy). */
  encode(src: Float32Array, dst: Uint8Array): void;
  /** dst[i] = decoded value of element i of `bytes`. */
  decodeInto(bytes: Uint8Array, dst: Float32Array): void;
  /** dst[i] = Math.fround(dst[i] + decoded element i): partial sums kept in fp32. */
  accumulate(bytes: Uint8Array, dst: Float32Array): void;
  /** x[i] = decode(encode(x[i])): the chunk owner rounds its final sum once. */
  roundInPlace(x: Float32Array): void;
}

// ---------------------------------------------------------------------------
// Scalar conversions on bits (exported for tests and one-off use).

/** bf16 bits of the float32 with bits `u` (PyTorch round_to_nearest_even). */
export function bf16FromF32Bits(u: number): number {
  u >>>= 0;
  if ((u & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** fp16 bits of the float32 with bits `u`, round to nearest even. */
export function fp16FromF32Bits(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a >= 0x38800000) {
    // >= 2^-14: normal in fp16, or beyond.
    if (a < 0x477ff000) {
      // < 65520: rebias the exponent (127 -> 15) and round off 13 bits; a
      // mantissa carry correctly bumps the exponent (65504 stays finite).
      const r = a - 0x38000000;
      return sign | ((r + 0xfff + ((r >>> 13) & 1)) >>> 13);
    }
    return sign | (a > 0x7f800000 ? 0x7e00 : 0x7c00);
  }
  if (a <= 0x33000000) return sign; // <= 2^-25: a tie at 2^-25 goes to even (0)
  // Subnormal: value = m * 2^(e-150); units of 2^-24 -> shift right by 126-e (14..24).
  const e = a >>> 23;
  const m = (a & 0x7fffff) | 0x800000;
  const s = 126 - e;
  return sign | ((m + (1 << (s - 1)) - 1 + ((m >>> s) & 1)) >>> s);
}

/** float32 bits of the fp16 with bits `h` (exact; c10 fp16_ieee_to_fp32_bits). */
export function f32BitsFromFp16(h: number): number {
  const sign = (h & 0x8000) << 16;
  const e = (h >>> 10) & 0x1f;
  let m = h & 0x3ff;
  if (e === 0x1f) return (sign | 0x7f800000 | (m << 13)) >>> 0;
  if (e !== 0) return (sign | ((e + 112) << 23) | (m << 13)) >>> 0;
  if (m === 0) return sign >>> 0;
  // Subnormal: normalise.
  let ee = 113;
  while ((m & 0x400) === 0) {
    m <<= 1;
    ee--;
  }
  return (sign | (ee << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

// ---------------------------------------------------------------------------
// Tables and scratch.

/** fp16 bits -> float32 bits, all 65536 patterns (256 KiB). */
const FP16_TO_F32_BITS = new Int32Array(65536);
for (let h = 0; h < 65536; h++) FP16_TO_F32_BITS[h] = f32BitsFromFp16(h);
const FP16_TO_F32 = new Float32Array(FP16_TO_F32_BITS.buffer);
/** bf16 bits -> float32 value (the bits shifted up 16), for accumulate. */
const BF16_TO_F32 = new Float32Array(65536);
{
  const bits = new Int32Array(BF16_TO_F32.buffer);
  for (let h = 0; h < 65536; h++) bits[h] = h << 16;
}

/** Elements per scratch block: 64 KiB of float32, small enough for L2. */
const BLOCK = 16384;
const scratchBuf = new ArrayBuffer(BLOCK * 4);
const scratchU8 = new Uint8Array(scratchBuf);
const scratchU16 = new Uint16Array(scratchBuf);
const scratchF32 = new Float32Array(scratchBuf);

function checkLengths(what: string, bytes: Uint8Array, n: number, width: number): void {
  if (bytes.byteLength < n * width) {
    throw new Error(
      `${what}: wire buffer has ${bytes.byteLength} bytes, fewer than the ${n * width} needed for ` +
        `${n} elements of ${width} bytes (float array length ${n})`,
    );
  }
}

function i32Of(x: Float32Array): Int32Array {
  return new Int32Array(x.buffer, x.byteOffset, x.length);
}

// ---------------------------------------------------------------------------
// Kernels. Each is monomorphic over its typed-array types; `o` offsets into
// the wire view so the unaligned path can reuse them on a scratch block.

function bf16Encode(src: Int32Array, s0: number, dst: Uint16Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const u = src[s0 + i]!;
    // Non-NaN: (u + 0x7FFF + lsb) >>> 16 — computed on the two halves so it
    // stays in small integers (u + bias may exceed 2^31).
    const hi = u >>> 16;
    dst[i] = (u & 0x7fffffff) > 0x7f800000 ? 0x7fc0 : hi + (((u & 0xffff) + 0x7fff + (hi & 1)) >>> 16);
  }
}

function bf16Decode(src: Uint16Array, dst: Int32Array, d0: number, n: number): void {
  for (let i = 0; i < n; i++) dst[d0 + i] = src[i]! << 16;
}

// fp16Encode and fp16Round repeat fp16FromF32Bits's body on purpose: calling it
// per element made this JavaScript fallback 1.5-1.8x slower (82 against
// 124-150 ms per 23.5 M floats).
function fp16Encode(src: Int32Array, s0: number, dst: Uint16Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const u = src[s0 + i]!;
    const sign = (u >>> 16) & 0x8000;
    const a = u & 0x7fffffff;
    let h: number;
    if (a >= 0x38800000) {
      if (a < 0x477ff000) {
        const r = a - 0x38000000;
        h = (r + 0xfff + ((r >>> 13) & 1)) >>> 13;
      } else {
        h = a > 0x7f800000 ? 0x7e00 : 0x7c00;
      }
    } else if (a > 0x33000000) {
      const s = 126 - (a >>> 23);
      const m = (a & 0x7fffff) | 0x800000;
      h = (m + (1 << (s - 1)) - 1 + ((m >>> s) & 1)) >>> s;
    } else {
      h = 0;
    }
    dst[i] = sign | h;
  }
}

function fp16Decode(src: Uint16Array, dst: Int32Array, d0: number, n: number): void {
  const t = FP16_TO_F32_BITS;
  for (let i = 0; i < n; i++) dst[d0 + i] = t[src[i]!]!;
}

function bf16Accumulate(src: Uint16Array, dst: Float32Array, d0: number, n: number): void {
  const t = BF16_TO_F32;
  for (let i = 0; i < n; i++) dst[d0 + i] += t[src[i]!]!;
}

function fp16Accumulate(src: Uint16Array, dst: Float32Array, d0: number, n: number): void {
  const t = FP16_TO_F32;
  for (let i = 0; i < n; i++) dst[d0 + i] += t[src[i]!]!;
}

function addBlock(src: Float32Array, dst: Float32Array, d0: number, n: number): void {
  for (let i = 0; i < n; i++) dst[d0 + i] += src[i]!;
}

// ---------------------------------------------------------------------------
// Formats.

/** A 16-bit wire format from its element kernels. */
function halfFormat(
  name: 'bf16' | 'fp16',
  enc: (src: Int32Array, s0: number, dst: Uint16Array, n: number) => void,
  dec: (src: Uint16Array, dst: Int32Array, d0: number, n: number) => void,
  acc: (src: Uint16Array, dst: Float32Array, d0: number, n: number) => void,
  round: (x: Int32Array) => void,
): WireFormat {
  return Object.freeze({
    name,
    bytesPerElement: 2 as const,
    encode(src: Float32Array, dst: Uint8Array): void {
      const n = src.length;
      checkLengths(`${name} encode`, dst, n, 2);
      const s = i32Of(src);
      if ((dst.byteOffset & 1) === 0) {
        enc(s, 0, new Uint16Array(dst.buffer, dst.byteOffset, n), n);
        return;
      }
      for (let i = 0; i < n; i += BLOCK) {
        const k = Math.min(BLOCK, n - i);
        enc(s, i, scratchU16, k);
        dst.set(scratchU8.subarray(0, 2 * k), 2 * i);
      }
    },
    decodeInto(bytes: Uint8Array, dst: Float32Array): void {
      const n = dst.length;
      checkLengths(`${name} decodeInto`, bytes, n, 2);
      const d = i32Of(dst);
      if ((bytes.byteOffset & 1) === 0) {
        dec(new Uint16Array(bytes.buffer, bytes.byteOffset, n), d, 0, n);
        return;
      }
      // Unaligned: stage each block's bytes at the start of the scratch (its
      // 16-bit view), which never overlaps the destination.
      for (let i = 0; i < n; i += BLOCK) {
        const k = Math.min(BLOCK, n - i);
        scratchU8.set(bytes.subarray(2 * i, 2 * (i + k)));
        dec(scratchU16.subarray(0, k), d, i, k);
      }
    },
    accumulate(bytes: Uint8Array, dst: Float32Array): void {
      const n = dst.length;
      checkLengths(`${name} accumulate`, bytes, n, 2);
      if ((bytes.byteOffset & 1) === 0) {
        acc(new Uint16Array(bytes.buffer, bytes.byteOffset, n), dst, 0, n);
        return;
      }
      for (let i = 0; i < n; i += BLOCK) {
        const k = Math.min(BLOCK, n - i);
        scratchU8.set(bytes.subarray(2 * i, 2 * (i + k)));
        acc(scratchU16.subarray(0, k), dst, i, k);
      }
    },
    roundInPlace(x: Float32Array): void {
      round(i32Of(x));
    },
  });
}

function bf16Round(x: Int32Array): void {
  const n = x.length;
  for (let i = 0; i < n; i++) {
    const u = x[i]!;
    const hi = u >>> 16;
    x[i] = (u & 0x7fffffff) > 0x7f800000 ? 0x7fc00000 : (hi + (((u & 0xffff) + 0x7fff + (hi & 1)) >>> 16)) << 16;
  }
}

function fp16Round(x: Int32Array): void {
  const t = FP16_TO_F32_BITS;
  const n = x.length;
  for (let i = 0; i < n; i++) {
    const u = x[i]!;
    const sign = (u >>> 16) & 0x8000;
    const a = u & 0x7fffffff;
    let h: number;
    if (a >= 0x38800000) {
      if (a < 0x477ff000) {
        const r = a - 0x38000000;
        h = (r + 0xfff + ((r >>> 13) & 1)) >>> 13;
      } else {
        h = a > 0x7f800000 ? 0x7e00 : 0x7c00;
      }
    } else if (a > 0x33000000) {
      const s = 126 - (a >>> 23);
      const m = (a & 0x7fffff) | 0x800000;
      h = (m + (1 << (s - 1)) - 1 + ((m >>> s) & 1)) >>> s;
    } else {
      h = 0;
    }
    x[i] = t[sign | h]!;
  }
}

const FP32: WireFormat = Object.freeze({
  name: 'fp32' as const,
  bytesPerElement: 4 as const,
  encode(src: Float32Array, dst: Uint8Array): void {
    const n = src.length;
    checkLengths('fp32 encode', dst, n, 4);
    dst.set(new Uint8Array(src.buffer, src.byteOffset, 4 * n));
  },
  decodeInto(bytes: Uint8Array, dst: Float32Array): void {
    const n = dst.length;
    checkLengths('fp32 decodeInto', bytes, n, 4);
    // A byte copy: bit-exact (no float conversion), any alignment, overlap-safe.
    new Uint8Array(dst.buffer, dst.byteOffset, 4 * n).set(bytes.subarray(0, 4 * n));
  },
  accumulate(bytes: Uint8Array, dst: Float32Array): void {
    const n = dst.length;
    checkLengths('fp32 accumulate', bytes, n, 4);
    if ((bytes.byteOffset & 3) === 0) {
      addBlock(new Float32Array(bytes.buffer, bytes.byteOffset, n), dst, 0, n);
      return;
    }
    for (let i = 0; i < n; i += BLOCK) {
      const k = Math.min(BLOCK, n - i);
      scratchU8.set(bytes.subarray(4 * i, 4 * (i + k)));
      addBlock(k === BLOCK ? scratchF32 : scratchF32.subarray(0, k), dst, i, k);
    }
  },
  roundInPlace(): void {
    // fp32 on the wire is exact: nothing to round.
  },
});

const JS_FORMATS: Record<WireName, WireFormat> = {
  fp32: FP32,
  bf16: halfFormat('bf16', bf16Encode, bf16Decode, bf16Accumulate, bf16Round),
  fp16: halfFormat('fp16', fp16Encode, fp16Decode, fp16Accumulate, fp16Round),
};

// ---------------------------------------------------------------------------
// The WebAssembly SIMD kernels (wire-kernel.wat): same bits, ~5-10x faster.
// The module owns 128 KiB: floats of a block at 0, its wire bytes at 65536.
// Each call copies blocks in and out (memcpy, cache-resident), so any caller
// array and any byteOffset work.

interface KernelExports {
  memory: WebAssembly.Memory;
  bf16Encode(n: number): void;
  fp16Encode(n: number): void;
  bf16Decode(n: number): void;
  fp16Decode(n: number): void;
  bf16Accumulate(n: number): void;
  fp16Accumulate(n: number): void;
  fp32Accumulate(n: number): void;
  bf16Round(n: number): void;
  fp16Round(n: number): void;
}

const WIRE_AT = 65536;

let kernel: KernelExports | null | undefined;

/** The kernel instance, created once per thread; null where this runtime lacks WebAssembly SIMD. */
function wasmKernel(): KernelExports | null {
  if (kernel === undefined) {
    kernel = null;
    try {
      const bytes = Buffer.from(WIRE_KERNEL_BASE64, 'base64');
      if (typeof WebAssembly === 'object' && WebAssembly.validate(bytes)) {
        kernel = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as unknown as KernelExports;
      }
    } catch {
      kernel = null;
    }
  }
  return kernel;
}

/** Whether `wireFormat` runs on the WebAssembly SIMD kernel here (for logs and benchmarks). */
export function wireKernelAvailable(): boolean {
  return wasmKernel() !== null;
}

function bytesOf(x: Float32Array): Uint8Array {
  return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
}

/** Rounds a block length up to the kernels' step of 8 elements. */
function lanes(k: number): number {
  return (k + 7) & ~7;
}

/**
 * Streams `n` elements through the kernel's scratch memory, BLOCK at a time:
 * copies in what the kernel reads (`floatsIn`: float bytes, `wireIn`: wire
 * bytes of `wireWidth` each), runs it, and copies out what it wrote.
 */
function throughKernel(
  ex: KernelExports, n: number, wireWidth: number, run: (lanes: number) => void,
  io: { floatsIn?: Uint8Array; wireIn?: Uint8Array; floatsOut?: Uint8Array; wireOut?: Uint8Array },
): void {
  const mem = new Uint8Array(ex.memory.buffer);
  const floats = mem.subarray(0, BLOCK * 4);
  const wire = mem.subarray(WIRE_AT, WIRE_AT + BLOCK * wireWidth);
  for (let i = 0; i < n; i += BLOCK) {
    const k = Math.min(BLOCK, n - i);
    if (io.floatsIn) floats.set(io.floatsIn.subarray(4 * i, 4 * (i + k)));
    if (io.wireIn) wire.set(io.wireIn.subarray(wireWidth * i, wireWidth * (i + k)));
    run(lanes(k));
    io.floatsOut?.set(floats.subarray(0, 4 * k), 4 * i);
    io.wireOut?.set(wire.subarray(0, wireWidth * k), wireWidth * i);
  }
}

function wasmHalfFormat(name: 'bf16' | 'fp16', ex: KernelExports): WireFormat {
  const enc = name === 'bf16' ? ex.bf16Encode : ex.fp16Encode;
  const dec = name === 'bf16' ? ex.bf16Decode : ex.fp16Decode;
  const acc = name === 'bf16' ? ex.bf16Accumulate : ex.fp16Accumulate;
  const round = name === 'bf16' ? ex.bf16Round : ex.fp16Round;
  return Object.freeze({
    name,
    bytesPerElement: 2 as const,
    encode(src: Float32Array, dst: Uint8Array): void {
      checkLengths(`${name} encode`, dst, src.length, 2);
      throughKernel(ex, src.length, 2, enc, { floatsIn: bytesOf(src), wireOut: dst });
    },
    decodeInto(bytes: Uint8Array, dst: Float32Array): void {
      checkLengths(`${name} decodeInto`, bytes, dst.length, 2);
      throughKernel(ex, dst.length, 2, dec, { wireIn: bytes, floatsOut: bytesOf(dst) });
    },
    accumulate(bytes: Uint8Array, dst: Float32Array): void {
      checkLengths(`${name} accumulate`, bytes, dst.length, 2);
      const d = bytesOf(dst);
      throughKernel(ex, dst.length, 2, acc, { floatsIn: d, wireIn: bytes, floatsOut: d });
    },
    roundInPlace(x: Float32Array): void {
      const d = bytesOf(x);
      throughKernel(ex, x.length, 2, round, { floatsIn: d, floatsOut: d });
    },
  });
}

function wasmFp32Format(ex: KernelExports): WireFormat {
  return Object.freeze({
    ...FP32,
    accumulate(bytes: Uint8Array, dst: Float32Array): void {
      checkLengths('fp32 accumulate', bytes, dst.length, 4);
      const d = bytesOf(dst);
      throughKernel(ex, dst.length, 4, ex.fp32Accumulate, { floatsIn: d, wireIn: bytes, floatsOut: d });
    },
  });
}

let wasmFormats: Record<WireName, WireFormat> | null | undefined;

function wasmFormatsOrNull(): Record<WireName, WireFormat> | null {
  if (wasmFormats === undefined) {
    const ex = wasmKernel();
    wasmFormats = ex === null ? null : {
      fp32: wasmFp32Format(ex),
      bf16: wasmHalfFormat('bf16', ex),
      fp16: wasmHalfFormat('fp16', ex),
    };
  }
  return wasmFormats;
}

/** Which implementation a format runs on: the SIMD kernel, or the JavaScript reference (tests compare the two). */
export type WireKernel = 'wasm' | 'js';

/**
 * The wire format called `name`, on the WebAssembly SIMD kernel where the
 * runtime has it (`kernel` 'js' forces the JavaScript kernels; both give the
 * same bits).
 */
export function wireFormat(name: WireName, kernel: WireKernel = 'wasm'): WireFormat {
  if (!WIRE_NAMES.includes(name)) {
    throw new Error(`unknown wire format ${JSON.stringify(name)}: expected one of ${WIRE_NAMES.join(', ')}`);
  }
  const formats = kernel === 'wasm' ? wasmFormatsOrNull() ?? JS_FORMATS : JS_FORMATS;
  return formats[name];
}
