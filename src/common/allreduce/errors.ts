// The all-reduce error type: every failure of a reducer or its links is one,
// naming the peer when known.

/** An all-reduce failure; `peer` names the other end involved, when known. */
export class AllReduceError extends Error {
  override name = 'AllReduceError';
  constructor(
    message: string,
    readonly peer?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
