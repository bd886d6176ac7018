// The safetensors reader and writer: the PyTorch golden fixture (read from a
// Uint8Array and from a Node Buffer), round trips, and every malformed input.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { encodeSafetensors, readSafetensors, SafetensorsError, type SafetensorsTensor } from '../src/common/io/safetensors.js';
import { goldenFile } from './helpers/golden.js';

const resnet18File = goldenFile('resnet18');

function loadGolden(): Buffer {
  try {
    return readFileSync(resnet18File);
  } catch (err) {
    throw new Error(`golden fixture missing at ${resnet18File}: restore test/fixtures/golden from git or run python3 scripts/make-golden.py (${(err as Error).message})`);
  }
}

/** Builds a file by hand so the tests exercise the reader independently of our writer. */
function handMade(header: unknown, data: Uint8Array, pad = true): Uint8Array {
  let json = typeof header === 'string' ? header : JSON.stringify(header);
  if (pad) while (json.length % 8 !== 0) json += ' ';
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(data, 8 + headerBytes.length);
  return out;
}

function expectProblem(fn: () => unknown, problem: string, pattern: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SafetensorsError);
    expect((err as SafetensorsError).problem).toBe(problem);
    expect((err as Error).message).toMatch(pattern);
    return;
  }
  throw new Error('expected a SafetensorsError');
}

describe('readSafetensors on the PyTorch golden fixture', () => {
  const buffer = loadGolden();
  const bytes = new Uint8Array(buffer);
  const file = readSafetensors(bytes, resnet18File);

  it('reads metadata and known tensors with the right dtypes and shapes', () => {
    expect(file.metadata.model).toBe('resnet18');
    expect(file.metadata.width).toBe('4');

    const input = file.tensors.get('input_nchw')!;
    expect(input.dtype).toBe('F32');
    expect(input.shape).toEqual([8, 3, 32, 32]);
    expect(input.data).toBeInstanceOf(Float32Array);
    expect(input.data.length).toBe(8 * 3 * 32 * 32);

    const labels = file.tensors.get('labels')!;
    expect(labels.dtype).toBe('I64');
    expect(labels.shape).toEqual([8]);
    expect(labels.data).toBeInstanceOf(BigInt64Array);
    for (const label of labels.data as BigInt64Array) {
      expect(label >= 0n && label < 10n).toBe(true);
    }

    expect(file.tensors.get('init/conv1.weight')!.shape).toEqual([4, 3, 3, 3]);
  });

  it('agrees with the NHWC copy of the input (checks element order, not just sizes)', () => {
    const nchw = file.tensors.get('input_nchw')!.data as Float32Array;
    const nhwc = file.tensors.get('input_nhwc')!.data as Float32Array;
    const [C, H, W] = [3, 32, 32];
    for (const [n, c, h, w] of [[0, 0, 0, 0], [3, 2, 17, 5], [7, 1, 31, 31]]) {
      expect(nhwc[((n * H + h) * W + w) * C + c]).toBe(nchw[((n * C + c) * H + h) * W + w]);
    }
  });

  it('returns aligned typed arrays even where the file offset is unaligned', () => {
    // step1/bn1.num_batches_tracked sits at an offset that is 4 mod 8 in this file.
    const counter = file.tensors.get('step1/bn1.num_batches_tracked')!;
    expect(counter.dtype).toBe('I64');
    expect(counter.data.byteOffset % 8).toBe(0);
    expect((counter.data as BigInt64Array)[0]).toBe(1n);
    for (const t of file.tensors.values()) {
      expect(t.data.byteOffset % t.data.BYTES_PER_ELEMENT).toBe(0);
    }
  });

  it('reads a Node Buffer the same way: unaligned tensors are copied from their own bytes', () => {
    // fs.readFileSync returns a Buffer, whose slice is a view, not a copy; an I64
    // after an odd number of F32 values once read the start of the file instead
    // (num_batches_tracked came back as 39776, the header length).
    const fromBuffer = readSafetensors(buffer, resnet18File).tensors;
    expect((fromBuffer.get('step1/bn1.num_batches_tracked')!.data as BigInt64Array)[0]).toBe(1n);
    expect((fromBuffer.get('step2/layer4.1.bn2.num_batches_tracked')!.data as BigInt64Array)[0]).toBe(2n);
    const bytesOf = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
    for (const [name, t] of file.tensors) {
      const got = fromBuffer.get(name)!;
      expect(got.data.constructor, name).toBe(t.data.constructor);
      expect(bytesOf(got.data).equals(bytesOf(t.data)), name).toBe(true);
    }
  });

  it('re-encodes byte-for-byte identically', () => {
    const again = encodeSafetensors(file.tensors, file.metadata);
    expect(again.length).toBe(bytes.length);
    expect(Buffer.compare(Buffer.from(again), Buffer.from(bytes))).toBe(0);
  });
});

describe('encodeSafetensors / readSafetensors round trip', () => {
  it('round-trips every supported dtype, empty tensors and metadata', () => {
    const tensors = new Map<string, SafetensorsTensor>([
      ['f32', { dtype: 'F32', shape: [2, 3], data: new Float32Array([1.5, -2, 3, Number.NaN, Infinity, 0]) }],
      ['u8', { dtype: 'U8', shape: [3], data: new Uint8Array([0, 128, 255]) }],
      ['i64', { dtype: 'I64', shape: [2], data: new BigInt64Array([-(2n ** 62n), 7n]) }],
      ['empty', { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) }],
      ['f64', { dtype: 'F64', shape: [1], data: new Float64Array([Math.PI]) }],
      ['i32', { dtype: 'I32', shape: [], data: new Int32Array([-5]) }],
    ]);
    const bytes = encodeSafetensors(tensors, { note: 'héllo "quoted"' });
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(headerLength % 8).toBe(0);

    const back = readSafetensors(bytes);
    expect(back.metadata).toEqual({ note: 'héllo "quoted"' });
    expect([...back.tensors.keys()]).toEqual([...tensors.keys()]);
    for (const [name, t] of tensors) {
      const got = back.tensors.get(name)!;
      expect(got.dtype).toBe(t.dtype);
      expect(got.shape).toEqual(t.shape);
      expect(got.data.constructor).toBe(t.data.constructor);
      expect([...got.data]).toEqual([...t.data]);
    }
  });

  it('reads a buffer that sits at an odd offset inside a larger ArrayBuffer', () => {
    const bytes = encodeSafetensors({ w: { dtype: 'F32', shape: [3], data: new Float32Array([1, 2, 3]) } });
    const host = new Uint8Array(bytes.length + 1);
    host.set(bytes, 1);
    const t = readSafetensors(host.subarray(1)).tensors.get('w')!;
    expect([...t.data]).toEqual([1, 2, 3]);
  });

  it('round-trips a 0-d I64 (a state_dict counter) after an odd F32 count, from a Buffer', () => {
    const bytes = encodeSafetensors({
      w: { dtype: 'F32', shape: [3], data: new Float32Array([1, 2, 3]) },
      n: { dtype: 'I64', shape: [], data: new BigInt64Array([123456789012n]) },
    });
    const n = readSafetensors(Buffer.from(bytes)).tensors.get('n')!;
    expect(n.shape).toEqual([]);
    expect(n.data).toEqual(new BigInt64Array([123456789012n]));
  });

  it('rejects inconsistent tensors when writing', () => {
    expect(() => encodeSafetensors({ w: { dtype: 'F32', shape: [4], data: new Float32Array(3) } })).toThrow(/shape \[4\] does not match its 3 elements/);
    expect(() => encodeSafetensors({ w: { dtype: 'I64', shape: [3], data: new Float32Array(3) } })).toThrow(/must be a BigInt64Array/);
  });
});

describe('readSafetensors validation', () => {
  const f32 = (n: number) => new Uint8Array(new Float32Array(n).buffer);

  it('rejects a file shorter than the length prefix', () => {
    expectProblem(() => readSafetensors(new Uint8Array(5), 'x.safetensors'), 'truncated', /^x\.safetensors: only 5 bytes/);
  });

  it('rejects a header length beyond the end of the file', () => {
    const bytes = handMade({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32(1));
    expectProblem(() => readSafetensors(bytes.subarray(0, 20)), 'truncated', /header claims \d+ bytes but only 12 follow/);
  });

  it('rejects an absurd header length', () => {
    const bytes = new Uint8Array(16);
    new DataView(bytes.buffer).setBigUint64(0, 2n ** 40n, true);
    expectProblem(() => readSafetensors(bytes), 'malformed', /exceeds the 100000000-byte limit/);
  });

  it('rejects a header that is not JSON or not an object', () => {
    expectProblem(() => readSafetensors(handMade('{"a": ', new Uint8Array(0))), 'malformed', /not valid JSON/);
    expectProblem(() => readSafetensors(handMade('[1,2]', new Uint8Array(0))), 'malformed', /must be an object/);
  });

  it('rejects non-string metadata', () => {
    expectProblem(() => readSafetensors(handMade({ __metadata__: { epoch: 3 } }, new Uint8Array(0))), 'malformed', /"__metadata__.epoch" must be a string/);
  });

  it('rejects unknown dtypes as unsupported', () => {
    const bytes = handMade({ h: { dtype: 'F16', shape: [2], data_offsets: [0, 4] } }, new Uint8Array(4));
    expectProblem(() => readSafetensors(bytes), 'unsupported', /tensor "h" has dtype F16/);
  });

  it('rejects offsets that disagree with dtype and shape', () => {
    const bytes = handMade({ a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 12] } }, f32(3));
    expectProblem(() => readSafetensors(bytes), 'malformed', /needs 16 bytes but data_offsets span 12/);
  });

  it('rejects negative or reversed offsets and bad shapes', () => {
    expectProblem(() => readSafetensors(handMade({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, f32(1))), 'malformed', /data_offsets must be \[begin, end\]/);
    expectProblem(() => readSafetensors(handMade({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, f32(1))), 'malformed', /shape must be an array of non-negative integers/);
  });

  it('rejects overlapping tensors', () => {
    const header = {
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
    };
    expectProblem(() => readSafetensors(handMade(header, f32(3))), 'malformed', /"b" \[4, 12\) overlaps "a"/);
  });

  it('rejects gaps and trailing bytes', () => {
    const gap = { a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } };
    expectProblem(() => readSafetensors(handMade(gap, f32(2))), 'malformed', /gap in the data section: bytes \[0, 4\)/);
    const short = { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } };
    expectProblem(() => readSafetensors(handMade(short, f32(2))), 'malformed', /4 trailing bytes/);
  });

  it('reports data that ends early as truncated', () => {
    const bytes = encodeSafetensors({ w: { dtype: 'F32', shape: [100], data: new Float32Array(100) } });
    expectProblem(() => readSafetensors(bytes.subarray(0, bytes.length - 10)), 'truncated', /"w" ends at data byte 400 but the data section has only 390 bytes/);
  });
});
