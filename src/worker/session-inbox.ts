// The worker's side of the control channel during one group session. A step
// spends its time awaiting a batch or the all-reduce, and meanwhile the
// coordinator may commit a step or halt the group; the inbox reads the
// connection in the background so that both are seen at once, whatever the
// step is waiting for. Everything else is queued for the session's loop.

import type { ControlConnection, ControlMessage, HaltMessage } from '../common/protocol/index.js';

/** Thrown out of whatever the session was doing when the coordinator halts the group. */
export class HaltSignal extends Error {
  override name = 'HaltSignal';

  constructor(readonly halt: HaltMessage) {
    super(`the coordinator halted the group at step ${halt.step}`);
  }
}

export class SessionInbox {
  private committed: number;
  private halted: HaltMessage | null = null;
  private readonly queue: ControlMessage[] = [];
  private failure: Error | null = null;
  private wakers: (() => void)[] = [];
  private readonly haltListeners: (() => void)[] = [];

  /** `committed`: the step the group starts from, committed by definition. */
  constructor(private readonly conn: ControlConnection, committed: number) {
    this.committed = committed;
    void this.pump();
  }

  /** The halt, once it has arrived. */
  get halt(): HaltMessage | null {
    return this.halted;
  }

  /** Runs `listener` when a halt arrives (at once if it has): it unblocks waits on sockets, e.g. closes the all-reduce. */
  onHalt(listener: () => void): void {
    if (this.halted) listener();
    else this.haltListeners.push(listener);
  }

  /** The next message for the session's loop; throws HaltSignal once halted, or the connection's error. */
  async next(): Promise<ControlMessage> {
    for (;;) {
      if (this.halted) throw new HaltSignal(this.halted);
      const msg = this.queue.shift();
      if (msg) return msg;
      if (this.failure) throw this.failure;
      await this.changed();
    }
  }

  /** The next message, which must be of `type`. */
  async expect<T extends ControlMessage['type']>(type: T): Promise<Extract<ControlMessage, { type: T }>> {
    const msg = await this.next();
    if (msg.type !== type) throw new Error(`the coordinator sent "${msg.type}" where the protocol expects "${type}"`);
    return msg as Extract<ControlMessage, { type: T }>;
  }

  /** Resolves once `step` is committed; throws HaltSignal if the group is halted first. */
  async committedThrough(step: number): Promise<void> {
    for (;;) {
      if (this.halted) throw new HaltSignal(this.halted);
      if (this.committed >= step) return;
      if (this.failure) throw this.failure;
      await this.changed();
    }
  }

  /** Waits for the halt that must follow a failed all-reduce (the coordinator decides who is lost); always throws. */
  async untilHalted(): Promise<never> {
    for (;;) {
      if (this.halted) throw new HaltSignal(this.halted);
      if (this.failure) throw this.failure;
      await this.changed();
    }
  }

  private async pump(): Promise<void> {
    for (;;) {
      let msg: ControlMessage;
      try {
        msg = await this.conn.receive();
      } catch (err) {
        this.failure = err as Error;
        this.wake();
        return;
      }
      if (msg.type === 'commit') {
        this.committed = Math.max(this.committed, msg.step);
      } else if (msg.type === 'halt') {
        this.halted = msg;
        for (const listener of this.haltListeners.splice(0)) listener();
      } else {
        this.queue.push(msg);
      }
      this.wake();
      // The session ends with these; what follows them is read by the worker's own loop.
      if (msg.type === 'halt' || msg.type === 'done') return;
    }
  }

  private changed(): Promise<void> {
    return new Promise((resolve) => this.wakers.push(resolve));
  }

  private wake(): void {
    for (const wake of this.wakers.splice(0)) wake();
  }
}
