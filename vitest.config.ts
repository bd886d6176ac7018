import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * The longest test files, longest first (measured on 2 cores). They start
 * first so that the two workers end together, instead of one of them picking
 * up a multi-minute file near the end while the other idles. Without a
 * results cache (a fresh clone, as in CI) vitest would order by file size,
 * which is no guide here; files not listed follow in vitest's own order.
 */
const SLOW_FIRST = [
  'golden', 'ddp-equivalence', 'trainer', 'protocol-fuzz', 'ddp-bad-gradients', 'ddp-elastic', 'bench-allreduce',
  'cli', 'cli-utilities', 'data-synthetic', 'deploy',
].map((name) => `/test/${name}.test.ts`);

class SlowFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification) => {
      const i = SLOW_FIRST.findIndex((suffix) => f.moduleId.endsWith(suffix));
      return i < 0 ? SLOW_FIRST.length : i;
    };
    const order = await super.sort(files);
    return order.map((f, i) => ({ f, i })).sort((a, b) => rank(a.f) - rank(b.f) || a.i - b.i).map(({ f }) => f);
  }
}

// Tests train real (tiny) models on CPU backends, so the defaults are too short.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 180_000,
    // Each file gets its own process: TensorFlow.js keeps global engine state.
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    sequence: { sequencer: SlowFirstSequencer },
  },
});
