// SGD-momentum and the cosine schedule against values worked out by hand from
// PyTorch's formulas: g += wd*w; buf = m*buf + g (buf = g on the first step); w -= lr*buf.
import { describe, expect, test } from 'vitest';
import { sgdStep, updateRunningStats } from '../src/common/optim/sgd.js';
import { cosineLr, learningRate, plannedLearningRates, scheduleOf } from '../src/common/optim/schedule.js';

describe('sgdStep', () => {
  test('three steps match the hand-computed trajectory', () => {
    const hyper = { lr: 0.1, momentum: 0.9, weightDecay: 0.01 };
    const w = new Float32Array([1, -2]);
    const buf = new Float32Array(2);
    // step 1: g = [0.5, 0.25] + 0.01*[1,-2] = [0.51, 0.23]; buf = g; w = [1-0.051, -2-0.023]
    sgdStep(w, new Float32Array([0.5, 0.25]), buf, hyper, true);
    expect(buf[0]).toBeCloseTo(0.51, 6);
    expect(buf[1]).toBeCloseTo(0.23, 6);
    expect(w[0]).toBeCloseTo(0.949, 6);
    expect(w[1]).toBeCloseTo(-2.023, 6);
    // step 2: g = [0.5 + 0.00949, 0.25 - 0.02023] = [0.50949, 0.22977]
    // buf = 0.9*[0.51, 0.23] + g = [0.96849, 0.43677]; w -= 0.1*buf
    sgdStep(w, new Float32Array([0.5, 0.25]), buf, hyper, false);
    expect(buf[0]).toBeCloseTo(0.96849, 6);
    expect(buf[1]).toBeCloseTo(0.43677, 6);
    expect(w[0]).toBeCloseTo(0.852151, 6);
    expect(w[1]).toBeCloseTo(-2.066677, 6);
    // step 3 with a zero gradient: only decay and momentum move the weights.
    // g = 0.01*w = [0.00852151, -0.02066677]; buf = 0.9*buf + g = [0.88016251, 0.37242623]
    sgdStep(w, new Float32Array([0, 0]), buf, hyper, false);
    expect(buf[0]).toBeCloseTo(0.88016251, 6);
    expect(buf[1]).toBeCloseTo(0.37242623, 6);
    expect(w[0]).toBeCloseTo(0.852151 - 0.088016251, 6);
    expect(w[1]).toBeCloseTo(-2.066677 - 0.037242623, 6);
  });

  test('rejects buffers of different lengths', () => {
    expect(() => sgdStep(new Float32Array(2), new Float32Array(3), new Float32Array(2), { lr: 1, momentum: 0, weightDecay: 0 }, true)).toThrow(/lengths differ/);
  });

  test('BatchNorm running average uses momentum 0.1', () => {
    const running = new Float32Array([0, 1]);
    updateRunningStats(running, new Float32Array([2, 3]));
    expect(running[0]).toBeCloseTo(0.2, 6);
    expect(running[1]).toBeCloseTo(1.2, 6);
  });
});

describe('cosine schedule', () => {
  const cfg = { lr: 0.1, tMax: 60 };
  test('PyTorch CosineAnnealingLR values per epoch', () => {
    expect(cosineLr(0, cfg)).toBe(0.1);
    expect(cosineLr(30, cfg)).toBeCloseTo(0.05, 12);
    expect(cosineLr(60, cfg)).toBeCloseTo(0, 12);
    expect(cosineLr(15, cfg)).toBeCloseTo(0.1 * (1 + Math.SQRT1_2) / 2, 12);
    expect(cosineLr(1, cfg)).toBeCloseTo(0.09993147673772869, 12);
  });
  test('linear warmup per step, then the cosine value', () => {
    const w = { ...cfg, warmupEpochs: 2 };
    expect(learningRate(0, 0, 10, w)).toBeCloseTo(0.1 / 20, 12);
    expect(learningRate(0, 9, 10, w)).toBeCloseTo(0.1 * 10 / 20, 12);
    expect(learningRate(1, 9, 10, w)).toBeCloseTo(cosineLr(1, w), 12);
    expect(learningRate(2, 0, 10, w)).toBe(cosineLr(2, w));
  });
});

describe('the run schedule', () => {
  test('scheduleOf takes the three fields of a config, and the planned curve follows learningRate', () => {
    const cfg = { lr: 0.2, tMax: 4, warmupEpochs: 1, momentum: 0.9, epochs: 3 };
    const schedule = scheduleOf(cfg);
    expect(schedule).toEqual({ lr: 0.2, tMax: 4, warmupEpochs: 1 });
    const planned = plannedLearningRates(schedule, 3, 8);
    // Four points per epoch, at steps 0, 2, 4, 6, and the last step of the run.
    expect(planned).toHaveLength(13);
    expect(planned[1]).toEqual([0.25, learningRate(0, 2, 8, schedule)]);
    expect(planned[5]).toEqual([1.25, cosineLr(1, schedule)]);
    expect(planned[12]).toEqual([3, learningRate(2, 7, 8, schedule)]);
  });
});
