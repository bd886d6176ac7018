// Admission of workers before the run starts: each connection must send a
// valid hello in time and pass the token and version checks; ranks are given
// in join order once the run is full, and later connections are refused.

import type { IncomingMessage } from 'node:http';
import type { WebSocket } from 'ws';
import { ControlConnection } from '../common/protocol/index.js';
import type { Admission } from './admission.js';
import type { RunFeed, WorkerView } from './dashboard/run-feed.js';

const HELLO_TIMEOUT_MS = 30_000;

/** Admits workers until the run is full; a worker that leaves before the start frees its place. */
export class Lobby {
  private readonly members: ControlConnection[] = [];
  /** Each member's row on the dashboard. */
  readonly views = new Map<ControlConnection, WorkerView>();
  private readonly pending = new Set<ControlConnection>();
  private resolveFull: (ranks: ControlConnection[]) => void = () => {};
  readonly full: Promise<ControlConnection[]>;

  constructor(
    private readonly size: number,
    private readonly admission: Admission,
    private readonly log: (line: string) => void,
    private readonly feed: RunFeed | null,
    private readonly helloTimeoutMs = HELLO_TIMEOUT_MS,
  ) {
    this.full = new Promise((resolve) => {
      this.resolveFull = resolve;
    });
  }

  /** Connections not yet part of the run (for cleanup). */
  waiting(): ControlConnection[] {
    return [...this.pending];
  }

  async admit(ws: WebSocket, req: IncomingMessage): Promise<void> {
    const from = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    const conn = new ControlConnection(ws, `worker ${from}`);
    this.pending.add(conn);
    let timer: NodeJS.Timeout | undefined;
    try {
      const hello = await Promise.race([
        conn.expect('hello'),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`sent no hello within ${this.helloTimeoutMs / 1000} s`)), this.helloTimeoutMs);
        }),
      ]);
      const reason = this.members.length >= this.size ? 'the run already has all its workers' : this.admission.problem(hello);
      if (reason !== null) {
        this.log(`refused worker ${from}: ${reason}`);
        conn.send({ type: 'refused', reason });
        await conn.close(1008, 'refused');
        return;
      }
    } catch (err) {
      const message = (err as Error).message;
      this.log(`dropped ${message.startsWith(conn.peer) ? message : `${conn.peer}: ${message}`}`);
      await conn.close(1002, 'protocol error');
      return;
    } finally {
      clearTimeout(timer);
      this.pending.delete(conn);
    }
    this.members.push(conn);
    if (this.feed) this.views.set(conn, this.feed.workerJoined(from));
    this.log(`worker ${from} joined (${this.members.length}/${this.size})`);
    if (this.members.length === this.size) {
      this.resolveFull([...this.members]);
      return;
    }
    void conn.closed.then(() => {
      const i = this.members.indexOf(conn);
      if (i >= 0 && this.members.length < this.size) {
        this.members.splice(i, 1);
        const view = this.views.get(conn);
        if (view && this.feed) this.feed.workerUpdate(view, { state: 'failed' });
        this.views.delete(conn);
        this.log(`worker ${from} left before the start (${this.members.length}/${this.size})`);
      }
    });
  }
}

export function refuseLate(ws: WebSocket, log: (line: string) => void): void {
  const conn = new ControlConnection(ws, 'late worker');
  log('refused a late worker: the run has started');
  conn.send({ type: 'refused', reason: 'the run has already started with all its workers' });
  void conn.close(1008, 'refused');
}
