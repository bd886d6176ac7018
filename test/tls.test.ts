// --tls-cert/--tls-key: the coordinator's port speaks only TLS (wss:// for
// workers, https:// for the dashboard); workers trust it through --ca.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import https from 'node:https';
import { execFileSync } from 'node:child_process';
import { expect, test } from 'vitest';
import { DEFAULTS } from '../src/common/training/config.js';
import { runCoordinator } from '../src/coordinator/coordinator.js';
import { runWorker } from '../src/worker/worker.js';
import type { HostPort } from '../src/common/protocol/index.js';

const TOKEN = 'tls-secret-77e0';

test('wss:// with a self-signed certificate: a worker with --ca joins, one without it cannot, plain ws is dropped', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-tls-'));
  const certPath = path.join(dir, 'cert.pem');
  const keyPath = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', keyPath, '-out', certPath], { stdio: 'ignore' });

  const log: string[] = [];
  let onListening: (a: HostPort) => void = () => {};
  const listening = new Promise<HostPort>((resolve) => (onListening = resolve));
  const run = runCoordinator({
    ...DEFAULTS, model: 'resnet18', width: 2, dataset: 'synthetic', backend: 'wasm', trainLimit: 24, testLimit: 8,
    batchSize: 12, epochs: 1, seed: 1, plots: false, out: path.join(dir, 'run'),
  }, {
    workers: 2, localWorkers: 1, port: 0, token: TOKEN, log: (l) => log.push(l), onListening,
    tls: { cert: fs.readFileSync(certPath), key: fs.readFileSync(keyPath), certPath },
  });
  run.catch(() => {});
  const { host, port } = await listening;
  expect(log).toContainEqual(expect.stringMatching(/^listening on wss:\/\/127\.0\.0\.1:\d+\/ddp, .*worker --connect wss:\/\/127\.0\.0\.1:\d+ --ca/));

  await expect(runWorker({ connect: `wss://${host}:${port}`, token: TOKEN }))
    .rejects.toThrow(/cannot reach the coordinator at wss:.*self-signed certificate/);
  await expect(runWorker({ connect: `${host}:${port}`, token: TOKEN })).rejects.toThrow(/cannot reach the coordinator/);
  await expect(runWorker({ connect: `${host}:${port}`, token: TOKEN, caPath: certPath })).rejects.toThrow(/--ca .* is for a TLS coordinator: connect with wss:\/\//);

  // The dashboard is served over https too.
  const status = await new Promise<number>((resolve, reject) => {
    https.get({ host, port, path: '/', ca: fs.readFileSync(certPath) }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', reject);
  });
  expect(status).toBe(200);

  await runWorker({ connect: `wss://${host}:${port}`, token: TOKEN, caPath: certPath });
  const result = await run;
  expect(result.history).toHaveLength(1);
  expect(log.filter((l) => l.startsWith('dropped a connection'))).not.toHaveLength(0);
}, 60_000);
