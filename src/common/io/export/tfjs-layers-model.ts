// The trained network as a TensorFlow.js LayersModel, so it runs anywhere
// tf.loadLayersModel does (browsers, React Native, tfjs-node) without this
// package. The trainer computes with plain ops (model/forward.ts); this
// rebuilds the same graph from Keras-style layers, in eval mode.
import * as tfl from '@tensorflow/tfjs-layers';
import * as tf from '@tensorflow/tfjs-core';
import { BN_EPS } from '../../model/batchnorm.js';
import { convPadding } from '../../model/forward.js';
import type { ConvOp, ModelSpec, NormOp } from '../../model/spec.js';

/** Layer names are the state_dict prefixes, so a layer is easy to match with the PyTorch model. */
export function buildLayersModel(spec: ModelSpec, weights: Float32Array, runningStats: Float32Array): tfl.LayersModel {
  if (weights.length !== spec.paramCount) throw new Error(`weights have ${weights.length} values, ${spec.config.name} needs ${spec.paramCount}`);
  if (runningStats.length !== spec.runningStatsSize) {
    throw new Error(`running statistics have ${runningStats.length} values, ${spec.config.name} needs ${spec.runningStatsSize}`);
  }
  const param = (name: string) => {
    const p = spec.params.find((q) => q.name === name);
    if (!p) throw new Error(`internal: no parameter ${name}`);
    return tf.tensor(weights.subarray(p.offset, p.offset + p.size), p.shape, 'float32');
  };
  // Weights are set after tf.model() is built (layers create them on first call);
  // collect the setters here and run them at the end.
  const assign: Array<() => void> = [];

  const conv = (op: ConvOp, x: tfl.SymbolicTensor): tfl.SymbolicTensor => {
    const name = op.weight.replace(/\.weight$/, '');
    const [k, , , filters] = spec.params.find((p) => p.name === op.weight)!.shape;
    // The trainer's own padding rule (model/forward.ts): 'same' where it equals
    // PyTorch's symmetric padding (stride 1), zeros then 'valid' elsewhere
    // (stride 2, where 'same' would pad only bottom/right).
    const [, h, w] = x.shape as number[];
    const { prePad, pad } = convPadding(op, [k, k], [h, w]);
    const input = prePad === null
      ? x
      : tfl.layers.zeroPadding2d({ padding: prePad, name: `${name}.pad` }).apply(x) as tfl.SymbolicTensor;
    const layer = tfl.layers.conv2d({ filters, kernelSize: k, strides: op.stride, padding: pad, useBias: false, name });
    assign.push(() => layer.setWeights([param(op.weight)]));
    return layer.apply(input) as tfl.SymbolicTensor;
  };
  const norm = (op: NormOp, x: tfl.SymbolicTensor): tfl.SymbolicTensor => {
    if (op.bn === null) return x;
    const bn = spec.batchNorms.find((b) => b.name === op.bn)!;
    // Keras momentum is PyTorch's 1 - momentum; it only matters to whoever fine-tunes the export.
    const layer = tfl.layers.batchNormalization({ axis: -1, epsilon: BN_EPS, momentum: 0.9, name: bn.name });
    assign.push(() =>
      layer.setWeights([
        param(`${bn.name}.weight`),
        param(`${bn.name}.bias`),
        tf.tensor1d(runningStats.subarray(bn.offset, bn.offset + bn.channels)),
        tf.tensor1d(runningStats.subarray(bn.offset + bn.channels, bn.offset + 2 * bn.channels)),
      ]),
    );
    return layer.apply(x) as tfl.SymbolicTensor;
  };
  const unit = (u: { conv: ConvOp; norm: NormOp }, x: tfl.SymbolicTensor) => norm(u.norm, conv(u.conv, x));
  const relu = (x: tfl.SymbolicTensor, name: string) => tfl.layers.reLU({ name }).apply(x) as tfl.SymbolicTensor;

  const input = tfl.input({ shape: [32, 32, spec.config.inChannels], name: 'input' });
  let out = relu(unit(spec.stem, input), 'relu1');
  for (const block of spec.blocks) {
    let y = out;
    block.convs.forEach((u, i) => {
      y = unit(u, y);
      if (i < block.convs.length - 1) y = relu(y, `${block.name}.relu${i + 1}`);
    });
    const shortcut = block.shortcut ? unit(block.shortcut, out) : out;
    out = relu(tfl.layers.add({ name: `${block.name}.add` }).apply([y, shortcut]) as tfl.SymbolicTensor, `${block.name}.relu`);
  }
  const pooled = tfl.layers.averagePooling2d({ poolSize: 4, name: 'avgpool' }).apply(out) as tfl.SymbolicTensor;
  const flat = tfl.layers.flatten({ name: 'flatten' }).apply(pooled) as tfl.SymbolicTensor;
  const dense = tfl.layers.dense({ units: spec.config.numClasses, name: 'linear' });
  assign.push(() => dense.setWeights([param(spec.linear.weight), param(spec.linear.bias)]));
  const logits = dense.apply(flat) as tfl.SymbolicTensor;

  const model = tfl.model({ inputs: input, outputs: logits, name: `${spec.config.name}_w${spec.config.width}` });
  for (const set of assign) tf.tidy(set);
  return model;
}
