// Parser for the IDX format used by MNIST and Fashion-MNIST: a big-endian
// header (two zero bytes, a type code, a dimension count, then one uint32 per
// dimension) followed by the raw values. Only unsigned-byte data is needed.

import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { promisify } from 'node:util';
import { DatasetError } from './errors.js';

const gunzip = promisify(zlib.gunzip);
const UNSIGNED_BYTE = 0x08;

export interface IdxArray {
  dims: number[];
  /** The values, row-major (a view into the file buffer). */
  data: Uint8Array;
}

/** Reads an IDX file, gunzipping it first when it starts with the gzip magic bytes. */
export async function readIdxFile(file: string, expectedMagic: number): Promise<IdxArray> {
  let bytes: Buffer = await fs.promises.readFile(file);
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = await gunzip(bytes);
    } catch (err) {
      throw new DatasetError(`Cannot decompress ${file}: ${(err as Error).message}. The file is corrupt; reinstall or re-download it.`, {
        cause: err,
      });
    }
  }
  return parseIdx(bytes, file, expectedMagic);
}

/**
 * Parses IDX bytes. The magic number is the first four bytes read as one
 * big-endian integer, e.g. 2051 (0x00000803) for unsigned-byte 3-D image
 * arrays and 2049 (0x00000801) for 1-D label arrays.
 */
export function parseIdx(bytes: Uint8Array, file: string, expectedMagic: number): IdxArray {
  if (bytes.length < 4) {
    throw new DatasetError(`${file} is not an IDX file: it has only ${bytes.length} bytes.`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0);
  if (magic !== expectedMagic) {
    throw new DatasetError(
      `${file} has IDX magic number ${magic} (0x${magic.toString(16).padStart(8, '0')}), expected ${expectedMagic} ` +
        `(0x${expectedMagic.toString(16).padStart(8, '0')}). Is it the right file (images vs labels) and not corrupt?`,
    );
  }
  if (bytes[2] !== UNSIGNED_BYTE) {
    throw new DatasetError(`${file} stores IDX type 0x${bytes[2].toString(16)}; only unsigned bytes (0x08) are supported.`);
  }
  const rank = bytes[3];
  const headerBytes = 4 + 4 * rank;
  if (bytes.length < headerBytes) {
    throw new DatasetError(`${file} is truncated: ${bytes.length} bytes is shorter than its ${headerBytes}-byte IDX header.`);
  }
  const dims: number[] = [];
  for (let i = 0; i < rank; i++) dims.push(view.getUint32(4 + 4 * i));
  const valueCount = dims.reduce((a, b) => a * b, 1);
  const expectedLength = headerBytes + valueCount;
  if (bytes.length !== expectedLength) {
    throw new DatasetError(
      `${file} has ${bytes.length} bytes but its header (dims ${dims.join('x')}) implies ${expectedLength}: ` +
        `the file is ${bytes.length < expectedLength ? 'truncated' : 'followed by extra data'}.`,
    );
  }
  return { dims, data: bytes.subarray(headerBytes) };
}
