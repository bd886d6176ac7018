// The FLOPs count and the GPU-class gradient release schedule
// (src/common/model/flops.ts): a convolution counted by hand, ResNet18's
// multiply-adds summed here layer by layer from the architecture, the
// published CIFAR figures, and the schedule's shape.
import { describe, expect, it } from 'vitest';
import {
  BACKWARD_TO_FORWARD, convOutputSize, forwardFlops, gradientReleaseSchedule, layerCosts,
} from '../src/common/model/flops.js';
import { buildModelSpec, type ModelName } from '../src/common/model/spec.js';

const spec = (name: ModelName, width = 64, norm: 'batch' | 'none' = 'batch') =>
  buildModelSpec({ name, width, numClasses: 10, inChannels: 3, norm });
/** Multiply-adds of the convolutions and the linear layer, per image: the figure papers and thop report. */
const macs = (name: ModelName) =>
  layerCosts(spec(name), 1).filter((l) => l.kind === 'conv' || l.kind === 'linear').reduce((s, l) => s + l.flops, 0) / 2;

describe('flops', () => {
  it('counts a convolution as 2·kh·kw·cin·cout·hout·wout per image, with padding and stride', () => {
    expect(convOutputSize(32, 3, 1, 1)).toBe(32);
    expect(convOutputSize(32, 3, 2, 1)).toBe(16);
    expect(convOutputSize(32, 1, 2, 0)).toBe(16);
    expect(convOutputSize(7, 3, 2, 1)).toBe(4);
    const [stem, stemNorm] = layerCosts(spec('resnet18'), 2);
    // 3x3, 3 -> 64 channels, 32x32 out: 1,769,472 multiply-adds an image.
    expect(stem).toEqual({ name: 'conv1.weight', kind: 'conv', params: [0], flops: 2 * 2 * 3 * 3 * 3 * 64 * 32 * 32 });
    expect(stemNorm).toMatchObject({ name: 'bn1', kind: 'norm', params: [1, 2] });
  });

  it("gives ResNet18's multiply-adds as summed by hand: 0.56 G an image, 1.11 GFLOPs", () => {
    const conv = (k: number, cin: number, cout: number, out: number) => k * k * cin * cout * out * out;
    let byHand = conv(3, 3, 64, 32) + 4 * conv(3, 64, 64, 32);
    for (const [cin, out] of [[64, 16], [128, 8], [256, 4]]) {
      const cout = 2 * cin;
      byHand += conv(3, cin, cout, out) + 3 * conv(3, cout, cout, out) + conv(1, cin, cout, out); // first conv, three more, shortcut
    }
    byHand += 512 * 10 + 10 / 2; // the linear layer; its bias is 10 adds
    expect(byHand).toBe(555_422_725);
    expect(macs('resnet18')).toBe(byHand);
    // Everything else (BatchNorm, ReLU, pool) is under 1%.
    expect(forwardFlops(spec('resnet18'), 1) / (2 * byHand)).toBeLessThan(1.01);
    expect(forwardFlops(spec('resnet18'), 1) / 1e9).toBeCloseTo(1.11, 2);
  });

  it('gives the published CIFAR figures for ResNet50 (1.30 GMACs) and ResNet34, and scales with batch and width', () => {
    expect(macs('resnet50') / 1e9).toBeCloseTo(1.30, 2);
    expect(macs('resnet34') / 1e9).toBeCloseTo(1.16, 2);
    expect(forwardFlops(spec('resnet50'), 32)).toBe(32 * forwardFlops(spec('resnet50'), 1));
    // Halving the width quarters the convolutions (all but the stem's input side).
    expect(macs('resnet18') / (layerCosts(spec('resnet18', 32), 1).filter((l) => l.kind === 'conv').reduce((s, l) => s + l.flops, 0) / 2)).toBeCloseTo(4, 1);
    // No BatchNorm: no norm layers, the same convolutions.
    const plain = layerCosts(spec('resnet18', 64, 'none'), 1);
    expect(plain.some((l) => l.kind === 'norm')).toBe(false);
    expect(plain.filter((l) => l.kind === 'conv').reduce((s, l) => s + l.flops, 0) / 2 + 5125).toBe(555_422_725);
  });

  it('releases every gradient during backward, the last layers first, the stem at computeMs', () => {
    for (const name of ['resnet18', 'resnet50'] as const) {
      const s = spec(name);
      const computeMs = 150;
      const schedule = gradientReleaseSchedule(s, 32, computeMs);
      const { releaseMs } = schedule;
      expect(releaseMs).toHaveLength(s.params.length);
      expect(schedule.forwardMs).toBeCloseTo(computeMs / (1 + BACKWARD_TO_FORWARD), 12);
      expect(schedule.forwardFlops).toBe(forwardFlops(s, 32));
      // Backward runs in reverse parameter order: a later parameter is never released after an earlier one.
      for (let i = 1; i < releaseMs.length; i++) expect(releaseMs[i], s.params[i].name).toBeLessThanOrEqual(releaseMs[i - 1]);
      expect(releaseMs[0]).toBe(computeMs);
      const first = releaseMs[releaseMs.length - 1];
      expect(first).toBeGreaterThan(computeMs / 3);
      // The linear layer is a sliver of the work: it is done just after forward.
      expect(first - computeMs / 3).toBeLessThan(0.01);
      // A BatchNorm's gamma and beta together, before its conv's weight.
      const bn = s.params.findIndex((p) => p.name === 'layer1.0.bn1.weight');
      expect(releaseMs[bn + 1]).toBe(releaseMs[bn]);
      expect(releaseMs[bn]).toBeLessThan(releaseMs[bn - 1]);
      // Each layer's backward takes its share of 2/3 of computeMs, in proportion to its FLOPs.
      const layers = schedule.layers;
      const backward = (computeMs * 2) / 3;
      for (let i = 0; i < layers.length - 1; i++) {
        const took = layers[i].backwardEndMs - layers[i + 1].backwardEndMs;
        expect(took).toBeCloseTo((backward * layers[i].flops) / schedule.forwardFlops, 9);
      }
    }
  });

  it('refuses a batch or compute time that is not positive', () => {
    expect(() => gradientReleaseSchedule(spec('resnet18', 4), 0, 150)).toThrow(/batch must be a positive integer/);
    expect(() => gradientReleaseSchedule(spec('resnet18', 4), 32, 0)).toThrow(/computeMs must be a positive number/);
  });
});
