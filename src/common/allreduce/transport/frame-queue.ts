// The receive side every Link implementation shares: frames that arrive
// before anyone asks are queued, and once the link has ended, waiting and
// future receivers are rejected with the reason (after the queue drains).

export class FrameQueue {
  private readonly frames: Uint8Array[] = [];
  private head = 0;
  private waiter: { resolve: (f: Uint8Array) => void; reject: (e: Error) => void } | undefined;
  private endError: Error | undefined;

  get ended(): boolean {
    return this.endError !== undefined;
  }

  push(frame: Uint8Array): void {
    if (this.endError) return;
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      waiter.resolve(frame);
    } else {
      this.frames.push(frame);
    }
  }

  /** Marks the end of the stream; the first reason given wins. */
  end(reason: Error): void {
    if (this.endError) return;
    this.endError = reason;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(reason);
  }

  /** Drops queued frames, so that `next` rejects at once (used on local close). */
  discard(): void {
    this.frames.length = 0;
    this.head = 0;
  }

  next(): Promise<Uint8Array> {
    if (this.head < this.frames.length) {
      const frame = this.frames[this.head];
      this.frames[this.head++] = undefined as unknown as Uint8Array; // let GC reclaim it
      if (this.head === this.frames.length) {
        this.frames.length = 0;
        this.head = 0;
      }
      return Promise.resolve(frame);
    }
    if (this.endError) return Promise.reject(this.endError);
    if (this.waiter) {
      return Promise.reject(new Error('Link.recv() called while another recv() is pending; receive sequentially'));
    }
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }
}
