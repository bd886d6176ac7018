// Opens the coordinator's port: the HTTP server (dashboard) with the
// workers' WebSocket endpoint at /ddp on the same port.

import type http from 'node:http';
import type { Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import { CONTROL_PATH } from '../common/protocol/index.js';
import { createHttpServer, type TlsFiles } from './dashboard/http-server.js';
import type { RunFeed } from './dashboard/run-feed.js';

export interface ControlServer {
  wss: WebSocketServer;
  http: http.Server;
  port: number;
  close(): Promise<void>;
}

/**
 * `maxMessageBytes` bounds every message a worker may send (the largest is
 * rank 0's state: weights, momentum and BatchNorm statistics), so that an
 * unauthenticated peer cannot make the coordinator buffer more than that.
 */
export async function listenControl(
  host: string, port: number, feed: RunFeed | null, maxMessageBytes: number, log: (line: string) => void, tls: TlsFiles | null = null,
): Promise<ControlServer> {
  const server = createHttpServer(feed, tls);
  // Bytes that are not HTTP at all (port scanners, stray protocols) end here, not in a crash.
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    log(`dropped a connection from ${socket.remoteAddress ?? 'unknown'}:${socket.remotePort ?? '?'}: failed TLS handshake (${err.code ?? err.message})`);
    socket.destroy();
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    log(`dropped a connection from ${socket.remoteAddress ?? 'unknown'}:${socket.remotePort ?? '?'}: malformed HTTP (${err.code ?? err.message})`);
    socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const hint = err.code === 'EADDRINUSE' ? `; another program uses port ${port}: pick another --port` : '';
      reject(new Error(`cannot listen on ${host}:${port}: ${err.message}${hint}`));
    });
    server.listen(port, host, () => resolve());
  });
  const wss = new WebSocketServer({ server, path: CONTROL_PATH, maxPayload: maxMessageBytes, perMessageDeflate: false });
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
