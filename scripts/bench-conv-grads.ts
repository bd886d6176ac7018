// Throughput of the wasm convolution kernels on ResNet-on-CIFAR layer shapes:
// forward Conv2D (XNNPACK), our Conv2DBackpropInput (dX) and
// Conv2DBackpropFilter (dW) from wasm-conv-grads.ts, and the stock wasm
// Conv2DBackpropInput they replace.
//
//   npx tsc -p . && node dist/scripts/bench-conv-grads.js [--batch 32] [--min-ms 400] \
//     [--padding forward|explicit] [--out runs/bench-conv-grads.json]
//
// Each layer is called with the padding the forward pass gives it
// (model/forward.ts: convPadding): 'same' for the stride-1 3x3 layers, the
// input pre-padded by tf.pad (1 top and left on these even sizes) and 'valid'
// for the stride-2 ones, 'valid' for 1x1. `--padding explicit` uses PyTorch-style explicit padding instead, what
// the forward passed before tfjs-node's gradients ruled it out.
//
// All four compute the same 2*N*OH*OW*kH*kW*Ci*Co flops per call, so GFLOP/s
// compare directly. Prints a table and writes the rows as JSON (--out).

import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { Command, Option } from 'commander';
import * as tf from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { describeBackend, initBackend } from '../src/common/backend/backend.js';
import { stockWasmConv2DBackpropInput } from '../src/common/backend/wasm-conv-grads.js';
import { convPadding } from '../src/common/model/forward.js';
import { exitOnUsageError, intFlag, numberFlag } from '../src/common/cli/flags.js';
import { runMain } from '../src/common/cli/run-main.js';

interface LayerShape {
  name: string;
  size: number; // input height = width
  inC: number;
  outC: number;
  k: number;
  stride: number;
}

// Width-16 ResNet18 (CIFAR variant) layers plus the first stage at the
// standard width 64.
const LAYERS: LayerShape[] = [
  { name: 'stage1 3x3', size: 32, inC: 16, outC: 16, k: 3, stride: 1 },
  { name: 'stage2 3x3 down', size: 32, inC: 16, outC: 32, k: 3, stride: 2 },
  { name: 'stage2 1x1 shortcut', size: 32, inC: 16, outC: 32, k: 1, stride: 2 },
  { name: 'stage2 3x3', size: 16, inC: 32, outC: 32, k: 3, stride: 1 },
  { name: 'stage3 3x3 down', size: 16, inC: 32, outC: 64, k: 3, stride: 2 },
  { name: 'stage3 1x1 shortcut', size: 16, inC: 32, outC: 64, k: 1, stride: 2 },
  { name: 'stage3 3x3', size: 8, inC: 64, outC: 64, k: 3, stride: 1 },
  { name: 'stage4 3x3 down', size: 8, inC: 64, outC: 128, k: 3, stride: 2 },
  { name: 'stage4 3x3', size: 4, inC: 128, outC: 128, k: 3, stride: 1 },
  { name: 'w64 stage1 3x3', size: 32, inC: 64, outC: 64, k: 3, stride: 1 },
];

const KERNELS = ['forward', 'dX (ours)', 'dW (ours)', 'dX (stock)'] as const;
type KernelLabel = (typeof KERNELS)[number];

const PADDINGS = ['forward', 'explicit'] as const;
type Padding = (typeof PADDINGS)[number];

interface Options {
  batch: number;
  minMs: number;
  padding: Padding;
  out: string;
}

const program = exitOnUsageError(new Command('bench-conv-grads')
  .description('GFLOP/s of the wasm Conv2D forward, our dX and dW kernels and the stock dX kernel on ResNet-on-CIFAR layer shapes')
  .addOption(new Option('--batch <n>', 'images per call').argParser(intFlag(1)).default(32))
  .addOption(new Option('--min-ms <ms>', 'time each kernel for at least this long (median of the calls)').argParser(numberFlag(0, true)).default(400))
  .addOption(new Option('--padding <kind>', "the forward pass's padding, or PyTorch-style explicit padding").choices(PADDINGS).default('forward'))
  .option('--out <file>', 'JSON report', path.join('runs', 'bench-conv-grads.json')));

/** Median milliseconds of `run` over at least 3 calls and `minMs` in total, after one warm-up call. */
function timeMs(run: () => void, minMs: number): number {
  run();
  const samples: number[] = [];
  const start = performance.now();
  while (samples.length < 3 || performance.now() - start < minMs) {
    const t0 = performance.now();
    run();
    samples.push(performance.now() - t0);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)]!;
}

/** The input shape and the pad attribute a layer's convolution is called with. */
function layerPadding(layer: LayerShape, batch: number, padding: Padding): { xShape: [number, number, number, number]; pad: tf.Conv2DAttrs['pad'] } {
  const torchPad = (layer.k - 1) / 2; // PyTorch-style symmetric padding
  if (padding === 'explicit') {
    return { xShape: [batch, layer.size, layer.size, layer.inC], pad: [[0, 0], [torchPad, torchPad], [torchPad, torchPad], [0, 0]] };
  }
  const { prePad, pad } = convPadding({ pad: torchPad, stride: layer.stride }, [layer.k, layer.k], [layer.size, layer.size]);
  const [[top, bottom], [left, right]] = prePad ?? [[0, 0], [0, 0]];
  return { xShape: [batch, layer.size + top + bottom, layer.size + left + right, layer.inC], pad };
}

async function run({ batch, minMs, padding, out: outFile }: Options): Promise<void> {
  await initBackend('wasm');
  const backend = tf.backend() as unknown as BackendWasm;
  const stock = stockWasmConv2DBackpropInput();
  if (stock === undefined) throw new Error('stock wasm Conv2DBackpropInput kernel not found');
  const kernelFunc = (name: string): tf.KernelFunc => tf.getKernel(name, 'wasm')!.kernelFunc;
  // Calls a kernel the way the engine would, then frees its output.
  const call = (fn: tf.KernelFunc, inputs: tf.NamedTensorInfoMap, attrs: object) => (): void => {
    const out = fn({ inputs, backend, attrs: attrs as tf.NamedAttrMap }) as tf.TensorInfo;
    backend.disposeData(out.dataId);
  };

  const rows: Record<string, string | number>[] = [];
  for (const layer of LAYERS) {
    const { xShape, pad } = layerPadding(layer, batch, padding);
    const wShape: [number, number, number, number] = [layer.k, layer.k, layer.inC, layer.outC];
    const x = tf.randomNormal(xShape);
    const w = tf.randomNormal(wShape);
    const dy = tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, layer.stride, pad);
    const [, outH, outW] = dy.shape;
    const flops = 2 * batch * outH * outW * layer.k * layer.k * layer.inC * layer.outC;
    const common = { strides: layer.stride, pad, dataFormat: 'NHWC' };

    const runs: Record<KernelLabel, () => void> = {
      'forward': call(kernelFunc('Conv2D'), { x, filter: w }, { ...common, dilations: 1 }),
      'dX (ours)': call(kernelFunc('Conv2DBackpropInput'), { dy, filter: w }, { ...common, inputShape: xShape }),
      'dW (ours)': call(kernelFunc('Conv2DBackpropFilter'), { x, dy }, { ...common, filterShape: wShape }),
      'dX (stock)': call(stock.kernelFunc, { dy, filter: w }, { ...common, inputShape: xShape }),
    };
    const row: Record<string, string | number> = {
      layer: layer.name,
      shape: `${layer.size}x${layer.size}x${layer.inC}->${layer.outC} k${layer.k} s${layer.stride}`,
      pad: typeof pad === 'string' ? `${xShape[1]}x${xShape[2]} ${pad}` : 'explicit',
      mflop: Math.round(flops / 1e6),
    };
    for (const label of KERNELS) {
      const ms = timeMs(runs[label], minMs);
      row[`${label} ms`] = Number(ms.toFixed(2));
      row[`${label} GFLOP/s`] = Number((flops / ms / 1e6).toFixed(2));
    }
    row['dX speedup vs stock'] = Number(((row['dX (stock) ms'] as number) / (row['dX (ours) ms'] as number)).toFixed(1));
    rows.push(row);
    console.log(`${layer.name}: done`);
    tf.dispose([x, w, dy]);
  }

  console.log(`\nwasm conv kernels, batch ${batch}, ${padding} padding, ${describeBackend()}, ${os.cpus()[0]?.model ?? 'unknown cpu'}`);
  console.table(rows.map((r) => ({
    layer: r.layer,
    shape: r.shape,
    pad: r.pad,
    MFLOP: r.mflop,
    ...Object.fromEntries(KERNELS.map((k) => [k, r[`${k} GFLOP/s`]])),
    'dX x': r['dX speedup vs stock'],
  })));
  console.log('(columns forward..dX (stock) are GFLOP/s; "dX x" = our dX speedup over the stock kernel)');

  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, JSON.stringify({
    date: new Date().toISOString(),
    backend: describeBackend(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    node: process.version,
    tfjs: tf.version_core,
    batch,
    padding,
    layers: rows,
  }, null, 2) + '\n');
  console.log(`wrote ${outFile}`);
}

await runMain('bench-conv-grads', async () => {
  program.parse();
  await run(program.opts<Options>());
});
