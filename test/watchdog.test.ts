// The coordinator's watchdog over real control connections (a WebSocket pair
// on loopback per worker), with the clock and the check interval faked: who
// it gives up on, when, and what the connection then says.
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import type { ControlConnection } from '../src/common/protocol/index.js';
import { Watchdog, type WatchdogOptions } from '../src/coordinator/watchdog.js';
import { controlPair, type ControlPair } from './helpers/control-pair.js';

const TIMEOUT_MS = 5000;
const FIRST_STEP_ALLOWANCE_MS = 10 * 60_000;
const CHECK_EVERY_MS = 250;

const watchdogs: Watchdog[] = [];

beforeEach(() => {
  // Only the clock and the watchdog's interval: the sockets keep their real timers.
  vi.useFakeTimers({ toFake: ['Date', 'setInterval', 'clearInterval'] });
});

afterEach(() => {
  for (const w of watchdogs.splice(0)) w.stop();
  vi.useRealTimers();
});

function watch(members: () => ControlConnection[], timeoutMs = TIMEOUT_MS, options?: WatchdogOptions): Watchdog {
  const w = new Watchdog(members, timeoutMs, options);
  watchdogs.push(w);
  return w;
}

/** A heartbeat from the worker, once the coordinator's end has read it (at the fake clock's now). */
async function heartbeat(pair: ControlPair): Promise<void> {
  pair.worker.send({ type: 'heartbeat' });
  while (pair.coordinator.lastHeard !== Date.now()) await new Promise((resolve) => setImmediate(resolve));
}

describe('Watchdog', () => {
  test('before any step is measured, a worker may stay silent for --worker-timeout plus 10 minutes', async () => {
    const pair = await controlPair('rank 1');
    const silentSince = pair.coordinator.lastHeard;
    watch(() => [pair.coordinator]);
    const pending = pair.coordinator.receive().catch((err: Error) => err);

    vi.advanceTimersByTime(silentSince + TIMEOUT_MS + FIRST_STEP_ALLOWANCE_MS - Date.now());
    expect(pair.coordinator.failedWith).toBeNull();
    vi.advanceTimersByTime(CHECK_EVERY_MS);
    const failure = pair.coordinator.failedWith;
    // It names the allowance it applied, and gives no GPU advice to a run that is not on tensorflow.
    expect(failure?.message).toMatch(new RegExp('^rank 1: sent nothing for 605\\.\\d s \\(--worker-timeout 5 s plus the first-step allowance, 600 s ' +
      '\\(--first-step-timeout\\), as no step has been measured yet\\): hung, stopped or cut off, or still starting$'));

    // Whatever the run was waiting for from it fails with that message, and the socket is dropped
    // without a closing handshake, as for a crash.
    expect(await pending).toBe(failure);
    await pair.worker.closed;
    expect(pair.worker.closeCode).toBe(1006);
  });

  test('--first-step-timeout sets the allowance before the first step, and the message states it', async () => {
    const pair = await controlPair('rank 0');
    const silentSince = pair.coordinator.lastHeard;
    watch(() => [pair.coordinator], 2000, { firstStepAllowanceMs: 3000, backend: 'wasm' });
    vi.advanceTimersByTime(silentSince + 2000 + 3000 - Date.now());
    expect(pair.coordinator.failedWith).toBeNull();
    vi.advanceTimersByTime(CHECK_EVERY_MS);
    const message = pair.coordinator.failedWith?.message;
    expect(message).toMatch(/^rank 0: sent nothing for 5\.\d s \(--worker-timeout 2 s plus the first-step allowance, 3 s \(--first-step-timeout\)/);
    expect(message).not.toMatch(/twice the longest step|CUDA_CACHE_PATH/);
  });

  test.each(['tensorflow', 'auto'] as const)('on backend %s, giving up before the first step advises on PTX compilation and the CUDA cache', async (backend) => {
    const pair = await controlPair('rank 1');
    watch(() => [pair.coordinator], 1000, { firstStepAllowanceMs: 2000, backend });
    vi.advanceTimersByTime(3000 + CHECK_EVERY_MS);
    const message = pair.coordinator.failedWith?.message ?? '';
    expect(message).toMatch(/plus the first-step allowance, 2 s \(--first-step-timeout\)/);
    expect(message).toMatch(/on A100\/H100\/H200 GPUs TensorFlow 2\.9 compiles its kernels from PTX for minutes on first start: raise --first-step-timeout/);
    expect(message).toMatch(/set CUDA_CACHE_PATH to a persistent directory and CUDA_CACHE_MAXSIZE=4294967296/);
  });

  test('once a step is measured, the PTX advice is gone: the step allowance applies', async () => {
    const pair = await controlPair('rank 1');
    const dog = watch(() => [pair.coordinator], 1000, { firstStepAllowanceMs: 60_000, backend: 'tensorflow' });
    dog.noteStep(500);
    vi.advanceTimersByTime(2000 + CHECK_EVERY_MS);
    expect(pair.coordinator.failedWith?.message).toMatch(/^rank 1: sent nothing for 2\.\d s \(--worker-timeout 1 s plus twice the longest step, 1\.0 s\): hung, stopped or cut off$/);
  });

  test('once steps are measured, the allowance is the timeout plus twice the longest step, counted from the last heartbeat', async () => {
    const pair = await controlPair('rank 0');
    const dog = watch(() => [pair.coordinator]);
    dog.noteStep(1000);
    dog.noteStep(300); // a shorter step does not shrink the allowance
    const allowance = TIMEOUT_MS + 2 * 1000;

    vi.advanceTimersByTime(allowance - 1000);
    await heartbeat(pair);
    // Well past the allowance since the start, but not since the heartbeat.
    vi.advanceTimersByTime(allowance);
    expect(pair.coordinator.failedWith).toBeNull();
    vi.advanceTimersByTime(CHECK_EVERY_MS);
    expect(pair.coordinator.failedWith?.message).toMatch(
      /^rank 0: sent nothing for 7\.\d s \(--worker-timeout 5 s plus twice the longest step, 2\.0 s\): hung, stopped or cut off$/,
    );
  });

  test('the allowance follows the longest step as it grows', async () => {
    const pair = await controlPair('rank 2');
    const dog = watch(() => [pair.coordinator]);
    dog.noteStep(100);
    vi.advanceTimersByTime(TIMEOUT_MS);
    dog.noteStep(4000); // a slow step (an evaluation, a checkpoint) just took 4 s
    vi.advanceTimersByTime(2 * 4000);
    expect(pair.coordinator.failedWith).toBeNull();
    vi.advanceTimersByTime(CHECK_EVERY_MS);
    expect(pair.coordinator.failedWith?.message).toMatch(/twice the longest step, 8\.0 s\)/);
  });

  test('watches whoever members() returns at each check, and nobody once stopped', async () => {
    const [a, b, c] = await Promise.all(['rank 0', 'rank 1', 'rank 2'].map(controlPair));
    let members = [a.coordinator, b.coordinator];
    const dog = watch(() => members);
    dog.noteStep(100);

    vi.advanceTimersByTime(TIMEOUT_MS);
    await heartbeat(b);
    members = [b.coordinator, c.coordinator]; // a left the group; c joined it
    vi.advanceTimersByTime(200 + CHECK_EVERY_MS);
    expect(a.coordinator.failedWith).toBeNull(); // silent, but no longer watched
    expect(b.coordinator.failedWith).toBeNull(); // heard from
    expect(c.coordinator.failedWith?.message).toMatch(/^rank 2: sent nothing for 5\.\d s/);

    dog.stop();
    expect(vi.getTimerCount()).toBe(0);
    members = [a.coordinator, b.coordinator];
    vi.advanceTimersByTime(FIRST_STEP_ALLOWANCE_MS);
    expect(a.coordinator.failedWith).toBeNull();
    expect(b.coordinator.failedWith).toBeNull();
  });

  test('leaves a connection that has already failed with its own error', async () => {
    const pair = await controlPair('rank 3');
    watch(() => [pair.coordinator]);
    await pair.worker.close(1000, 'worker exiting');
    await pair.coordinator.closed;
    vi.advanceTimersByTime(TIMEOUT_MS + FIRST_STEP_ALLOWANCE_MS + CHECK_EVERY_MS);
    expect(pair.coordinator.failedWith?.message).toBe('rank 3 closed the connection (worker exiting)');
    expect(pair.coordinator.closeCode).toBe(1000);
  });
});
