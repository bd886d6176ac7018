// readSafetensors on a Node Buffer (what fs.readFileSync returns): tensors at
// unaligned offsets must be copied out of the tensor's own bytes. Buffer.slice
// is a view, not a copy, so an I64 after an odd number of F32 values used to
// read the start of the file instead (num_batches_tracked came back as 39776).
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { encodeSafetensors, readSafetensors } from '../src/common/io/safetensors.js';
import { GOLDEN_DIR } from './helpers/golden.js';

describe('safetensors from a Node Buffer', () => {
  test('unaligned I64 tensors read their own bytes', () => {
    const buffer = fs.readFileSync(path.join(GOLDEN_DIR, 'resnet18-w4.safetensors'));
    const fromBuffer = readSafetensors(buffer).tensors;
    const fromCopy = readSafetensors(new Uint8Array(buffer)).tensors;
    expect((fromBuffer.get('step1/bn1.num_batches_tracked')!.data as BigInt64Array)[0]).toBe(1n);
    expect((fromBuffer.get('step2/layer4.1.bn2.num_batches_tracked')!.data as BigInt64Array)[0]).toBe(2n);
    for (const [name, t] of fromCopy) expect(fromBuffer.get(name)!.data, name).toEqual(t.data);
  });

  test('a 0-d I64 (a state_dict counter) round-trips after an odd F32 count, from a Buffer', () => {
    const bytes = encodeSafetensors({
      w: { dtype: 'F32', shape: [3], data: new Float32Array([1, 2, 3]) },
      n: { dtype: 'I64', shape: [], data: new BigInt64Array([123456789012n]) },
    });
    const n = readSafetensors(Buffer.from(bytes)).tensors.get('n')!;
    expect(n.shape).toEqual([]);
    expect(n.data).toEqual(new BigInt64Array([123456789012n]));
  });
});
