// Admission of workers: each connection must send a valid hello in time and
// pass the token and version checks. Before the start, workers gather until
// the run is full; ranks are given in join order. After the start, a worker
// is admitted as a spare while the group is below --workers (it replaced a
// lost one, or came back), and joins at the next step boundary; otherwise it
// is refused.

import type { IncomingMessage } from 'node:http';
import type { WebSocket } from 'ws';
import { ControlConnection } from '../common/protocol/index.js';
import type { Admission } from './admission.js';
import type { RunFeed } from './dashboard/run-feed.js';
import type { Member } from './group.js';

const HELLO_TIMEOUT_MS = 30_000;

export class Lobby {
  /** Admitted and not yet in a group: the first group before the start, spares after it. */
  private readonly joined: Member[] = [];
  private readonly pending = new Set<ControlConnection>();
  private resolveFull: (members: Member[]) => void = () => {};
  /** Resolves once --workers have joined; they form the first group. */
  readonly full: Promise<Member[]>;
  /** After the start: how many more workers the run can take (null before the start). */
  private room: (() => number) | null = null;
  private wakers: (() => void)[] = [];

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

  /**
   * The run has started with the first group: from now on a worker is
   * admitted as a spare while `room()` (places left below --workers, spares
   * counted) is positive.
   */
  started(room: () => number): void {
    this.room = room;
  }

  /** Connections not yet part of a group (for cleanup). */
  waiting(): ControlConnection[] {
    return [...this.pending, ...this.joined.map((m) => m.conn)];
  }

  /** Spares waiting to join. */
  get spares(): number {
    return this.room ? this.joined.length : 0;
  }

  /** Removes and returns up to `count` spares, in join order. */
  takeSpares(count: number): Member[] {
    return this.joined.splice(0, Math.max(0, count));
  }

  /** Resolves once `count` spares are waiting. */
  async waitForSpares(count: number): Promise<void> {
    while (this.spares < count) await new Promise<void>((resolve) => this.wakers.push(resolve));
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
      const full = this.room ? this.room() <= 0 : this.joined.length >= this.size;
      const reason = full ? 'the run already has all its workers' : this.admission.problem(hello);
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
    const member: Member = { conn, address: from, view: this.feed ? this.feed.workerJoined(from) : null };
    this.joined.push(member);
    if (this.room) {
      this.log(`worker ${from} joined as a spare; it enters the group at the next step`);
    } else {
      this.log(`worker ${from} joined (${this.joined.length}/${this.size})`);
      if (this.joined.length === this.size) {
        this.resolveFull(this.joined.splice(0));
        return;
      }
    }
    for (const wake of this.wakers.splice(0)) wake();
    void conn.closed.then(() => {
      const i = this.joined.indexOf(member);
      if (i < 0) return; // in a group by now: the group handles its loss
      this.joined.splice(i, 1);
      if (member.view) this.feed?.workerUpdate(member.view, { state: 'failed' });
      this.log(`worker ${from} left before joining a group (${this.room ? `${this.joined.length} spare(s)` : `${this.joined.length}/${this.size}`})`);
    });
  }
}
