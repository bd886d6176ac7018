import { defineConfig } from 'vitest/config';

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
  },
});
