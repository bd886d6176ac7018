// Two ends of a real control channel over a loopback WebSocket, for unit tests
// of what sits on either end (the session inbox, the watchdog).
import type { AddressInfo } from 'node:net';
import { afterEach } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { ControlConnection } from '../../src/common/protocol/index.js';

export interface ControlPair {
  /** The coordinator's end. */
  coordinator: ControlConnection;
  /** The worker's end. */
  worker: ControlConnection;
  /** The coordinator's raw socket, to send what ControlConnection never would. */
  raw: WebSocket;
}

const servers: WebSocketServer[] = [];
afterEach(async () => {
  for (const wss of servers.splice(0)) {
    for (const ws of wss.clients) ws.terminate();
    await new Promise((resolve) => wss.close(resolve));
  }
});

/** `workerName` is how the coordinator's end names its peer in errors. */
export async function controlPair(workerName = 'worker'): Promise<ControlPair> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  servers.push(wss);
  await new Promise((resolve) => wss.once('listening', resolve));
  const accepted = new Promise<WebSocket>((resolve) => wss.once('connection', resolve));
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
  await new Promise((resolve, reject) => client.once('open', resolve).once('error', reject));
  const raw = await accepted;
  return { coordinator: new ControlConnection(raw, workerName), worker: new ControlConnection(client, 'coordinator'), raw };
}
