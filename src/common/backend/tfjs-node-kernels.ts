// What the 'tensorflow' backend (@tensorflow/tfjs-node and -gpu 4.22) accepts,
// kernel by kernel, as read from its source in tensorflow/tfjs. That package
// cannot be installed where the tests run (its install script downloads
// libtensorflow), so test/tfjs-node-conformance.test.ts records every kernel
// a training step, an evaluation, a snapshot and an export dispatch on the cpu
// backend (tfjs-core maps ops and gradients to kernels the same way on every
// backend) and checks each call against this table. A GPU-only failure such
// as "TF Backend supports only 'valid' and 'same' padding" then fails CI on a
// CPU.
//
// A row exists only for a kernel whose tfjs-node source has been read: a
// kernel the trainer starts to use fails the test until someone reads its
// file (tfjs-node/src/kernels/<Name>.ts, and register_all_kernels.ts to see
// that it is registered at all) and adds its row here with its rule. The
// rules come from those files and from nodejs_kernel_backend.ts (dtypes,
// fused activations); re-read them when the tfjs version changes.
import * as tf from '@tensorflow/tfjs-core';

/** The tfjs-node release the rows were read against. */
export const TFJS_NODE_VERSION = '4.22.0';

/** One kernel invocation as the engine hands it to a backend. */
export interface KernelCall {
  kernel: string;
  inputs: Record<string, { shape: number[]; dtype: tf.DataType } | null>;
  attrs: Record<string, unknown>;
}

export interface TfjsNodeKernel {
  /** The file in github.com/tensorflow/tfjs this row was read from. */
  source: string;
  /** What that file requires of the call, in words ('any' when it passes every call through). */
  rule: string;
  /**
   * Null when tfjs-node accepts the call and runs it on the device; otherwise
   * what it would throw, how it would differ, or the host work it would do
   * (a training step must not build activation-sized tensors in JavaScript).
   */
  check?: (call: KernelCall) => string | null;
}

type Shape4 = [number, number, number, number];
type Pad = tf.Conv2DAttrs['pad'];
type RoundingMode = tf.Conv2DAttrs['dimRoundingMode'];

const KERNELS_DIR = 'tfjs-node/src/kernels';
const BACKEND_FILE = 'tfjs-node/src/nodejs_kernel_backend.ts';

function shapeOf(call: KernelCall, input: string): Shape4 {
  const info = call.inputs[input];
  if (!info) throw new Error(`${call.kernel} call without its input "${input}"`);
  return info.shape as Shape4;
}

function dataFormatOf(call: KernelCall): 'channelsLast' | 'channelsFirst' {
  return tf.backend_util.convertConv2DDataFormat((call.attrs.dataFormat as 'NHWC' | 'NCHW' | undefined) ?? 'NHWC');
}

/** The padding type tfjs-node derives, with the very function its kernels call. */
function convPadType(call: KernelCall, inShape: Shape4, filterShape: Shape4, dilations: unknown): string {
  const a = call.attrs;
  return tf.backend_util.computeConv2DInfo(
    inShape, filterShape, a.strides as number | [number, number], (dilations ?? 1) as number | [number, number],
    a.pad as Pad, a.dimRoundingMode as RoundingMode, false, dataFormatOf(call)).padInfo.type;
}

function poolPadType(call: KernelCall, inShape: Shape4): string {
  const a = call.attrs;
  return tf.backend_util.computePool2DInfo(
    inShape, a.filterSize as number | [number, number], a.strides as number | [number, number], 1,
    a.pad as Pad, a.dimRoundingMode as RoundingMode).padInfo.type;
}

function padTypeIn(type: string, allowed: string[]): string | null {
  return allowed.includes(type)
    ? null
    : `padding resolves to ${type}, and TF Backend supports only ${allowed.join(', ')} here ` +
        `("TF Backend supports only 'valid' and 'same' padding while padding was ${type}")`;
}

/** Conv2DBackpropInput/Filter declare T = float32 whatever the inputs are. */
function float32Inputs(call: KernelCall): string | null {
  const bad = Object.entries(call.inputs).filter(([, t]) => t !== null && t.dtype !== 'float32');
  return bad.length === 0 ? null : `the op is built with T = float32, but ${bad.map(([n, t]) => `${n} is ${t!.dtype}`).join(', ')}`;
}

function firstProblem(...problems: (string | null)[]): string | null {
  return problems.find((p) => p !== null) ?? null;
}

/** NodeJSKernelBackend.applyActivation: the activations the fused kernels can apply. */
const FUSED_ACTIVATIONS = ['linear', 'relu', 'prelu', 'leakyrelu', 'elu', 'relu6', 'sigmoid'];

function fusedActivation(call: KernelCall): string | null {
  const activation = call.attrs.activation as string | null | undefined;
  if (activation != null && !FUSED_ACTIVATIONS.includes(activation)) {
    return `activation "${activation}" is not one of ${FUSED_ACTIVATIONS.join(', ')} (${BACKEND_FILE}: applyActivation)`;
  }
  return null;
}

export const TFJS_NODE_KERNELS: Readonly<Record<string, TfjsNodeKernel>> = {
  Conv2D: {
    source: `${KERNELS_DIR}/Conv2D.ts`,
    rule: "padding VALID, SAME or EXPLICIT (a plain number, NUMBER, throws); explicit paddings go to TF's explicit_paddings",
    check: (c) => padTypeIn(convPadType(c, shapeOf(c, 'x'), shapeOf(c, 'filter'), c.attrs.dilations), ['VALID', 'SAME', 'EXPLICIT']),
  },
  Conv2DBackpropInput: {
    source: `${KERNELS_DIR}/Conv2DBackpropInput.ts`,
    rule: 'padding VALID or SAME only (EXPLICIT and NUMBER throw); T is float32; dilations fixed at 1',
    check: (c) => firstProblem(
      padTypeIn(convPadType(c, c.attrs.inputShape as Shape4, shapeOf(c, 'filter'), 1), ['VALID', 'SAME']),
      float32Inputs(c)),
  },
  Conv2DBackpropFilter: {
    source: `${KERNELS_DIR}/Conv2DBackpropFilter.ts`,
    rule: 'padding VALID or SAME only (EXPLICIT and NUMBER throw); T is float32; dilations fixed at 1',
    check: (c) => firstProblem(
      padTypeIn(convPadType(c, shapeOf(c, 'x'), c.attrs.filterShape as Shape4, 1), ['VALID', 'SAME']),
      float32Inputs(c)),
  },
  FusedConv2D: {
    source: `${KERNELS_DIR}/FusedConv2D.ts`,
    rule: "dataFormat 'NHWC' only; padding as Conv2D (it calls conv2dImpl); bias added with add(); activation as applyActivation",
    check: (c) => firstProblem(
      c.attrs.dataFormat === 'NHWC' ? null : `dataFormat ${String(c.attrs.dataFormat)}: "Node backend FusedConv2D does not support dataFormat"`,
      padTypeIn(convPadType(c, shapeOf(c, 'x'), shapeOf(c, 'filter'), c.attrs.dilations), ['VALID', 'SAME', 'EXPLICIT']),
      fusedActivation(c)),
  },
  AvgPool: {
    source: `${KERNELS_DIR}/AvgPool.ts`,
    rule: 'padding VALID or SAME only (computePool2DInfo)',
    check: (c) => padTypeIn(poolPadType(c, shapeOf(c, 'x')), ['VALID', 'SAME']),
  },
  AvgPoolGrad: {
    source: `${KERNELS_DIR}/AvgPoolGrad.ts`,
    rule: 'padding VALID or SAME only (computePool2DInfo on the input shape)',
    check: (c) => padTypeIn(poolPadType(c, shapeOf(c, 'input')), ['VALID', 'SAME']),
  },
  MaxPool: {
    source: `${KERNELS_DIR}/MaxPool.ts`,
    rule: 'padding VALID or SAME only (computePool2DInfo)',
    check: (c) => padTypeIn(poolPadType(c, shapeOf(c, 'x')), ['VALID', 'SAME']),
  },
  FusedBatchNorm: {
    source: `${KERNELS_DIR}/FusedBatchNorm.ts`,
    rule: 'any: rank-1 statistics run TF FusedBatchNorm (NHWC, is_training false), higher ranks fall back to rsqrt/mul/sub/add',
  },
  _FusedMatMul: {
    source: `${KERNELS_DIR}/_FusedMatMul.ts`,
    rule: 'matMul + add(bias) + applyActivation; leakyreluAlpha is not passed on (tf.leakyRelu default 0.2)',
    check: (c) => firstProblem(
      fusedActivation(c),
      c.attrs.activation === 'leakyrelu' && c.attrs.leakyreluAlpha !== undefined && c.attrs.leakyreluAlpha !== 0.2
        ? `leakyreluAlpha ${String(c.attrs.leakyreluAlpha)} would be computed as 0.2`
        : null),
  },
  BatchMatMul: { source: `${KERNELS_DIR}/BatchMatMul.ts`, rule: 'any: TF BatchMatMulV2 with adj_x/adj_y = transposeA/transposeB (broadcasts)' },
  Step: {
    source: `${KERNELS_DIR}/Step.ts`,
    rule: 'where(x > 0, ones(x.shape), fill(alpha)), NaN kept (Select over IsNan): ones() is built on the host and uploaded',
    check: (c) => `Step builds ones(${JSON.stringify(c.inputs.x?.shape ?? [])}) in JavaScript and uploads it on every call ` +
      '(tfjs-core\'s ReLU gradient); on tensorflow, model/forward.ts takes the ReLU\'s gradient from greater(y, 0)',
  },
  Greater: { source: `${KERNELS_DIR}/Greater.ts`, rule: 'any: TF Greater, T = upcastType(a, b), broadcasts; the ReLU gradient mask of model/forward.ts' },
  Concat: {
    source: `${KERNELS_DIR}/Concat.ts`,
    rule: 'any: TF ConcatV2 over N inputs, axis as an int32 scalar; the one gradient read of model/device-transfer.ts',
  },
  SplitV: {
    source: `${KERNELS_DIR}/SplitV.ts`,
    rule: 'any: sizes through backend_util.prepareSplitSize, passed as int32 tensors; the one weight upload of model/device-transfer.ts',
  },
  OneHot: { source: `${KERNELS_DIR}/OneHot.ts`, rule: 'any: axis fixed at -1 (tf.oneHot always appends the depth axis), T = dtype, TI = indices dtype' },
  PadV2: { source: `${KERNELS_DIR}/PadV2.ts`, rule: 'any: paddings as an int32 [rank, 2] tensor, constantValue as a scalar of x.dtype' },
  Mean: { source: `${KERNELS_DIR}/Mean.ts`, rule: 'any: x cast to float32 first, axes through util.parseAxisParam' },
  Sum: { source: `${KERNELS_DIR}/Sum.ts`, rule: 'any: axes through util.parseAxisParam, keep_dims' },
  Max: { source: `${KERNELS_DIR}/Max.ts`, rule: 'any: reductionIndices through util.parseAxisParam, keep_dims' },
  Cast: { source: `${KERNELS_DIR}/Cast.ts`, rule: 'any: SrcT/DstT, Truncate false' },
  Slice: { source: `${KERNELS_DIR}/Slice.ts`, rule: 'any: begin/size through slice_util.parseSliceParams' },
  Reshape: { source: `${KERNELS_DIR}/Reshape.ts`, rule: 'any: shape as an int32 tensor' },
  Transpose: { source: `${KERNELS_DIR}/Transpose.ts`, rule: 'any: perm as an int32 tensor' },
  Tile: { source: `${KERNELS_DIR}/Tile.ts`, rule: 'any: reps as an int32 tensor' },
  Fill: { source: `${KERNELS_DIR}/Fill.ts`, rule: 'any: dtype defaults to float32 for a number' },
  AddN: { source: `${KERNELS_DIR}/AddN.ts`, rule: 'any: T from the first input, N inputs' },
  Identity: { source: `${KERNELS_DIR}/Identity.ts`, rule: 'any: shares the input data id' },
  Add: { source: `${KERNELS_DIR}/Add.ts`, rule: 'any: T = upcastType(a, b)' },
  RealDiv: { source: `${KERNELS_DIR}/RealDiv.ts`, rule: 'any: T = upcastType(a, b)' },
  Relu: { source: `${KERNELS_DIR}/Relu.ts`, rule: 'any: executeSingleInput' },
  Square: { source: `${KERNELS_DIR}/Square.ts`, rule: 'any: executeSingleInput' },
  Sub: { source: `${KERNELS_DIR}/Sub.ts`, rule: 'any: T = upcastType(a, b)' },
  Multiply: { source: `${KERNELS_DIR}/Multiply.ts`, rule: "any: TF 'Mul', T = upcastType(a, b)" },
  Neg: { source: `${KERNELS_DIR}/Neg.ts`, rule: 'any: executeSingleInput' },
  Rsqrt: { source: `${KERNELS_DIR}/Rsqrt.ts`, rule: 'any: executeSingleInput' },
  Log: { source: `${KERNELS_DIR}/Log.ts`, rule: 'any: executeSingleInput' },
  Exp: {
    source: `${KERNELS_DIR}/Exp.ts`,
    rule: 'float input: an int32 x is cast with toFloat() and then disposed, the caller\'s tensor with it',
    check: (c) => (c.inputs.x?.dtype === 'int32' ? 'an int32 input would be disposed by the kernel' : null),
  },
};

/** Input dtypes NodeJSKernelBackend.getDTypeInteger can hand to TensorFlow. */
const TF_DTYPES: tf.DataType[] = ['float32', 'int32', 'bool', 'complex64', 'string'];

/** Why tfjs-node would reject (or compute differently) this call, or null when it accepts it. */
export function tfjsNodeProblem(call: KernelCall): string | null {
  const row = TFJS_NODE_KERNELS[call.kernel];
  if (row === undefined) {
    return `no row for kernel ${call.kernel}: read ${KERNELS_DIR}/${call.kernel}.ts at tfjs-v${TFJS_NODE_VERSION} ` +
      `(and tfjs-node/src/register_all_kernels.ts: an unregistered kernel throws "Kernel '${call.kernel}' not registered ` +
      `for backend 'tensorflow'"), then add its rule to src/common/backend/tfjs-node-kernels.ts`;
  }
  const badDtype = Object.entries(call.inputs).find(([, t]) => t !== null && !TF_DTYPES.includes(t.dtype));
  if (badDtype) return `input ${badDtype[0]} has dtype ${badDtype[1]!.dtype}, which ${BACKEND_FILE} cannot pass to TensorFlow`;
  const problem = row.check?.(call) ?? null;
  return problem === null ? null : `${problem} [${row.source}]`;
}
