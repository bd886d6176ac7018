// The CIFAR ResNet family of the seed (kuangliu-style): 3x3 stride-1 stem, no
// max-pool, BasicBlock/Bottleneck stages at strides 1,2,2,2, 1x1 projection
// shortcuts, 4x4 average pool, one linear layer. This module only describes
// the network (names, shapes, order); it never touches TensorFlow.js, so the
// coordinator can size buffers and hash configs without loading a backend.

export const MODEL_NAMES = ['resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152'] as const;
export type ModelName = (typeof MODEL_NAMES)[number];
export type NormKind = 'batch' | 'none';

export interface ModelConfig {
  name: ModelName;
  /** Base width: channels of the stem and of stage 1 (64 in the paper). */
  width: number;
  numClasses: number;
  inChannels: number;
  /** 'none' drops BatchNorm so that N-worker runs equal 1-worker runs exactly (tests). */
  norm: NormKind;
}

const ARCH: Record<ModelName, { block: 'basic' | 'bottleneck'; blocks: [number, number, number, number] }> = {
  resnet18: { block: 'basic', blocks: [2, 2, 2, 2] },
  resnet34: { block: 'basic', blocks: [3, 4, 6, 3] },
  resnet50: { block: 'bottleneck', blocks: [3, 4, 6, 3] },
  resnet101: { block: 'bottleneck', blocks: [3, 4, 23, 3] },
  resnet152: { block: 'bottleneck', blocks: [3, 8, 36, 3] },
};

/** How a parameter is drawn at initialisation (PyTorch's defaults). */
export type ParamInit = { kind: 'uniform'; bound: number } | { kind: 'const'; value: number };

/**
 * A trainable tensor. `name` is the PyTorch state_dict key; `shape` is the
 * TensorFlow.js layout (conv [kh,kw,in,out], linear [in,out]); `offset` is its
 * position in the flat parameter vector that gradients and the optimizer use.
 */
export interface ParamSpec {
  name: string;
  shape: number[];
  size: number;
  offset: number;
  init: ParamInit;
}

/** A BatchNorm layer: `name` is its state_dict prefix, e.g. `layer1.0.bn1`. */
export interface BatchNormSpec {
  name: string;
  channels: number;
  /** Offset of its running mean in the flat running-statistics vector; the variance follows it. */
  offset: number;
}

export interface ConvOp { kind: 'conv'; weight: string; stride: number; pad: number }
export interface NormOp { kind: 'norm'; bn: string | null }
export interface BlockSpec {
  name: string; // e.g. layer2.0
  convs: { conv: ConvOp; norm: NormOp }[];
  shortcut: { conv: ConvOp; norm: NormOp } | null;
}

export interface ModelSpec {
  config: ModelConfig;
  params: ParamSpec[];
  paramCount: number;
  batchNorms: BatchNormSpec[];
  /** Length of the flat running-statistics vector (mean and var of every BatchNorm). */
  runningStatsSize: number;
  stem: { conv: ConvOp; norm: NormOp };
  blocks: BlockSpec[];
  linear: { weight: string; bias: string; inFeatures: number };
}

export function isModelName(name: string): name is ModelName {
  return (MODEL_NAMES as readonly string[]).includes(name);
}

export function buildModelSpec(config: ModelConfig): ModelSpec {
  if (!isModelName(config.name)) {
    throw new Error(`unknown model "${config.name}": choose one of ${MODEL_NAMES.join(', ')}`);
  }
  for (const key of ['width', 'numClasses', 'inChannels'] as const) {
    if (!Number.isInteger(config[key]) || config[key] < 1) {
      throw new Error(`model ${key} must be a positive integer, got ${config[key]}`);
    }
  }
  const params: ParamSpec[] = [];
  const batchNorms: BatchNormSpec[] = [];
  let paramCount = 0;
  let runningStatsSize = 0;

  const addParam = (name: string, shape: number[], init: ParamInit): string => {
    const size = shape.reduce((a, b) => a * b, 1);
    params.push({ name, shape, size, offset: paramCount, init });
    paramCount += size;
    return name;
  };
  // PyTorch Conv2d/Linear default: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  const conv = (name: string, k: number, cin: number, cout: number, stride: number): ConvOp => ({
    kind: 'conv',
    weight: addParam(`${name}.weight`, [k, k, cin, cout], { kind: 'uniform', bound: 1 / Math.sqrt(cin * k * k) }),
    stride,
    pad: k === 3 ? 1 : 0,
  });
  const norm = (name: string, channels: number): NormOp => {
    if (config.norm === 'none') return { kind: 'norm', bn: null };
    addParam(`${name}.weight`, [channels], { kind: 'const', value: 1 });
    addParam(`${name}.bias`, [channels], { kind: 'const', value: 0 });
    batchNorms.push({ name, channels, offset: runningStatsSize });
    runningStatsSize += 2 * channels;
    return { kind: 'norm', bn: name };
  };

  const { block, blocks: counts } = ARCH[config.name];
  const expansion = block === 'basic' ? 1 : 4;
  const w = config.width;
  const stem = { conv: conv('conv1', 3, config.inChannels, w, 1), norm: norm('bn1', w) };

  const blocks: BlockSpec[] = [];
  let inPlanes = w;
  counts.forEach((count, stage) => {
    const planes = w * 2 ** stage;
    for (let i = 0; i < count; i++) {
      const stride = i === 0 && stage > 0 ? 2 : 1;
      const name = `layer${stage + 1}.${i}`;
      const convs =
        block === 'basic'
          ? [
              { conv: conv(`${name}.conv1`, 3, inPlanes, planes, stride), norm: norm(`${name}.bn1`, planes) },
              { conv: conv(`${name}.conv2`, 3, planes, planes, 1), norm: norm(`${name}.bn2`, planes) },
            ]
          : [
              { conv: conv(`${name}.conv1`, 1, inPlanes, planes, 1), norm: norm(`${name}.bn1`, planes) },
              { conv: conv(`${name}.conv2`, 3, planes, planes, stride), norm: norm(`${name}.bn2`, planes) },
              { conv: conv(`${name}.conv3`, 1, planes, planes * expansion, 1), norm: norm(`${name}.bn3`, planes * expansion) },
            ];
      const shortcut =
        stride !== 1 || inPlanes !== planes * expansion
          ? {
              conv: conv(`${name}.shortcut.0`, 1, inPlanes, planes * expansion, stride),
              norm: norm(`${name}.shortcut.1`, planes * expansion),
            }
          : null;
      blocks.push({ name, convs, shortcut });
      inPlanes = planes * expansion;
    }
  });

  const fanIn = inPlanes;
  const bound = 1 / Math.sqrt(fanIn);
  const linear = {
    weight: addParam('linear.weight', [fanIn, config.numClasses], { kind: 'uniform', bound }),
    bias: addParam('linear.bias', [config.numClasses], { kind: 'uniform', bound }),
    inFeatures: fanIn,
  };
  return { config, params, paramCount, batchNorms, runningStatsSize, stem, blocks, linear };
}

/** Draws the initial flat parameter vector; `uniform01` must be a seeded generator in [0, 1). */
export function initParams(spec: ModelSpec, uniform01: () => number): Float32Array {
  const flat = new Float32Array(spec.paramCount);
  for (const p of spec.params) {
    const view = flat.subarray(p.offset, p.offset + p.size);
    if (p.init.kind === 'const') view.fill(p.init.value);
    else for (let i = 0; i < view.length; i++) view[i] = (uniform01() * 2 - 1) * p.init.bound;
  }
  return flat;
}

/** Fresh running statistics: mean 0, variance 1 (PyTorch's BatchNorm2d defaults). */
export function initRunningStats(spec: ModelSpec): Float32Array {
  const stats = new Float32Array(spec.runningStatsSize);
  for (const bn of spec.batchNorms) stats.fill(1, bn.offset + bn.channels, bn.offset + 2 * bn.channels);
  return stats;
}
