// Elastic membership with real worker processes on loopback: one of them is
// killed (SIGKILL) in the middle of an epoch, and --on-worker-loss decides
// what the run does: go on with the survivors (shrink), take a replacement
// (wait), or checkpoint and stop (abort); a worker that joins later makes
// the group grow back. Needs the build (npx tsc -p .).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { DEFAULTS, type TrainConfig } from '../src/common/training/config.js';
import { checkpointFileName } from '../src/common/io/checkpoint.js';
import { runCoordinator, type CoordinatorResult } from '../src/coordinator/coordinator.js';
import type { WorkerLossPolicy } from '../src/coordinator/membership.js';
import type { AllReduceKind, HostPort } from '../src/common/protocol/index.js';
import { startCli, type NodeProcess } from './helpers/node-process.js';
import { CUT_LINKS_FAULT_ENV, EXIT_FAULT_ENV } from '../src/worker/group-session.js';

const TOKEN = 'elastic-secret-51d0';
const TRAIN = 288;
const BATCH = 24;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Follows the coordinator's progress bar (drawn as on a terminal) to know where in an epoch the run is. */
class ProgressWatch {
  epoch = 0;
  images = 0;
  readonly stream = {
    isTTY: true,
    columns: 200,
    write: (text: string): boolean => {
      const m = /epoch (\d+)\/\d+ \[[#.]*\] (\d+)\/\d+ img/.exec(text);
      if (m) [this.epoch, this.images] = [Number(m[1]), Number(m[2])];
      return true;
    },
  };

  /** Resolves once `images` of (1-based) epoch `epoch` are done. */
  async reached(epoch: number, images: number): Promise<void> {
    while (this.epoch < epoch || (this.epoch === epoch && this.images < images)) await sleep(10);
  }
}

interface ElasticRun {
  address: Promise<HostPort>;
  run: Promise<CoordinatorResult>;
  log: string[];
  progress: ProgressWatch;
  out: string;
}

function startRun(
  policy: WorkerLossPolicy, workers: number, epochs: number, overrides: Partial<TrainConfig> = {}, allreduce: AllReduceKind = 'ring',
): ElasticRun {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-elastic-'));
  const cfg: TrainConfig = {
    ...DEFAULTS, model: 'resnet18', width: 4, dataset: 'synthetic', backend: 'wasm', trainLimit: TRAIN, testLimit: 48,
    batchSize: BATCH, lr: 0.05, epochs, tMax: epochs, seed: 3, plots: false, out, ...overrides,
  };
  const log: string[] = [];
  const progress = new ProgressWatch();
  let onListening: (a: HostPort) => void = () => {};
  const address = new Promise<HostPort>((resolve) => (onListening = resolve));
  const run = runCoordinator(cfg, {
    workers, localWorkers: 0, port: 0, token: TOKEN, onWorkerLoss: policy, dashboard: false, allreduce,
    log: (l) => log.push(l), progressStream: progress.stream, onListening,
  });
  run.catch(() => {}); // awaited by the test
  return { address, run, log, progress, out };
}

function startWorker(address: HostPort, env: Record<string, string> = {}): NodeProcess {
  return startCli('worker/cli.js', ['--connect', `${address.host}:${address.port}`, '--no-cache'], { TFJS_DDP_TOKEN: TOKEN, ...env });
}

/** The "finished at step S, state checksum X" line every replica prints at the end. */
function finalChecksum(p: NodeProcess): string {
  const m = /finished at step \d+, state checksum [0-9a-f]+/.exec(p.output());
  if (!m) throw new Error(`no final checksum in the worker's output:\n${p.output()}`);
  return m[0];
}

async function waitForLog(log: string[], pattern: RegExp): Promise<void> {
  while (!log.some((l) => pattern.test(l))) await sleep(10);
}

describe('--on-worker-loss', () => {
  test('shrink: a worker killed mid-epoch, the other two finish the run; every image of that epoch counted once', async () => {
    // 480 images for 4 epochs: three workers reach 0.89 test accuracy undisturbed, about 0.83 with this loss.
    const train = 480;
    const steps = train / BATCH;
    const { address, run, log, progress } = startRun('shrink', 3, 4, { trainLimit: train, testLimit: 96 });
    const procs = await Promise.all([0, 1, 2].map(async () => startWorker(await address)));
    await progress.reached(2, train / 3);
    procs[1].child.kill('SIGKILL');
    const result = await run;

    expect(result.groupChanges).toHaveLength(1);
    const [change] = result.groupChanges;
    expect(change).toMatchObject({ from: 3, to: 2, lost: [expect.stringMatching(/^worker 127\.0\.0\.1:\d+$/)] });
    // Killed in the middle of epoch 2, and the run went on from the step before the kill.
    expect(change.step).toBeGreaterThan(steps);
    expect(change.step).toBeLessThan(2 * steps);
    expect(log).toContainEqual(expect.stringMatching(/^lost rank \d \(worker 127\.0\.0\.1:\d+\): /));
    expect(log).toContainEqual(expect.stringMatching(new RegExp(`^group re-formed at step ${change.step}: 2 worker\\(s\\), 1 lost$`)));
    expect(result.steps).toBe(4 * steps);
    expect(result.history.map((m) => m.train_images)).toEqual([train, train, train, train]);
    expect(result.history.map((m) => m.workers)).toEqual([3, 2, 2, 2]);
    expect(result.history[3].test_acc).toBeGreaterThan(0.7);
    expect(result.history[3].train_loss).toBeLessThan(result.history[1].train_loss);

    expect(await procs[1].exited).toBeNull();
    const survivors = [procs[0], procs[2]];
    expect(await Promise.all(survivors.map((p) => p.exited))).toEqual([0, 0]);
    expect(finalChecksum(survivors[0])).toBe(finalChecksum(survivors[1]));
    for (const p of survivors) expect(p.output()).toMatch(/the group changed: now rank [01] of 2, from step \d+/);
  }, 180_000);

  test('wait: the run pauses until a replacement joins, which ends bit-identical to the others', async () => {
    const { address, run, log, progress } = startRun('wait', 3, 2);
    const procs = await Promise.all([0, 1, 2].map(async () => startWorker(await address)));
    await progress.reached(1, TRAIN / 2);
    procs[0].child.kill('SIGKILL');
    await waitForLog(log, /--on-worker-loss wait: waiting for 1 replacement worker/);
    const replacement = startWorker(await address);
    const result = await run;

    expect(result.groupChanges).toEqual([{ step: expect.any(Number), from: 3, to: 3, lost: [expect.any(String)] }]);
    expect(result.history.map((m) => m.workers)).toEqual([3, 3]);
    expect(result.history.map((m) => m.train_images)).toEqual([TRAIN, TRAIN]);
    const finishers = [procs[1], procs[2], replacement];
    expect(await Promise.all(finishers.map((p) => p.exited))).toEqual([0, 0, 0]);
    expect(replacement.output()).toMatch(/joined as rank 2 of 3/);
    // Only the newcomer is sent the weights; the survivors check their own against the checksum.
    expect(log).toContainEqual(expect.stringMatching(/^group of 3 from step \d+: 2 kept their weights and momentum, 1 were sent them$/));
    // Weights, momentum and BatchNorm statistics: the same bytes on all three.
    const sums = finishers.map(finalChecksum);
    expect(new Set(sums).size).toBe(1);
  }, 180_000);

  test('abort: a full run refuses more workers; a loss writes a checkpoint at the last committed step and fails, naming the worker', async () => {
    const { address, run, progress, out } = startRun('abort', 2, 20);
    const procs = await Promise.all([0, 1].map(async () => startWorker(await address)));
    await progress.reached(1, TRAIN / 3);
    // A full run refuses more workers; under abort it never has room.
    const extra = startWorker(await address);
    expect(await extra.exited).toBe(1);
    expect(extra.output()).toMatch(/refused this worker: the run already has all its workers/);
    procs[1].child.kill('SIGKILL');
    const err: Error = await run.then(() => new Error('the run did not fail'), (e: Error) => e);
    const m = /run aborted: lost worker 127\.0\.0\.1:\d+ \(--on-worker-loss abort\): checkpoint written at step (\d+); continue with coordinator --resume (.*)$/.exec(err.message);
    expect(m, err.message).not.toBeNull();
    const step = Number(m![1]);
    expect(m![2]).toBe(out);
    expect(step).toBeGreaterThanOrEqual(TRAIN / 3 / BATCH);
    // A loss during an epoch's evaluation finds the epoch's last step committed
    // but the epoch not yet closed: the checkpoint then still names that epoch.
    const stepsPerEpoch = TRAIN / BATCH;
    const names = [checkpointFileName(Math.floor(step / stepsPerEpoch), step)];
    if (step % stepsPerEpoch === 0) names.push(checkpointFileName(step / stepsPerEpoch - 1, step));
    expect(fs.readdirSync(out).filter((f) => names.includes(f)), `checkpoints in ${out}`).toHaveLength(1);
    expect(await procs[0].exited).toBe(1);
  }, 180_000);

  test.each(['ring', 'star'] as const)('%s: a worker that joins after a loss is admitted at the next step and the group grows back', async (allreduce) => {
    // 4 epochs: the late worker's process starts and joins within epoch 1 (in about 1.5 s, at step 11 of 48),
    // with three epochs to spare.
    const epochs = 4;
    const { address, run, log, progress } = startRun('shrink', 3, epochs, {}, allreduce);
    const procs = await Promise.all([0, 1, 2].map(async () => startWorker(await address)));
    await progress.reached(1, TRAIN / 3);
    procs[2].child.kill('SIGKILL');
    await waitForLog(log, /^group re-formed at step \d+: 2 worker\(s\), 1 lost$/);
    const late = startWorker(await address);
    const result = await run;

    expect(result.groupChanges.map(({ from, to }) => [from, to])).toEqual([[3, 2], [2, 3]]);
    expect(log).toContainEqual(expect.stringMatching(/joined as a spare; it enters the group at the next step$/));
    expect(result.history.map((m) => m.train_images)).toEqual(new Array(epochs).fill(TRAIN));
    expect(result.history.at(-1)!.workers).toBe(3);
    const finishers = [procs[0], procs[1], late];
    expect(await Promise.all(finishers.map((p) => p.exited))).toEqual([0, 0, 0]);
    expect(new Set(finishers.map(finalChecksum)).size).toBe(1);
  }, 180_000);

  // A worker lost while the others average their BatchNorm statistics: their
  // all-reduce is cut short, and the new group is asked for the evaluation or
  // snapshot again.
  test.each(['evaluate:1', 'snapshot:2'])('shrink: a worker lost at %s, inside the statistics all-reduce', async (point) => {
    const { address, run, log } = startRun('shrink', 3, 2, { checkpointEvery: 5 });
    const victim = startWorker(await address, { [EXIT_FAULT_ENV]: point });
    const procs = [victim, ...(await Promise.all([0, 1].map(async () => startWorker(await address))))];
    const result = await run;

    expect(await victim.exited).toBeNull();
    expect(result.groupChanges).toMatchObject([{ from: 3, to: 2 }]);
    expect(log).toContainEqual(expect.stringMatching(/^lost rank \d \(worker 127\.0\.0\.1:\d+\): /));
    // Evaluated on the whole test set (the coordinator checks the count) and every image trained once.
    expect(result.history.map((m) => m.train_images)).toEqual([TRAIN, TRAIN]);
    expect(result.history.every((m) => Number.isFinite(m.test_loss))).toBe(true);
    expect(Array.from(result.state.runningStats).every(Number.isFinite)).toBe(true);
    const survivors = procs.slice(1);
    expect(await Promise.all(survivors.map((p) => p.exited))).toEqual([0, 0]);
    expect(finalChecksum(survivors[0])).toBe(finalChecksum(survivors[1]));
  }, 180_000);

  test('the run ends with a clear message when every worker is lost', async () => {
    const { address, run, progress } = startRun('shrink', 1, 20);
    const only = startWorker(await address);
    await progress.reached(1, TRAIN / 3);
    only.child.kill('SIGKILL');
    await expect(run).rejects.toThrow(/run aborted: every worker was lost by step \d+: continue with coordinator --resume .* \(newest checkpoint\)/);
  }, 180_000);

  test('a link that keeps breaking between live workers ends the run after three tries, pointing at the network', async () => {
    const { address, run, log } = startRun('shrink', 2, 2);
    const procs = [startWorker(await address, { [CUT_LINKS_FAULT_ENV]: '3' }), startWorker(await address)];
    await expect(run).rejects.toThrow(/run aborted: the all-reduce failed 4 times in a row with every worker alive .*: check the network between the workers/);
    // Every try re-formed the same two workers from the last committed step.
    expect(log.filter((l) => /^group re-formed at step 2: 2 worker\(s\)$/.test(l))).toHaveLength(3);
    expect(await Promise.all(procs.map((p) => p.exited))).toEqual([1, 1]);
  }, 180_000);
});
