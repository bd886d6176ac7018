// The control channel's encoding, validation and admission rules.
import { describe, expect, test } from 'vitest';
import {
  configHash, decodeMessage, describePeerError, encodeMessage, PROTOCOL_VERSION, ProtocolError, stateChecksum,
} from '../src/common/protocol/index.js';
import { Admission, resolveToken } from '../src/coordinator/admission.js';
import { DEFAULTS } from '../src/common/training/config.js';
import { Packr } from 'msgpackr';

describe('control messages', () => {
  test('init round-trips, weights included, byte for byte', () => {
    const weights = Float32Array.from({ length: 1001 }, (_, i) => Math.sin(i) * 1e-3);
    const msg = {
      type: 'init', rank: 2, worldSize: 3, config: DEFAULTS, configHash: configHash(DEFAULTS),
      datasetHash: 'ab'.repeat(32), datasetBytes: 1234, weights, momentum: weights.map((w) => -w), runningStats: new Float32Array(4).fill(1),
      stateIncluded: true, stateChecksum: '', step: 7, allreduce: 'ring', wire: 'bf16', tag: 77, checksumEvery: 50, heartbeatMs: 5000,
    } as const;
    const back = decodeMessage(encodeMessage(msg));
    expect(back).toEqual({ ...msg, weights: expect.any(Float32Array), momentum: expect.any(Float32Array), runningStats: expect.any(Float32Array) });
    if (back.type !== 'init') throw new Error('wrong type');
    expect(stateChecksum(back.weights)).toBe(stateChecksum(weights));
    expect(stateChecksum(back.momentum)).toBe(stateChecksum(msg.momentum));
    expect(configHash(back.config)).toBe(msg.configHash);
    // From a coordinator that predates --wire: no field, read as null (the worker then uses fp32).
    const { wire: _omitted, ...older } = msg;
    expect(decodeMessage(encodeMessage(older))).toMatchObject({ type: 'init', wire: null });

    // A survivor's init in a re-formed group: no weights or momentum, the checksum of its own instead.
    const survivor = decodeMessage(encodeMessage({ ...msg, weights: new Float32Array(0), momentum: new Float32Array(0), stateIncluded: false, stateChecksum: 'c0ffee' }));
    if (survivor.type !== 'init') throw new Error('wrong type');
    expect([survivor.weights.length, survivor.momentum.length, survivor.runningStats.length]).toEqual([0, 0, 4]);
    expect([survivor.stateIncluded, survivor.stateChecksum]).toEqual([false, 'c0ffee']);
  });

  test('malformed messages are rejected with the field and the problem', () => {
    const raw = (v: unknown) => new Packr({ useRecords: false }).pack(v);
    expect(() => decodeMessage(raw({ type: 'hello', protocol: '1', token: 'x', backend: null })))
      .toThrow(new ProtocolError('"hello" message: field "protocol" must be a finite number, got "1"'));
    expect(() => decodeMessage(raw({ type: 'ready', backend: 'cpu', ringAddress: { host: 'h', port: 70000 } }))).toThrow(/ringAddress.*\{host, port\}/);
    expect(() => decodeMessage(raw({ type: 'launch' }))).toThrow(/unknown control message type "launch"/);
    expect(() => decodeMessage(raw({ type: 'data-status', cached: 'yes' }))).toThrow(/"cached" must be true or false/);
    expect(() => decodeMessage(raw({ type: 'dataset', hash: 'x', blob: 'not bytes' }))).toThrow(/"blob" must be bytes/);
    expect(() => decodeMessage(raw({ type: 'state', step: 1, checksum: 'c', weights: new Uint8Array(5) }))).toThrow(/"weights" must be float32 bytes/);
    expect(() => decodeMessage(raw([1, 2]))).toThrow(/not a map/);
    expect(() => decodeMessage(new Uint8Array([0xc1]))).toThrow(ProtocolError);
  });

  test('error carries the step it failed at; an older worker\'s error, without one, reads as null', () => {
    const raw = (v: unknown) => new Packr({ useRecords: false }).pack(v);
    expect(decodeMessage(encodeMessage({ type: 'error', message: 'out of memory', step: 7 }))).toEqual({ type: 'error', message: 'out of memory', step: 7 });
    expect(decodeMessage(encodeMessage({ type: 'error', message: 'bad dataset', step: null }))).toEqual({ type: 'error', message: 'bad dataset', step: null });
    expect(decodeMessage(raw({ type: 'error', message: 'old worker' }))).toEqual({ type: 'error', message: 'old worker', step: null });
    expect(() => decodeMessage(raw({ type: 'error', message: 'x', step: '7' }))).toThrow(/"error" message: field "step" must be a finite number, got "7"/);
    expect(describePeerError({ message: 'out of memory', step: 7 })).toBe('failed at step 7: out of memory');
    expect(describePeerError({ message: 'bad dataset', step: null })).toBe('failed: bad dataset');
  });

  test('the config hash ignores key order and sees every value', () => {
    expect(configHash({ a: 1, b: [1, 2] })).toBe(configHash({ b: [1, 2], a: 1 }));
    expect(configHash({ ...DEFAULTS, lr: 0.05 })).not.toBe(configHash(DEFAULTS));
  });
});

describe('admission', () => {
  const admission = new Admission('correct horse');
  const hello = (token: string, protocol = PROTOCOL_VERSION) => ({ type: 'hello' as const, protocol, token, backend: null });

  test('accepts the right token and version, refuses others without echoing the token', () => {
    expect(admission.problem(hello('correct horse'))).toBeNull();
    const wrong = admission.problem(hello('correct hors'));
    expect(wrong).toMatch(/^wrong token/);
    expect(wrong).not.toMatch(/hors/);
    expect(admission.problem(hello('correct horse', 1))).toMatch(/protocol version 1 is not supported/);
  });

  test('remote workers need a token; all-local runs get a random one', () => {
    const saved = process.env.TFJS_DDP_TOKEN;
    delete process.env.TFJS_DDP_TOKEN;
    try {
      expect(() => resolveToken(undefined, 1)).toThrow(/pass --token/);
      expect(resolveToken('given', 1)).toBe('given');
      const a = resolveToken(undefined, 0);
      expect(a.length).toBeGreaterThanOrEqual(32);
      expect(resolveToken(undefined, 0)).not.toBe(a);
    } finally {
      if (saved !== undefined) process.env.TFJS_DDP_TOKEN = saved;
    }
  });
});
