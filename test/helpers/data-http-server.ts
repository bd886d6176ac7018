// A throwaway HTTP server on 127.0.0.1 for the download tests.

import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface LocalServer {
  /** Base URL without a trailing slash, e.g. http://127.0.0.1:41234 */
  url: string;
  /** Paths requested so far, in order. */
  requests: string[];
  close(): Promise<void>;
}

export async function startLocalServer(handler: http.RequestListener): Promise<LocalServer> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(req.url ?? '');
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections(); // stalled test responses would otherwise keep it open
        server.close(() => resolve());
      }),
  };
}

/** A URL on which nothing listens: the port was just released by a closed server. */
export async function unusedLocalUrl(): Promise<string> {
  const server = await startLocalServer(() => {});
  await server.close();
  return `${server.url}/cifar-10-binary.tar.gz`;
}
