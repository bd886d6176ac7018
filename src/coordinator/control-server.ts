// Opens the coordinator's port: the HTTP server (dashboard) with the
// workers' WebSocket endpoint at /ddp on the same port.

import type http from 'node:http';
import { WebSocketServer } from 'ws';
import { CONTROL_PATH } from '../common/protocol/index.js';
import { createHttpServer } from './dashboard/http-server.js';
import type { RunFeed } from './dashboard/run-feed.js';

/** Large enough for the initial state of ResNet152 width 64 (weights + momentum, about 470 MB) and a CIFAR-10 blob. */
const MAX_CONTROL_MESSAGE_BYTES = 1024 * 1024 * 1024;

export interface ControlServer {
  wss: WebSocketServer;
  http: http.Server;
  port: number;
  close(): Promise<void>;
}

export async function listenControl(host: string, port: number, feed: RunFeed | null): Promise<ControlServer> {
  const server = createHttpServer(feed);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const hint = err.code === 'EADDRINUSE' ? `; another program uses port ${port}: pick another --port` : '';
      reject(new Error(`cannot listen on ${host}:${port}: ${err.message}${hint}`));
    });
    server.listen(port, host, () => resolve());
  });
  const wss = new WebSocketServer({ server, path: CONTROL_PATH, maxPayload: MAX_CONTROL_MESSAGE_BYTES });
  return {
    wss,
    http: server,
    port: (server.address() as { port: number }).port,
    close: async () => {
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      server.closeAllConnections(); // open dashboards (SSE) would otherwise keep it alive
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
