// The coordinator's one port: HTTP for the dashboard (static files and a
// read-only Server-Sent Events feed) and, on the path /ddp, the WebSocket
// control channel the workers use. The page accepts no commands: only GET
// and HEAD are answered, and nothing it serves holds the token.

import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { RunFeed } from './run-feed.js';

/** Bounded, so a crowd of open pages cannot grow the coordinator's memory without limit. */
const MAX_FEED_CLIENTS = 32;
const KEEPALIVE_MS = 15_000;

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

/** The page's files: ours (kept as plain files in the source tree) and uPlot's, served from its npm package. */
function staticFiles(): Map<string, { file: string; type: string }> {
  // dist/src/coordinator/dashboard -> src/coordinator/dashboard/public: the page needs no build step.
  const root = [path.join(here, 'public'), path.resolve(here, '../../../../src/coordinator/dashboard/public')].find((d) => fs.existsSync(d));
  if (!root) throw new Error(`dashboard files not found next to ${here}; reinstall tfjs-ddp or run with --dashboard false`);
  const uplot = path.dirname(require.resolve('uplot/dist/uPlot.iife.min.js'));
  return new Map([
    ['/', { file: path.join(root, 'index.html'), type: 'text/html; charset=utf-8' }],
    ['/dashboard.js', { file: path.join(root, 'dashboard.js'), type: 'text/javascript; charset=utf-8' }],
    ['/dashboard.css', { file: path.join(root, 'dashboard.css'), type: 'text/css; charset=utf-8' }],
    ['/vendor/uPlot.iife.min.js', { file: path.join(uplot, 'uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' }],
    ['/vendor/uPlot.min.css', { file: path.join(uplot, 'uPlot.min.css'), type: 'text/css; charset=utf-8' }],
  ]);
}

const SECURITY_HEADERS = {
  'X-Content-Type-Options': 'nosniff',
  'Content-Security-Policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
  'Referrer-Policy': 'no-referrer',
};

/** PEM certificate and key: the port then serves https:// and wss:// only. */
export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
  /** Where the certificate came from, so local worker processes can trust it with --ca. */
  certPath: string;
}

/** An HTTP(S) server answering the dashboard's requests, or only 404s when `feed` is null (--dashboard false). */
export function createHttpServer(feed: RunFeed | null, tls: TlsFiles | null = null): http.Server {
  const handler = dashboardHandler(feed);
  return tls ? https.createServer({ cert: tls.cert, key: tls.key }, handler) : http.createServer(handler);
}

function dashboardHandler(feed: RunFeed | null): http.RequestListener {
  const files = feed ? staticFiles() : new Map();
  let feedClients = 0;
  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', ...SECURITY_HEADERS }).end('read-only dashboard\n');
      return;
    }
    if (!feed) {
      res.writeHead(404, SECURITY_HEADERS).end('the dashboard is off (--dashboard false)\n');
      return;
    }
    if (url.pathname === '/events') {
      if (feedClients >= MAX_FEED_CLIENTS) {
        res.writeHead(503, SECURITY_HEADERS).end('too many open dashboards\n');
        return;
      }
      feedClients++;
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive', ...SECURITY_HEADERS });
      const unsubscribe = feed.subscribe((event) => res.write(`data: ${JSON.stringify(event)}\n\n`));
      const keepalive = setInterval(() => res.write(': keepalive\n\n'), KEEPALIVE_MS);
      req.on('close', () => {
        feedClients--;
        clearInterval(keepalive);
        unsubscribe();
      });
      return;
    }
    if (url.pathname === '/api/run') {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache', ...SECURITY_HEADERS }).end(JSON.stringify(feed.snapshot()));
      return;
    }
    const entry = files.get(url.pathname);
    if (!entry) {
      res.writeHead(404, SECURITY_HEADERS).end('not found\n');
      return;
    }
    fs.readFile(entry.file, (err, body) => {
      if (err) {
        res.writeHead(500, SECURITY_HEADERS).end('cannot read a dashboard file\n');
        return;
      }
      res.writeHead(200, { 'Content-Type': entry.type, 'Cache-Control': 'no-cache', ...SECURITY_HEADERS });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
  };
}
