// How every command turns failures into exit codes: 2 for usage errors (bad
// flags), 1 for runtime errors, always with one readable line instead of a
// bare stack trace. TFJS_DDP_DEBUG=1 adds the stack.

export class UsageError extends Error {
  override name = 'UsageError';
}

export async function runMain(name: string, main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (err) {
    const usage = err instanceof UsageError;
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`${name}: error: ${message}\n`);
    if (process.env.TFJS_DDP_DEBUG && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
    process.exitCode = usage ? 2 : 1;
  }
}
