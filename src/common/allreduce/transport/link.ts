// The all-reduce algorithms talk to their peers only through `Link`, so the
// same ring/star code runs over WebSockets in production and over an
// in-memory queue in tests.

/**
 * An ordered, reliable, message-oriented duplex channel carrying binary
 * frames to one peer.
 *
 * Contract:
 * - Frames arrive whole and in the order they were sent.
 * - `send` may keep a reference to `frame` until its promise settles (the
 *   WebSocket link writes it to the socket without copying), so the caller
 *   must not modify the bytes before then. The promise resolving is also the
 *   backpressure signal.
 * - `recv` returns the next frame. Frames that arrived before anyone asked
 *   are queued, so a peer may run ahead by a step without losing data. Once
 *   the peer has closed the link (or the link failed) and the queue is
 *   drained, `recv` rejects with an Error naming the peer.
 * - Received frames belong to the receiver, which may modify them in place
 *   (the ring adds into them and forwards them). Their byteOffset may be any
 *   value, not necessarily a multiple of 4.
 */
export interface Link {
  /** Who is on the other end, for error messages, e.g. "rank 3" or "hub". */
  readonly peer: string;
  /** Largest frame (header included) the peer will accept, in bytes. */
  readonly maxFrameBytes: number;
  send(frame: Uint8Array): Promise<void>;
  recv(): Promise<Uint8Array>;
  /** Closes the link; pending and future `recv` calls on both ends reject. */
  close(): Promise<void>;
}

/** The two links one ring rank uses: data flows prev -> this rank -> next. */
export interface RingLinks {
  rank: number;
  worldSize: number;
  /** Link on which this rank sends to rank (rank + 1) % worldSize. */
  toNext: Link;
  /** Link on which this rank receives from rank (rank - 1 + worldSize) % worldSize. */
  fromPrev: Link;
}
