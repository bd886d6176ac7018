// A protocol fuzz campaign against a live coordinator: 10,000 random and
// mutated frames, before its workers join and while they train. The run must
// finish with exactly the weights of an undisturbed run with the same seed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { DEFAULTS, type TrainConfig } from '../src/common/training/config.js';
import { runCoordinator } from '../src/coordinator/coordinator.js';
import { CONTROL_PATH, encodeMessage, PROTOCOL_VERSION, type HostPort } from '../src/common/protocol/index.js';
import { Rng } from '../src/common/data/rng.js';

const root = path.resolve(import.meta.dirname, '..');
const TOKEN = 'fuzz-secret-4d21';
const FRAMES = 10_000;
const PARALLEL = 16;

const cfg = (): TrainConfig => ({
  ...DEFAULTS, model: 'resnet18', width: 2, dataset: 'synthetic', backend: 'cpu', trainLimit: 48, testLimit: 12,
  batchSize: 12, epochs: 2, seed: 9, plots: false, out: fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-fuzz-')),
});

/** Valid-looking messages an attacker could send (never with the real token), to mutate. */
const templates = [
  encodeMessage({ type: 'hello', protocol: PROTOCOL_VERSION, token: 'attacker', backend: null }),
  encodeMessage({ type: 'data-status', cached: false }),
  encodeMessage({ type: 'ready', ringAddress: { host: '127.0.0.1', port: 9 }, backend: 'cpu' }),
  encodeMessage({ type: 'step', step: 1, lossSum: 1, correct: 0, count: 6, localNonFinite: false, skipped: false, checksum: null, dataMs: 0, gradMs: 1, reduceMs: 1, stepMs: 2, tensors: 10, tensorBytes: 4096 }),
  encodeMessage({ type: 'state', step: 1, checksum: 'x', weights: new Float32Array(8), momentum: null, runningStats: null }),
];

/** Frame i of the campaign: random bytes, or a template with flipped, cut or appended bytes. */
function frame(rng: Rng): Uint8Array {
  if (rng.nextInt(4) === 0) return Uint8Array.from({ length: 1 + rng.nextInt(512) }, () => rng.nextInt(256));
  const base = Uint8Array.from(templates[rng.nextInt(templates.length)]);
  switch (rng.nextInt(3)) {
    case 0: for (let k = 0; k < 1 + rng.nextInt(4); k++) base[rng.nextInt(base.length)] ^= 1 << rng.nextInt(8); return base;
    case 1: return base.subarray(0, rng.nextInt(base.length));
    default: return Uint8Array.from([...base, ...Array.from({ length: 1 + rng.nextInt(64) }, () => rng.nextInt(256))]);
  }
}

/** Sends `count` frames, one connection each, `PARALLEL` at a time; resolves when all connections are closed. */
async function fuzz(address: HostPort, rng: Rng, count: number): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < count) {
      next++;
      const bytes = frame(rng);
      await new Promise<void>((resolve) => {
        const ws = new WebSocket(`ws://${address.host}:${address.port}${CONTROL_PATH}`);
        ws.on('open', () => ws.send(bytes, { binary: rng.nextInt(10) !== 0 }));
        ws.on('error', () => {});
        ws.on('close', () => resolve());
        ws.on('message', () => {}); // a refusal, for late connections
      });
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, lane));
}

test('10,000 fuzzed frames change nothing: the run ends with the undisturbed run\'s weights', async () => {
  const undisturbed = await runCoordinator(cfg(), { workers: 2, port: 0, dashboard: false });

  const log: string[] = [];
  let onListening: (a: HostPort) => void = () => {};
  const listening = new Promise<HostPort>((resolve) => (onListening = resolve));
  const run = runCoordinator(cfg(), { workers: 2, localWorkers: 0, port: 0, token: TOKEN, dashboard: false, helloTimeoutMs: 2000, log: (l) => log.push(l), onListening });
  run.catch(() => {});
  const address = await listening;
  const rng = new Rng(1234);
  const rssBefore = process.memoryUsage().rss;

  await fuzz(address, rng, FRAMES / 2); // in the lobby, before any worker has joined
  const workers = [0, 1].map(() => spawn(process.execPath, [path.join(root, 'dist/src/worker/cli.js'), '--connect', `${address.host}:${address.port}`, '--no-cache'], {
    cwd: root, stdio: 'ignore', env: { ...process.env, TFJS_DDP_TOKEN: TOKEN },
  }));
  const exits = workers.map((w) => new Promise<number | null>((resolve) => w.on('close', resolve)));
  await fuzz(address, rng, FRAMES / 2); // while the run trains
  const result = await run;

  expect(await Promise.all(exits)).toEqual([0, 0]);
  const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  expect(bytesOf(result.state.weights).equals(bytesOf(undisturbed.state.weights))).toBe(true);
  expect(bytesOf(result.state.runningStats).equals(bytesOf(undisturbed.state.runningStats))).toBe(true);
  // Every fuzzed connection got its one line (dropped, refused, or refused as late), and none crashed anything.
  const handled = log.filter((l) => /^(dropped|refused)/.test(l)).length;
  expect(handled).toBeGreaterThanOrEqual(FRAMES);
  expect(process.memoryUsage().rss - rssBefore).toBeLessThan(300 * 1024 * 1024);
}, 300_000);
