// One end of a control channel: a WebSocket carrying protocol messages, with
// an inbox so that messages arriving before anyone waits for them are kept,
// and a receive that rejects (naming the peer) once the socket is gone.

import type { WebSocket } from 'ws';
import { decodeMessage, encodeMessage } from './codec.js';
import type { ControlMessage, MessageOfType } from './types.js';

/** What a peer's `error` message said: the message and the (1-based) step it failed at, if in a step. */
export interface PeerError {
  message: string;
  step: number | null;
}

/** "failed at step S: message" (or "failed: message" outside a step). */
export function describePeerError({ message, step }: PeerError): string {
  return `failed${step === null ? '' : ` at step ${step}`}: ${message}`;
}

export class ControlConnection {
  private readonly inbox: ControlMessage[] = [];
  private waiter: { resolve: (m: ControlMessage) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;
  /** Resolves when the socket has closed, for whatever reason. */
  readonly closed: Promise<void>;
  /** When the last message of any kind arrived (ms since the epoch), heartbeats included. */
  lastHeard = Date.now();
  /** The close code once closed: 1006 means the peer vanished without a closing handshake (a crash or a cut link). */
  closeCode: number | null = null;
  /**
   * The peer's own account of its failure (its `error` message), kept from
   * the moment it arrives, whoever reads it: the socket closes right after,
   * and the close must not hide the reason.
   */
  peerError: PeerError | null = null;

  constructor(
    private readonly ws: WebSocket,
    /** Who is on the other end, for messages: "rank 2", "127.0.0.1:51234", "coordinator". */
    public peer: string,
  ) {
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (this.failure) return;
      try {
        if (!isBinary) throw new Error('sent a text message; the control channel carries binary msgpack only');
        const msg = decodeMessage(data);
        this.lastHeard = Date.now();
        if (msg.type === 'error') this.peerError ??= { message: msg.message, step: msg.step };
        // Heartbeats only say "alive"; they never reach the protocol's receive order.
        if (msg.type !== 'heartbeat') this.deliver(msg);
      } catch (err) {
        this.fail(new Error(`${this.peer}: ${(err as Error).message}`));
        ws.close(1002, 'protocol error');
      }
    });
    ws.on('error', (err) => this.fail(new Error(`${this.peer}: connection error: ${err.message}`)));
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeCode = code;
        const why = reason.length > 0 ? ` (${reason.toString()})` : code !== 1000 && code !== 1005 ? ` (code ${code})` : '';
        this.fail(new Error(`${this.peer} closed the connection${why}`));
        resolve();
      });
    });
  }

  send(msg: ControlMessage): void {
    if (this.ws.readyState !== this.ws.OPEN) throw this.failure ?? new Error(`${this.peer}: connection is not open`);
    this.ws.send(encodeMessage(msg));
  }

  /** The next message, whatever its type. An `error` message from the peer rejects. */
  receive(): Promise<ControlMessage> {
    const next = this.inbox.shift();
    if (next) return Promise.resolve(next);
    if (this.failure) return Promise.reject(this.failure);
    if (this.waiter) return Promise.reject(new Error(`internal: two concurrent receives on ${this.peer}`));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  /** The next message, which must be of type `type`; the peer's `error` message becomes the rejection. */
  async expect<T extends ControlMessage['type']>(type: T): Promise<MessageOfType<T>> {
    const msg = await this.receive();
    if (msg.type === type) return msg as MessageOfType<T>;
    if (msg.type === 'error') throw new Error(`${this.peer} ${describePeerError(msg)}`);
    if (msg.type === 'refused') throw new Error(`${this.peer} refused this worker: ${msg.reason}`);
    if (msg.type === 'reduce-failed') throw new Error(`${this.peer}: its all-reduce failed: ${msg.message}`);
    throw new Error(`${this.peer} sent "${msg.type}" where the protocol expects "${type}"`);
  }

  /**
   * Withdraws a pending receive, which rejects with `reason`, without taking a
   * message: whatever arrives next stays in the inbox for the next receive.
   */
  interrupt(reason: string): void {
    const w = this.waiter;
    if (!w) return;
    this.waiter = null;
    w.reject(new Error(`${this.peer}: ${reason}`));
  }

  /** The error that ended this connection, or null while it is usable. */
  get failedWith(): Error | null {
    return this.failure;
  }

  /** Gives up on the peer: pending and later receives reject with `reason`, and the socket is dropped. */
  abort(reason: string): void {
    this.fail(new Error(`${this.peer}: ${reason}`));
    this.ws.terminate();
  }

  /** Closes politely; resolves once the socket is closed. */
  async close(code = 1000, reason = ''): Promise<void> {
    if (this.ws.readyState === this.ws.CLOSED) return;
    this.ws.close(code, reason);
    const timer = setTimeout(() => this.ws.terminate(), 2000);
    await this.closed;
    clearTimeout(timer);
  }

  private deliver(msg: ControlMessage): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve(msg);
    } else {
      this.inbox.push(msg);
    }
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(err);
    }
  }
}
