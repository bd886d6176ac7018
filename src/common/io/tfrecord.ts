// TFRecord framing, the container of TensorBoard event files (TensorFlow's
// tensorflow/core/lib/io/record_writer.cc). Each record is
//
//   uint64 LE  length of data
//   uint32 LE  masked crc32c of those 8 length bytes
//   bytes      data
//   uint32 LE  masked crc32c of data
//
// with CRC-32C (Castagnoli) masked as ((crc >>> 15) | (crc << 17)) + 0xa282ead8,
// so that a CRC stored inside data does not weaken the CRC of data.
// CRC-32C comes from @node-rs/crc32 (a prebuilt napi-rs addon, like
// @napi-rs/canvas: no build step at install).

import { crc32c as nativeCrc32c } from '@node-rs/crc32';

const MASK_DELTA = 0xa282ead8;

/** CRC-32C (Castagnoli) of `data`, as an unsigned 32-bit number; crc32c("123456789") = 0xe3069283. */
export function crc32c(data: Uint8Array): number {
  return nativeCrc32c(data) >>> 0;
}

/** TensorFlow's masked CRC-32C: rotate right by 15 bits, add 0xa282ead8 (mod 2^32). */
export function maskedCrc32c(data: Uint8Array): number {
  const crc = crc32c(data);
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + MASK_DELTA) >>> 0;
}

/** One record: `data` framed with its length and both masked CRCs. */
export function tfrecord(data: Uint8Array): Buffer {
  const out = Buffer.alloc(8 + 4 + data.byteLength + 4);
  out.writeBigUInt64LE(BigInt(data.byteLength), 0);
  out.writeUInt32LE(maskedCrc32c(out.subarray(0, 8)), 8);
  out.set(data, 12);
  out.writeUInt32LE(maskedCrc32c(data), 12 + data.byteLength);
  return out;
}
