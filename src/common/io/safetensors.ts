// Reader and writer for the safetensors format (https://github.com/huggingface/safetensors),
// so checkpoints and golden fixtures are interchangeable with PyTorch.
//
// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON header (padded with
// spaces to a multiple of 8 so the data section starts 8-byte aligned), then the raw
// little-endian tensor bytes. Header entries: `"<name>": { dtype, shape, data_offsets }`
// with offsets relative to the start of the data section, plus an optional
// `"__metadata__": { string: string }`.

export type SafetensorsDtype = 'F64' | 'F32' | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL';

export type TensorData =
  | Float64Array
  | Float32Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | BigUint64Array
  | Uint32Array
  | Uint16Array
  | Uint8Array;

export interface SafetensorsTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: TensorData;
}

export interface SafetensorsContents {
  metadata: Record<string, string>;
  /** In data-section order, so re-encoding reproduces the original layout. */
  tensors: Map<string, SafetensorsTensor>;
}

export type TensorInput = Map<string, SafetensorsTensor> | Record<string, SafetensorsTensor>;

/**
 * `truncated`: the bytes end before the header says they should (typically a file whose
 * write was interrupted); `malformed`: anything else that is structurally wrong;
 * `unsupported`: well-formed but uses something this reader cannot represent.
 */
export type SafetensorsProblem = 'truncated' | 'malformed' | 'unsupported';

export class SafetensorsError extends Error {
  constructor(
    readonly problem: SafetensorsProblem,
    message: string,
  ) {
    super(message);
    this.name = 'SafetensorsError';
  }
}

interface DtypeInfo {
  bytes: number;
  // Typed-array constructors differ in their element type, so keep them loosely typed here
  // and narrow through TensorData at the call sites.
  array: {
    new (buffer: ArrayBufferLike, byteOffset: number, length: number): TensorData;
    readonly name: string;
  };
}

const DTYPES: Record<SafetensorsDtype, DtypeInfo> = {
  F64: { bytes: 8, array: Float64Array },
  F32: { bytes: 4, array: Float32Array },
  I64: { bytes: 8, array: BigInt64Array },
  I32: { bytes: 4, array: Int32Array },
  I16: { bytes: 2, array: Int16Array },
  I8: { bytes: 1, array: Int8Array },
  U64: { bytes: 8, array: BigUint64Array },
  U32: { bytes: 4, array: Uint32Array },
  U16: { bytes: 2, array: Uint16Array },
  U8: { bytes: 1, array: Uint8Array },
  BOOL: { bytes: 1, array: Uint8Array },
};

const METADATA_KEY = '__metadata__';
/** Same cap as the reference Rust implementation: protects against absurd header lengths. */
const MAX_HEADER_BYTES = 100_000_000;
const HEADER_ALIGNMENT = 8;

/** Typed arrays use host byte order and the format is little-endian; we only support LE hosts. */
function assertLittleEndianHost(): void {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    throw new SafetensorsError('unsupported', 'safetensors I/O requires a little-endian host (x86-64, arm64)');
  }
}

export function isSafetensorsDtype(value: unknown): value is SafetensorsDtype {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(DTYPES, value);
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

// ---------------------------------------------------------------------------------------
// Reading

/**
 * Parses and validates a safetensors buffer. Tensors whose bytes are suitably aligned are
 * returned as views into `bytes` (no copy, so they share memory with it); unaligned ones
 * (e.g. an I64 after an odd number of F32 values) are copied into fresh aligned arrays.
 * `source` names the data in error messages (usually the file path).
 */
export function readSafetensors(bytes: Uint8Array, source = 'safetensors data'): SafetensorsContents {
  assertLittleEndianHost();
  const fail = (problem: SafetensorsProblem, what: string): never => {
    throw new SafetensorsError(problem, `${source}: ${what}`);
  };

  if (bytes.byteLength < 8) {
    fail('truncated', `only ${bytes.byteLength} bytes; a safetensors file starts with an 8-byte header length`);
  }
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    fail('malformed', `header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit; this is not a safetensors file`);
  }
  const dataStart = 8 + Number(headerLength);
  if (dataStart > bytes.byteLength) {
    fail('truncated', `header claims ${headerLength} bytes but only ${bytes.byteLength - 8} follow the length prefix`);
  }

  let headerText: string;
  try {
    headerText = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, dataStart));
  } catch {
    return fail('malformed', 'header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (err) {
    return fail('malformed', `header is not valid JSON (${(err as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    fail('malformed', 'header JSON must be an object');
  }

  const metadata: Record<string, string> = {};
  const entries: Array<{ name: string; dtype: SafetensorsDtype; shape: number[]; begin: number; end: number }> = [];
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        fail('malformed', `"${METADATA_KEY}" must be an object of strings`);
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') fail('malformed', `"${METADATA_KEY}.${k}" must be a string, got ${typeof v}`);
        metadata[k] = v as string;
      }
      continue;
    }
    entries.push(parseEntry(name, value, fail));
  }

  // Entries must tile the data section exactly: no overlap (two tensors aliasing bytes),
  // no gaps (unaccounted bytes), nothing past the end.
  const dataLength = bytes.byteLength - dataStart;
  const byOffset = entries
    .map((e, order) => ({ e, order }))
    .sort((a, b) => a.e.begin - b.e.begin || a.e.end - b.e.end || a.order - b.order)
    .map(({ e }) => e);
  let cursor = 0;
  let previous = '';
  for (const e of byOffset) {
    if (e.begin < cursor) fail('malformed', `tensor "${e.name}" [${e.begin}, ${e.end}) overlaps "${previous}" which ends at ${cursor}`);
    if (e.begin > cursor) fail('malformed', `gap in the data section: bytes [${cursor}, ${e.begin}) belong to no tensor (before "${e.name}")`);
    if (e.end > dataLength) {
      fail('truncated', `tensor "${e.name}" ends at data byte ${e.end} but the data section has only ${dataLength} bytes`);
    }
    cursor = e.end;
    previous = e.name;
  }
  if (cursor !== dataLength) {
    fail('malformed', `${dataLength - cursor} trailing bytes after the last tensor (data section is ${dataLength} bytes, tensors cover ${cursor})`);
  }

  const tensors = new Map<string, SafetensorsTensor>();
  for (const e of byOffset) {
    const info = DTYPES[e.dtype];
    const absolute = bytes.byteOffset + dataStart + e.begin;
    const count = (e.end - e.begin) / info.bytes;
    const data =
      absolute % info.bytes === 0
        ? new info.array(bytes.buffer, absolute, count)
        : // A copy into a fresh array: Buffer.slice (readFileSync returns Buffers) makes a view,
          // whose .buffer is the whole file, not the tensor.
          new info.array(new Uint8Array(bytes.subarray(dataStart + e.begin, dataStart + e.end)).buffer, 0, count);
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data });
  }
  return { metadata, tensors };
}

function parseEntry(
  name: string,
  value: unknown,
  fail: (problem: SafetensorsProblem, what: string) => never,
): { name: string; dtype: SafetensorsDtype; shape: number[]; begin: number; end: number } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail('malformed', `tensor "${name}" must be an object with dtype, shape and data_offsets`);
  }
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== 'string') fail('malformed', `tensor "${name}" has no dtype`);
  if (!isSafetensorsDtype(dtype)) {
    fail('unsupported', `tensor "${name}" has dtype ${String(dtype)}; supported: ${Object.keys(DTYPES).join(', ')}`);
  }
  const isIndex = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;
  if (!Array.isArray(shape) || !shape.every(isIndex)) {
    fail('malformed', `tensor "${name}" shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex) || offsets[0] > offsets[1]) {
    fail('malformed', `tensor "${name}" data_offsets must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  const dt = dtype as SafetensorsDtype;
  const expected = elementCount(shape as number[]) * DTYPES[dt].bytes;
  if (end - begin !== expected) {
    fail('malformed', `tensor "${name}" (${dt} ${JSON.stringify(shape)}) needs ${expected} bytes but data_offsets span ${end - begin}`);
  }
  return { name, dtype: dt, shape: shape as number[], begin, end };
}

// ---------------------------------------------------------------------------------------
// Writing

export interface LayoutEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
  /** View of the tensor's bytes (no copy). */
  bytes: Uint8Array;
}

export interface SafetensorsLayout {
  entries: LayoutEntry[];
  dataLength: number;
}

/**
 * Validates tensors and assigns them consecutive data offsets in iteration order. Split from
 * encoding so a caller can stream the data (and hash it) without building one big buffer.
 */
export function layoutTensors(tensors: TensorInput): SafetensorsLayout {
  assertLittleEndianHost();
  const pairs = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const entries: LayoutEntry[] = [];
  let offset = 0;
  for (const [name, t] of pairs) {
    if (name === '' || name === METADATA_KEY) throw new SafetensorsError('malformed', `invalid tensor name ${JSON.stringify(name)}`);
    if (!isSafetensorsDtype(t.dtype)) {
      throw new SafetensorsError('unsupported', `tensor "${name}" has dtype ${String(t.dtype)}; supported: ${Object.keys(DTYPES).join(', ')}`);
    }
    const info = DTYPES[t.dtype];
    if (!(t.data instanceof info.array)) {
      throw new SafetensorsError('malformed', `tensor "${name}" is ${t.dtype} so its data must be a ${info.array.name}, got ${t.data?.constructor?.name}`);
    }
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || elementCount(t.shape) !== t.data.length) {
      throw new SafetensorsError('malformed', `tensor "${name}" shape ${JSON.stringify(t.shape)} does not match its ${t.data.length} elements`);
    }
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    entries.push({ name, dtype: t.dtype, shape: [...t.shape], begin: offset, end: offset + bytes.byteLength, bytes });
    offset += bytes.byteLength;
  }
  return { entries, dataLength: offset };
}

/** The 8-byte length prefix plus the space-padded JSON header; the data section follows it. */
export function encodeHeader(layout: SafetensorsLayout, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = {};
  // The key order matches PyTorch's writer (metadata first, then data order), which is what
  // makes re-encoding a decoded file byte-identical.
  if (Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new SafetensorsError('malformed', `metadata "${k}" must be a string, got ${typeof v}`);
    }
    header[METADATA_KEY] = metadata;
  }
  for (const e of layout.entries) {
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [e.begin, e.end] };
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.byteLength / HEADER_ALIGNMENT) * HEADER_ALIGNMENT;
  const out = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

/** Encodes tensors (in iteration order) and string metadata into one safetensors buffer. */
export function encodeSafetensors(tensors: TensorInput, metadata: Record<string, string> = {}): Uint8Array {
  const layout = layoutTensors(tensors);
  const header = encodeHeader(layout, metadata);
  const out = new Uint8Array(header.byteLength + layout.dataLength);
  out.set(header, 0);
  for (const e of layout.entries) out.set(e.bytes, header.byteLength + e.begin);
  return out;
}
