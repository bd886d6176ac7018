// Encoding of control messages: msgpack, with Float32Arrays sent as raw
// little-endian bytes (msgpack `bin`), and a shape check on every message
// received, so a bad or foreign peer produces one clear error instead of a
// crash deep in the training code.

import { createHash } from 'node:crypto';
import { Packr } from 'msgpackr';
import type { ControlMessage } from './types.js';

/** A message that does not follow the protocol; the text says what is wrong. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

type FieldKind =
  | 'string' | 'number' | 'float' | 'boolean' | 'object' | 'f32' | 'u8' | 'address' | 'ranks'
  | 'string?' | 'number?' | 'boolean?' | 'object?' | 'f32?' | 'address?' | 'ranks?';

/** Most ranks a `ranks` field may list (a group is far smaller). */
const MAX_RANKS = 65_536;

/** Field kinds of every message type; validation rejects missing or mistyped fields. */
const SCHEMA: Record<ControlMessage['type'], Record<string, FieldKind>> = {
  hello: { protocol: 'number', token: 'string', backend: 'string?' },
  // localRegion, hierarchical and connect's reducer, localRanks and ringRanks are optional:
  // peers before them send none, and ignore them.
  ready: { ringAddress: 'address?', backend: 'string', localRegion: 'string?', hierarchical: 'boolean?' },
  // lossSum may be NaN or Inf on a bad step, which the coordinator reports and skips.
  step: {
    step: 'number', lossSum: 'float', correct: 'number', count: 'number', localNonFinite: 'boolean', skipped: 'boolean',
    checksum: 'string?', dataMs: 'number', gradMs: 'number', reduceMs: 'number', stepMs: 'number', tensors: 'number', tensorBytes: 'number',
    // Optional: only with --timeline, and absent from workers before it; its inside is checked by unpackEvents.
    timeline: 'object?',
  },
  eval: { epoch: 'number', lossSum: 'number', correct: 'number', count: 'number' },
  'data-status': { cached: 'boolean' },
  state: { step: 'number', checksum: 'string', weights: 'f32?', momentum: 'f32?', runningStats: 'f32?' },
  heartbeat: {},
  'reduce-failed': { message: 'string' },
  halted: { step: 'number', checksum: 'string', runningStats: 'f32' },
  // step is optional: workers before it was added send only the message.
  error: { message: 'string', step: 'number?' },
  refused: { reason: 'string' },
  init: {
    rank: 'number', worldSize: 'number', config: 'object', configHash: 'string', datasetHash: 'string', datasetBytes: 'number',
    weights: 'f32', momentum: 'f32', runningStats: 'f32', stateIncluded: 'boolean', stateChecksum: 'string', step: 'number', allreduce: 'string', wire: 'string?', tag: 'number', checksumEvery: 'number', heartbeatMs: 'number',
  },
  dataset: { hash: 'string', blob: 'u8' },
  connect: { peer: 'address?', reducer: 'string?', localRanks: 'ranks?', ringRanks: 'ranks?' },
  epoch: { epoch: 'number', from: 'number', steps: 'number' },
  snapshot: {},
  done: {},
  commit: { step: 'number' },
  evaluate: { epoch: 'number' },
  halt: { step: 'number' },
};

// useRecords false: plain msgpack maps, readable by any msgpack library.
const packr = new Packr({ useRecords: false });

export function encodeMessage(msg: ControlMessage): Uint8Array {
  const plain: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(msg)) {
    plain[key] = value instanceof Float32Array ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength) : value;
  }
  return packr.pack(plain);
}

/** Decodes and validates one message; throws ProtocolError naming the problem. */
export function decodeMessage(data: Uint8Array): ControlMessage {
  let value: unknown;
  try {
    value = packr.unpack(data);
  } catch (err) {
    throw new ProtocolError(`undecodable control message (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ProtocolError('control message is not a map');
  const record = value as Record<string, unknown>;
  const type = record.type;
  if (typeof type !== 'string' || !Object.hasOwn(SCHEMA, type)) {
    throw new ProtocolError(`unknown control message type ${JSON.stringify(type)}`);
  }
  for (const [field, kind] of Object.entries(SCHEMA[type as ControlMessage['type']])) {
    record[field] = checkField(type, field, kind, record[field]);
  }
  return record as unknown as ControlMessage;
}

function checkField(type: string, field: string, kind: FieldKind, v: unknown): unknown {
  const optional = kind.endsWith('?');
  if (optional && (v === null || v === undefined)) return null;
  const bad = (expected: string): never => {
    throw new ProtocolError(`"${type}" message: field "${field}" must be ${expected}, got ${describe(v)}`);
  };
  switch (kind.replace('?', '')) {
    case 'string':
      return typeof v === 'string' ? v : bad('a string');
    case 'number':
      return typeof v === 'number' && Number.isFinite(v) ? v : bad('a finite number');
    case 'float':
      return typeof v === 'number' ? v : bad('a number');
    case 'boolean':
      return typeof v === 'boolean' ? v : bad('true or false');
    case 'object':
      return typeof v === 'object' && v !== null && !Array.isArray(v) ? v : bad('a map');
    case 'f32': {
      if (!(v instanceof Uint8Array) || v.byteLength % 4 !== 0) return bad('float32 bytes');
      // Copy: the received bytes may sit at an offset a Float32Array cannot view.
      return new Float32Array(Uint8Array.prototype.slice.call(v).buffer);
    }
    case 'u8':
      return v instanceof Uint8Array ? v : bad('bytes');
    case 'ranks': {
      const ok = Array.isArray(v) && v.length <= MAX_RANKS && v.every((r) => Number.isSafeInteger(r) && (r as number) >= 0);
      return ok ? [...(v as number[])] : bad(`a list of at most ${MAX_RANKS} ranks (non-negative integers)`);
    }
    case 'address': {
      const a = v as { host?: unknown; port?: unknown } | null;
      const ok = typeof a === 'object' && a !== null && typeof a.host === 'string' &&
        Number.isInteger(a.port) && (a.port as number) > 0 && (a.port as number) < 65536;
      return ok ? { host: a.host, port: a.port } : bad('{host, port}');
    }
    default:
      throw new Error(`internal: unknown field kind ${kind}`);
  }
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v instanceof Uint8Array) return `${v.byteLength} bytes`;
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** sha256 of the config's JSON with sorted keys: equal configs hash equally on every machine. */
export function configHash(config: object): string {
  return createHash('sha256').update(canonicalJson(config)).digest('hex');
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * Short fingerprint of float vectors' exact bytes, compared across ranks: the
 * first 16 hex digits (64 bits) of the SHA-256 of their concatenation, hashed
 * part by part without making it. Replicas pass weights and momentum (and, at
 * snapshots, the running statistics); see ReplicaState.
 */
export function stateChecksum(...parts: Float32Array[]): string {
  const hash = createHash('sha256');
  for (const p of parts) hash.update(new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
  return hash.digest('hex').slice(0, 16);
}
