import { describe, expect, test } from 'vitest';
import { buildModelSpec, initParams, MODEL_NAMES } from '../src/common/model/spec.js';
import { fromTorch, toTorch, torchShape } from '../src/common/model/torch-layout.js';

// PyTorch's sum(p.numel() for p in net.parameters()) for the seed's models at width 64, 10 classes.
const PYTORCH_COUNTS = { resnet18: 11_173_962, resnet34: 21_282_122, resnet50: 23_520_842, resnet101: 42_512_970, resnet152: 58_156_618 };

describe('model spec', () => {
  test.each(MODEL_NAMES)('%s at width 64 has PyTorch\'s parameter count', (name) => {
    const spec = buildModelSpec({ name, width: 64, numClasses: 10, inChannels: 3, norm: 'batch' });
    expect(spec.paramCount).toBe(PYTORCH_COUNTS[name]);
    expect(spec.params.at(-1)!.offset + spec.params.at(-1)!.size).toBe(spec.paramCount);
  });

  test('names follow the PyTorch state_dict', () => {
    const spec = buildModelSpec({ name: 'resnet50', width: 4, numClasses: 10, inChannels: 3, norm: 'batch' });
    const names = spec.params.map((p) => p.name);
    expect(names.slice(0, 3)).toEqual(['conv1.weight', 'bn1.weight', 'bn1.bias']);
    expect(names).toContain('layer2.0.shortcut.0.weight');
    expect(names).toContain('layer4.2.bn3.bias');
    expect(names.slice(-2)).toEqual(['linear.weight', 'linear.bias']);
    expect(spec.linear.inFeatures).toBe(4 * 8 * 4);
  });

  test('norm none drops every BatchNorm', () => {
    const spec = buildModelSpec({ name: 'resnet18', width: 4, numClasses: 10, inChannels: 1, norm: 'none' });
    expect(spec.batchNorms).toHaveLength(0);
    expect(spec.params.some((p) => p.name.includes('bn'))).toBe(false);
    expect(spec.params[0].shape).toEqual([3, 3, 1, 4]);
  });

  test('bad configs give clear errors', () => {
    expect(() => buildModelSpec({ name: 'resnet19' as never, width: 4, numClasses: 10, inChannels: 3, norm: 'batch' })).toThrow(/unknown model "resnet19"/);
    expect(() => buildModelSpec({ name: 'resnet18', width: 0, numClasses: 10, inChannels: 3, norm: 'batch' })).toThrow(/width must be a positive integer/);
  });

  test('initialisation follows PyTorch bounds and BatchNorm constants', () => {
    const spec = buildModelSpec({ name: 'resnet18', width: 8, numClasses: 10, inChannels: 3, norm: 'batch' });
    let i = 0;
    const flat = initParams(spec, () => ((i++ * 0.6180339887) % 1));
    for (const p of spec.params) {
      const v = flat.subarray(p.offset, p.offset + p.size);
      if (p.init.kind === 'const') expect(v.every((x) => x === (p.init as { value: number }).value)).toBe(true);
      else expect(Math.max(...v.map(Math.abs))).toBeLessThanOrEqual(Math.fround(p.init.bound));
    }
  });

  test('PyTorch layout conversion round-trips conv and linear weights', () => {
    const spec = buildModelSpec({ name: 'resnet18', width: 4, numClasses: 10, inChannels: 3, norm: 'batch' });
    for (const p of [spec.params[0], spec.params.at(-2)!]) {
      const torch = Float32Array.from({ length: p.size }, (_, k) => k);
      const ours = new Float32Array(p.size);
      fromTorch(p, torch, ours);
      expect(Array.from(toTorch(p, ours))).toEqual(Array.from(torch));
    }
    // conv1: torch [out=4,in=3,3,3]; element [co=1,ci=2,i=0,j=1] lands at ours [0,1,2,1].
    const conv = spec.params[0];
    expect(torchShape(conv)).toEqual([4, 3, 3, 3]);
    const torch = new Float32Array(conv.size);
    torch[((1 * 3 + 2) * 3 + 0) * 3 + 1] = 7;
    const ours = new Float32Array(conv.size);
    fromTorch(conv, torch, ours);
    expect(ours[((0 * 3 + 1) * 3 + 2) * 4 + 1]).toBe(7);
  });
});
