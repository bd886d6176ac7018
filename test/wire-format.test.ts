// The all-reduce wire formats (src/common/allreduce/wire-format.ts), both the
// WebAssembly SIMD kernels and the JavaScript ones, against slow references
// written here from the format definitions (real arithmetic in doubles, not
// bit tricks): decode exhaustively over all 65536 patterns, encode over edge
// cases, exact ties and random floats of every exponent.
import { describe, expect, test } from 'vitest';
import {
  WIRE_NAMES, wireFormat, wireKernelAvailable, type WireFormat, type WireKernel,
} from '../src/common/allreduce/wire-format.js';


// ---------------------------------------------------------------------------
// References.

interface Spec { mant: number; expBits: number; maxFinite: number; minNormalExp: number }
const SPECS: Record<'bf16' | 'fp16', Spec> = {
  bf16: { mant: 7, expBits: 8, maxFinite: (2 - 2 ** -7) * 2 ** 127, minNormalExp: -126 },
  fp16: { mant: 10, expBits: 5, maxFinite: 65504, minNormalExp: -14 },
};

/** The value of a 16-bit pattern, from the format definition. */
function refDecode(spec: Spec, h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const emax = (1 << spec.expBits) - 1;
  const bias = (1 << (spec.expBits - 1)) - 1;
  const e = (h >> spec.mant) & emax;
  const m = h & ((1 << spec.mant) - 1);
  if (e === emax) return m === 0 ? sign * Infinity : NaN;
  if (e === 0) return sign * m * 2 ** (1 - bias - spec.mant);
  return sign * (1 + m / 2 ** spec.mant) * 2 ** (e - bias);
}

/** x rounded to the format, to nearest with ties to even, in exact double arithmetic. */
function refRound(spec: Spec, x: number): number {
  if (Number.isNaN(x) || x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  while (2 ** e > a) e--;
  while (2 ** (e + 1) <= a) e++;
  e = Math.max(e, spec.minNormalExp);
  const ulp = 2 ** (e - spec.mant);
  const q = a / ulp; // exact: a has 24 significant bits, ulp is a power of two
  let r = Math.floor(q);
  const frac = q - r;
  if (frac > 0.5 || (frac === 0.5 && r % 2 === 1)) r++;
  const v = r * ulp;
  return Math.sign(x) * (v > spec.maxFinite ? Infinity : v);
}

const f32 = (bits: number) => new Float32Array(new Uint32Array([bits >>> 0]).buffer)[0]!;
const bitsOf = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);
const u16le = (b: Uint8Array, i: number) => b[2 * i]! | (b[2 * i + 1]! << 8);

/** Float32 values for encode: edge cases, exact ties of both formats, random bits of every exponent. */
function encodeCases(): Float32Array {
  const v: number[] = [
    0, -0, Infinity, -Infinity, NaN, 1, -1, 0.5, 65504, -65504, 65519, 65520, -65520, 65536, 1e10,
    2 ** -14, 2 ** -24, -(2 ** -24), 2 ** -25, -(2 ** -25), 2 ** -26, 2 ** -14 - 2 ** -25, 2 ** -14 - 2 ** -26,
    3.4028234663852886e38, -3.4028234663852886e38, 1.401298464324817e-45, 1.1754943508222875e-38,
    Math.PI, -Math.E, 1 / 3, 0.1, 1e-7, -1e-7, 6e-8, 3e-8,
  ];
  for (const b of [0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fbfffff, 0x7fffffff, 0xffffffff, 0x7f7fffff, 0xff7fffff,
    0x7f7f8000, 0x7f7f7fff, 0x3f808000, 0x3f818000, 0x477fefff, 0x477ff000, 0x477fe000, 0x33000000, 0x33000001, 0x387fffff,
    0x38800000, 0x387fe000, 0x387ff000, 0x00000001, 0x80000001, 0x007fffff]) v.push(f32(b));
  // Exact ties and their neighbours, for every 16-bit pattern's upper midpoint (representable in float32).
  for (const spec of Object.values(SPECS)) {
    for (let h = 0; h < 0x7fff; h += 1) {
      const lo = refDecode(spec, h), hi = refDecode(spec, h + 1);
      if (!Number.isFinite(lo) || !Number.isFinite(hi)) continue;
      const mid = (lo + hi) / 2;
      if (Math.fround(mid) !== mid) continue;
      if (h % 7 === 0 || h < 2048 || h > 0x7b00) {
        v.push(mid, -mid);
        const b = new Uint32Array(new Float32Array([mid]).buffer)[0]!;
        v.push(f32(b + 1), f32(b - 1));
      }
    }
  }
  const out = new Float32Array(v.length + 300_000);
  out.set(v);
  const bits = bitsOf(out);
  let seed = 12345;
  for (let i = v.length; i < out.length; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    bits[i] = i % 2 === 0 ? seed : (seed & 0x83ffffff) | 0x30000000; // every exponent / the fp16 range
  }
  return out;
}
const CASES = encodeCases();

const kernels: WireKernel[] = ['wasm', 'js'];

test('the SIMD kernel loads here', () => {
  expect(wireKernelAvailable()).toBe(true);
});

test('names and widths', () => {
  expect(WIRE_NAMES).toEqual(['fp32', 'bf16', 'fp16']);
  for (const k of kernels) {
    expect(WIRE_NAMES.map((n) => [wireFormat(n, k).name, wireFormat(n, k).bytesPerElement]))
      .toEqual([['fp32', 4], ['bf16', 2], ['fp16', 2]]);
  }
  expect(() => wireFormat('fp8' as never)).toThrow(/fp8/);
});

describe.each(kernels)('%s kernel', (kernel) => {
  describe.each(['bf16', 'fp16'] as const)('%s', (name) => {
    const w: WireFormat = wireFormat(name, kernel);
    const spec = SPECS[name];

    test('decode of all 65536 patterns matches the format definition', () => {
      const bytes = new Uint8Array(2 * 65536);
      for (let h = 0; h < 65536; h++) { bytes[2 * h] = h & 0xff; bytes[2 * h + 1] = h >> 8; }
      const out = new Float32Array(65536);
      w.decodeInto(bytes, out);
      const bits = bitsOf(out);
      for (let h = 0; h < 65536; h++) {
        const ref = refDecode(spec, h);
        if (Number.isNaN(ref)) {
          // NaN kept exactly: sign and payload shifted into place.
          const want = name === 'bf16' ? h << 16 : ((h & 0x8000) << 16) | 0x7f800000 | ((h & 0x3ff) << 13);
          if (bits[h] !== want >>> 0) expect([h, bits[h]]).toEqual([h, want >>> 0]);
        } else if (!Object.is(out[h], ref)) {
          expect([h, out[h]]).toEqual([h, ref]);
        }
      }
      // accumulate onto zeros gives the same values (NaN aside); onto -0 keeps -0 + x.
      const acc = new Float32Array(65536);
      w.accumulate(bytes, acc);
      for (let h = 0; h < 65536; h++) {
        const ref = refDecode(spec, h);
        const want = ref === 0 ? 0 : ref;
        if (!Object.is(acc[h], want) && !(Number.isNaN(ref) && Number.isNaN(acc[h]))) expect([h, acc[h]]).toEqual([h, want]);
      }
    });

    test('encode rounds to nearest even (edge cases, ties, random floats)', () => {
      const bytes = new Uint8Array(2 * CASES.length);
      w.encode(CASES, bytes);
      let checked = 0;
      for (let i = 0; i < CASES.length; i++) {
        const x = CASES[i]!;
        const h = u16le(bytes, i);
        if (Number.isNaN(x)) {
          const sign = (bitsOf(CASES)[i]! >>> 16) & 0x8000;
          const want = name === 'bf16' ? 0x7fc0 : sign | 0x7e00;
          if (h !== want) expect([i, h]).toEqual([i, want]);
          continue;
        }
        const got = refDecode(spec, h);
        const want = refRound(spec, x);
        if (!Object.is(got, want)) expect([i, x, got]).toEqual([i, x, want]);
        checked++;
      }
      expect(checked).toBeGreaterThan(300_000);
    });

    test('named edge cases', () => {
      const enc = (x: number) => {
        const b = new Uint8Array(2);
        w.encode(new Float32Array([x]), b);
        return u16le(b, 0);
      };
      expect(enc(0)).toBe(0);
      expect(enc(-0)).toBe(0x8000);
      expect(enc(Infinity)).toBe(name === 'bf16' ? 0x7f80 : 0x7c00);
      expect(enc(-Infinity)).toBe(name === 'bf16' ? 0xff80 : 0xfc00);
      expect(enc(NaN)).toBe(name === 'bf16' ? 0x7fc0 : 0x7e00);
      if (name === 'fp16') {
        expect(enc(65504)).toBe(0x7bff);
        expect(enc(65519)).toBe(0x7bff);
        expect(enc(65520)).toBe(0x7c00); // the tie above max finite rounds to even: Inf
        expect(enc(-1e6)).toBe(0xfc00);
        expect(enc(2 ** -24)).toBe(0x0001);
        expect(enc(2 ** -25)).toBe(0x0000); // tie to even
        expect(enc(3 * 2 ** -25)).toBe(0x0002); // tie to even
        expect(enc(2 ** -14 - 2 ** -25)).toBe(0x0400); // rounds up into the normals
        expect(enc(1 + 2 ** -11)).toBe(0x3c00); // tie to even (down)
        expect(enc(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie to even (up)
      } else {
        expect(enc(f32(0x7f7fffff))).toBe(0x7f80); // float32 max rounds to Inf, as in PyTorch
        expect(enc(1 + 2 ** -8)).toBe(0x3f80);
        expect(enc(1 + 3 * 2 ** -8)).toBe(0x3f82);
        expect(enc(f32(0x00000001))).toBe(0x0000);
        expect(enc(f32(0x00008000))).toBe(0x0000); // subnormal tie to even
        expect(enc(f32(0x00018000))).toBe(0x0002);
      }
    });

    test('accumulate is fround(dst + decode) and roundInPlace is decode(encode(x))', () => {
      const n = CASES.length;
      const bytes = new Uint8Array(2 * n);
      w.encode(CASES, bytes);
      const decoded = new Float32Array(n);
      w.decodeInto(bytes, decoded);
      const dst = CASES.slice().reverse();
      const want = dst.map((d, i) => Math.fround(d + decoded[i]!));
      w.accumulate(bytes, dst);
      for (let i = 0; i < n; i++) {
        if (!Object.is(dst[i], want[i]) && !(Number.isNaN(dst[i]) && Number.isNaN(want[i]))) expect([i, dst[i]]).toEqual([i, want[i]]);
      }
      const x = CASES.slice();
      w.roundInPlace(x);
      const xb = bitsOf(x), db = bitsOf(decoded);
      for (let i = 0; i < n; i++) if (xb[i] !== db[i]) expect([i, xb[i]]).toEqual([i, db[i]]);
    });

    test('unaligned byteOffset and odd lengths give the same bytes, and touch nothing else', () => {
      for (const len of [1, 7, 8, 9, 16383, 16384, 16385, 40_001]) {
        const src = CASES.subarray(5, 5 + len);
        const ref = new Uint8Array(2 * len);
        w.encode(src, ref);
        const refDec = new Float32Array(len);
        w.decodeInto(ref, refDec);
        for (const off of [1, 2, 3]) {
          const buf = new Uint8Array(2 * len + 8).fill(0xa5);
          const view = buf.subarray(off, off + 2 * len);
          w.encode(src, view);
          expect(Buffer.from(view).equals(Buffer.from(ref))).toBe(true);
          expect(buf.subarray(0, off).every((b) => b === 0xa5)).toBe(true);
          expect(buf.subarray(off + 2 * len).every((b) => b === 0xa5)).toBe(true);
          const dec = new Float32Array(len + 2).fill(7);
          w.decodeInto(view, dec.subarray(1, 1 + len));
          expect(Buffer.from(bitsOf(dec.subarray(1, 1 + len)).buffer, 4, 4 * len).equals(Buffer.from(bitsOf(refDec).buffer))).toBe(true);
          expect([dec[0], dec[len + 1]]).toEqual([7, 7]);
          const acc = new Float32Array(len).fill(1);
          const accRef = new Float32Array(len).fill(1);
          w.accumulate(view, acc.subarray(0, len));
          w.accumulate(ref, accRef);
          for (let i = 0; i < len; i++) {
            if (!Object.is(acc[i], accRef[i]) && !(Number.isNaN(acc[i]) && Number.isNaN(accRef[i]))) expect([len, off, i, acc[i]]).toEqual([len, off, i, accRef[i]]);
          }
        }
      }
    });

    test('a wire buffer too short throws, naming both lengths', () => {
      const x = new Float32Array(5);
      const short = new Uint8Array(9);
      expect(() => w.encode(x, short)).toThrow(/9 bytes.*10/);
      expect(() => w.decodeInto(short, x)).toThrow(/9 bytes.*10/);
      expect(() => w.accumulate(short, x)).toThrow(/9 bytes.*10/);
      // Longer is fine: only the first n elements are used.
      expect(() => w.decodeInto(new Uint8Array(12), x)).not.toThrow();
    });
  });

  describe('fp32', () => {
    const w = wireFormat('fp32', kernel);
    test('is an exact copy (NaN payloads too) at any byteOffset', () => {
      const src = CASES.subarray(0, 50_001);
      for (const off of [0, 1, 2, 3]) {
        const buf = new Uint8Array(4 * src.length + 4);
        const view = buf.subarray(off, off + 4 * src.length);
        w.encode(src, view);
        expect(Buffer.from(view).equals(Buffer.from(src.buffer, src.byteOffset, src.byteLength))).toBe(true);
        const out = new Float32Array(src.length);
        w.decodeInto(view, out);
        expect(Buffer.from(out.buffer).equals(Buffer.from(view))).toBe(true);
        const acc = new Float32Array(src.length).fill(0.25);
        w.accumulate(view, acc);
        for (let i = 0; i < src.length; i++) {
          const want = Math.fround(0.25 + src[i]!);
          if (!Object.is(acc[i], want) && !(Number.isNaN(want) && Number.isNaN(acc[i]))) expect([i, acc[i]]).toEqual([i, want]);
        }
      }
      const x = src.slice();
      w.roundInPlace(x);
      expect(Buffer.from(x.buffer).equals(Buffer.from(src.slice().buffer))).toBe(true);
    });
    test('a wire buffer too short throws, naming both lengths', () => {
      const x = new Float32Array(3);
      expect(() => w.encode(x, new Uint8Array(11))).toThrow(/11 bytes.*12/);
      expect(() => w.decodeInto(new Uint8Array(11), x)).toThrow(/11 bytes.*12/);
      expect(() => w.accumulate(new Uint8Array(11), x)).toThrow(/11 bytes.*12/);
    });
  });
});

test('wasm and js kernels give identical bytes on random bits', () => {
  for (const name of ['bf16', 'fp16'] as const) {
    const a = new Uint8Array(2 * CASES.length), b = new Uint8Array(2 * CASES.length);
    wireFormat(name, 'wasm').encode(CASES, a);
    wireFormat(name, 'js').encode(CASES, b);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
  }
});
