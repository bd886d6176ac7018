// Traffic that is not ours, sent to a live coordinator's port while it waits
// for its workers: each kind is dropped or refused with one log line, and
// the run then starts and finishes with real worker processes.
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { describe, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { Packr } from 'msgpackr';
import { DEFAULTS } from '../src/common/training/config.js';
import { runCoordinator } from '../src/coordinator/coordinator.js';
import { CONTROL_PATH, PROTOCOL_VERSION, type HostPort } from '../src/common/protocol/index.js';

const root = path.resolve(import.meta.dirname, '..');
const TOKEN = 'hostile-input-secret-51c9';
const pack = (v: unknown) => new Packr({ useRecords: false }).pack(v);

/** Opens a control WebSocket, runs `act` once it is open, and resolves when the server has closed it. */
function wsVisit(address: HostPort, act: (ws: WebSocket) => void): Promise<number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://${address.host}:${address.port}${CONTROL_PATH}`);
    ws.on('open', () => act(ws));
    ws.on('error', () => {});
    ws.on('close', (code) => resolve(code));
  });
}

/** Raw TCP: writes `bytes`, then waits for the server to hang up (or gives up after 5 s). */
function tcpVisit(address: HostPort, bytes: Buffer, thenEnd = false): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(address.port, address.host, () => {
      socket.write(bytes);
      if (thenEnd) socket.end();
    });
    socket.on('error', () => {});
    socket.on('close', () => resolve());
    socket.setTimeout(5000, () => socket.destroy());
  });
}

describe('hostile and malformed input on the coordinator port', () => {
  test('every kind is dropped or refused with one log line, and the run still completes', async () => {
    const log: string[] = [];
    let onListening: (a: HostPort) => void = () => {};
    const listening = new Promise<HostPort>((resolve) => (onListening = resolve));
    const run = runCoordinator({
      ...DEFAULTS, model: 'resnet18', width: 2, dataset: 'synthetic', backend: 'wasm', trainLimit: 24, testLimit: 8,
      batchSize: 12, epochs: 1, seed: 1, plots: false, out: fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-hostile-')),
    }, { workers: 2, localWorkers: 0, port: 0, token: TOKEN, helloTimeoutMs: 500, log: (l) => log.push(l), onListening });
    run.catch(() => {});
    const address = await listening;
    const limitLine = log.find((l) => l.startsWith('messages from workers are limited to'))!;
    const limitBytes = Number(/limited to ([\d.]+) MB/.exec(limitLine)![1]) * 1e6;

    const dropped = () => log.filter((l) => l.startsWith('dropped') || l.startsWith('refused'));
    const expectNewLine = async (before: number, pattern: RegExp) => {
      for (let i = 0; i < 100 && dropped().length === before; i++) await new Promise((r) => setTimeout(r, 20));
      expect(dropped().slice(before)).toEqual([expect.stringMatching(pattern)]);
    };

    let n = dropped().length;
    await tcpVisit(address, Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0xde, 0xad, 0xbe, 0xef, 0x0d, 0x0a, 0x0d, 0x0a]));
    await expectNewLine(n, /^dropped a connection from 127\.0\.0\.1:\d+: malformed HTTP/);

    n = dropped().length;
    await wsVisit(address, (ws) => ws.send(Buffer.from([0xc1, 0xc1, 0xff, 0x00, 0x13])));
    await expectNewLine(n, /^dropped worker 127\.0\.0\.1:\d+: undecodable control message/);

    n = dropped().length;
    await wsVisit(address, (ws) => ws.send('{"type":"hello"}'));
    await expectNewLine(n, /^dropped .*sent a text message/);

    n = dropped().length;
    await wsVisit(address, (ws) => ws.send(pack({ type: 'hello', protocol: '1', token: TOKEN, backend: null })));
    await expectNewLine(n, /^dropped .*"hello" message: field "protocol" must be a finite number, got "1"/);

    n = dropped().length;
    await wsVisit(address, (ws) => ws.send(pack({ type: 'step', step: 1 })));
    await expectNewLine(n, /^dropped .*"step" message: field "lossSum" must be a number, got nothing/);

    n = dropped().length;
    await wsVisit(address, (ws) => ws.send(Buffer.alloc(Math.ceil(2 * limitBytes))));
    await expectNewLine(n, /^dropped .*(Max payload size exceeded|code 1009)/);

    n = dropped().length;
    // A WebSocket frame header promising 1000 bytes, then a hang-up after 3 of them.
    await wsVisit(address, (ws) => {
      const raw = (ws as unknown as { _socket: net.Socket })._socket;
      raw.write(Buffer.from([0x82, 0xfe, 0x03, 0xe8, 1, 2, 3, 4, 9, 9, 9]));
      raw.destroy();
    });
    await expectNewLine(n, /^dropped .*closed the connection/);

    n = dropped().length;
    await wsVisit(address, () => {}); // slowloris: connects and says nothing
    await expectNewLine(n, /^dropped worker 127\.0\.0\.1:\d+: sent no hello within 0\.5 s/);

    n = dropped().length;
    await wsVisit(address, (ws) => ws.send(pack({ type: 'hello', protocol: PROTOCOL_VERSION, token: 'guess', backend: null })));
    await expectNewLine(n, /^refused worker .*wrong token/);

    // The real workers still join and the run completes.
    const workers = [0, 1].map(() => spawn(process.execPath, [path.join(root, 'dist/src/worker/cli.js'), '--connect', `${address.host}:${address.port}`, '--no-cache'], {
      cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TFJS_DDP_TOKEN: TOKEN },
    }));
    const exits = workers.map((w) => new Promise<number | null>((resolve) => w.on('close', resolve)));
    const result = await run;
    expect(await Promise.all(exits)).toEqual([0, 0]);
    expect(result.history).toHaveLength(1);
    expect(log.join('\n')).not.toContain(TOKEN);
  }, 90_000);
});
