// Needs the compiled worker: run `npx tsc -p tsconfig.json` first (npm test
// does it in pretest).
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { makeBatch } from '../src/common/data/augment.js';
import { BatchLoader } from '../src/common/data/batch-loader.js';
import { globalBatches } from '../src/common/data/sampler.js';
import type { ImageSet } from '../src/common/data/types.js';
import { randomSet } from './helpers/data-fixtures.js';
import { resolveWorkerScript } from '../src/common/fs/worker-script.js';

const repoRoot = resolve(fileURLToPath(import.meta.url), '../..');

/** Bit-exact comparison that reports the first differing element (faster than a deep toEqual). */
function expectSameBatch(got: { x: Float32Array; y: Int32Array }, want: { x: Float32Array; y: Int32Array }): void {
  expect(got.x.length).toBe(want.x.length);
  const firstDiff = got.x.findIndex((v, i) => !Object.is(v, want.x[i]));
  expect(firstDiff === -1 ? 'identical' : { firstDiff, got: got.x[firstDiff], want: want.x[firstDiff] }).toBe('identical');
  expect([...got.y]).toEqual([...want.y]);
}

const MEAN = [0.5, 0.5, 0.5];
const STD = [0.5, 0.5, 0.5];

const openLoaders: BatchLoader[] = [];
function newLoader(set: ImageSet, seed: number, mean = MEAN, std = STD): BatchLoader {
  const loader = new BatchLoader({ set, threads: 2, mean, std, seed });
  openLoaders.push(loader);
  return loader;
}

afterEach(async () => {
  await Promise.all(openLoaders.splice(0).map((l) => l.close()));
});

describe('BatchLoader', () => {
  it('builds exactly the batches makeBatch builds in the main thread (2 threads)', async () => {
    const set = randomSet(100, 32, 32, 3, 1);
    const loader = newLoader(set, 17);
    expect(loader.threads).toBe(2);
    for (const augment of [true, false]) {
      const batches = globalBatches(set.count, 32, 17, 3, { shuffle: true });
      const loaded = await Promise.all(batches.map((b) => loader.load(b, 3, augment)));
      loaded.forEach((got, i) => {
        const want = makeBatch(set, batches[i], { augment, seed: 17, epoch: 3, mean: MEAN, std: STD });
        expect(got.count).toBe(batches[i].length);
        expectSameBatch(got, want);
      });
    }
  });

  it('handles single-channel images', async () => {
    const set = randomSet(20, 28, 28, 1, 2);
    const loader = newLoader(set, 5, [0.5], [0.5]);
    const indices = Uint32Array.from([19, 3, 7, 0]);
    const got = await loader.load(indices, 1, true);
    const want = makeBatch(set, indices, { augment: true, seed: 5, epoch: 1, mean: [0.5], std: [0.5] });
    expectSameBatch(got, want);
  });

  it('prefetch yields every batch in order, for several depths, and counts the waits', async () => {
    const set = randomSet(90, 16, 16, 3, 3);
    const loader = newLoader(set, 9);
    const batches = globalBatches(set.count, 8, 9, 0, { shuffle: true }); // 12 batches, last of 2
    for (const depth of [1, 2, 5, 50]) {
      loader.resetStats();
      let i = 0;
      const started = performance.now();
      for await (const got of loader.prefetch(batches, 0, true, depth)) {
        const want = makeBatch(set, batches[i], { augment: true, seed: 9, epoch: 0, mean: MEAN, std: STD });
        expect(got.count).toBe(batches[i].length);
        expectSameBatch(got, want);
        i++;
      }
      const elapsedMs = performance.now() - started;
      expect(i).toBe(batches.length);
      const stats = loader.stats();
      expect(stats.batches).toBe(batches.length);
      // The waits are part of the loop's own time (the consumer here does little but wait).
      expect(stats.waitMs).toBeGreaterThanOrEqual(0);
      expect(stats.waitMs).toBeLessThanOrEqual(elapsedMs);
    }
    loader.resetStats();
    expect(loader.stats()).toEqual({ waitMs: 0, batches: 0 });
  });

  it('survives a consumer that stops early, then closes cleanly', async () => {
    const set = randomSet(64, 16, 16, 3, 4);
    const loader = newLoader(set, 1);
    const batches = globalBatches(set.count, 4, 1, 0, { shuffle: true });
    let taken = 0;
    for await (const got of loader.prefetch(batches, 0, true, 3)) {
      expect(got.count).toBe(4);
      if (++taken === 2) break;
    }
    expect(loader.stats().batches).toBe(2);
    await loader.close();
    expect(loader.threads).toBe(0);
  });

  it('rejects loads after close, and close is idempotent', async () => {
    const loader = newLoader(randomSet(4, 8, 8, 3, 5), 1);
    await loader.close();
    await loader.close();
    expect(loader.threads).toBe(0);
    await expect(loader.load(Uint32Array.from([0]), 0, false)).rejects.toThrow(/BatchLoader is closed/);
  });

  it('reports bad input clearly', async () => {
    const set = randomSet(4, 8, 8, 3, 6);
    expect(() => new BatchLoader({ set, mean: [0.5, 0.5], std: STD, seed: 0 })).toThrow(/mean has 2 entries/);
    expect(() => new BatchLoader({ set, threads: 0, mean: MEAN, std: STD, seed: 0 })).toThrow(/threads is 0/);
    const loader = newLoader(set, 0);
    await expect(loader.load(Uint32Array.from([1, 4]), 0, true)).rejects.toThrow(/index 4 is out of range; the set holds 4/);
    await expect(loader.load(Uint32Array.from([1]), -1, true)).rejects.toThrow(/epoch is -1/);
    await expect(async () => {
      for await (const _ of loader.prefetch([Uint32Array.from([0])], 0, true, 0)) void _;
    }).rejects.toThrow(/depth is 0/);
  });

  it('lets the process exit after close()', async () => {
    const loaderUrl = pathToFileURL(resolve(repoRoot, 'dist/src/common/data/batch-loader.js')).href;
    const script = `
      import { BatchLoader } from ${JSON.stringify(loaderUrl)};
      const set = { images: new Uint8Array(8 * 8 * 8 * 3), labels: new Uint8Array(8), count: 8, height: 8, width: 8, channels: 3 };
      const loader = new BatchLoader({ set, threads: 2, mean: [0.5], std: [0.5], seed: 1 });
      const batches = [Uint32Array.from([0, 1, 2]), Uint32Array.from([3, 4])];
      let n = 0;
      for await (const b of loader.prefetch(batches, 0, true)) n += b.count;
      await loader.close();
      console.log('threads', loader.threads, 'images', n);
    `;
    // The timeout only guards against a hang; it does not measure speed.
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
      timeout: 30_000,
    });
    expect(stdout.trim()).toBe('threads 0 images 5');
  });
});

describe('resolveWorkerScript', () => {
  const compiledWorker = resolve(repoRoot, 'dist/src/common/data/augment-thread.js');

  it('maps a TypeScript source caller to the compiled file under dist/', () => {
    const sourceCaller = pathToFileURL(resolve(repoRoot, 'src/common/data/batch-loader.ts')).href;
    expect(resolveWorkerScript(sourceCaller, './augment-thread.js')).toBe(compiledWorker);
  });

  it('resolves next to a compiled caller', () => {
    const compiledCaller = pathToFileURL(resolve(repoRoot, 'dist/src/common/data/batch-loader.js')).href;
    expect(resolveWorkerScript(compiledCaller, './augment-thread.js')).toBe(compiledWorker);
  });

  it('tells the user to build when the compiled script is missing', () => {
    expect(() => resolveWorkerScript(import.meta.url, './no-such-worker.js')).toThrow(
      /dist\/test\/no-such-worker\.js does not exist; run `npm run build` first/,
    );
  });

  it('insists on the .js name', () => {
    expect(() => resolveWorkerScript(import.meta.url, '../src/common/data/augment-thread.ts')).toThrow(/compiled \.js/);
  });
});
