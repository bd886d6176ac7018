import { describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import {
  BackendUnavailableError,
  backendName,
  checkNodeForTensorflow,
  describeBackend,
  describeTensorflow,
  initBackend,
  loadTensorflowPackage,
  TENSORFLOW_CUDA_LIBRARIES,
  type TensorflowLoader,
  wasmUsesSimd,
} from '../src/common/backend/backend.js';
import { stockWasmConv2DBackpropInput } from '../src/common/backend/wasm-conv-grads.js';

// The 'tensorflow' backend is an optional native dependency. The assertions
// below follow whether it is installed, so the test stays honest on a machine
// that has it.
const require = createRequire(import.meta.url);
const tensorflowInstalled = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'].some((pkg) => {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
});

/**
 * 3x3 all-ones filter over a 4x4 all-ones image with 'same' padding: each
 * output counts the in-bounds pixels of its 3x3 window (corners 4, edges 6,
 * interior 9).
 */
function onesConv(): number[] {
  return tf.tidy(() => Array.from(tf.conv2d(tf.ones([1, 4, 4, 1]) as tf.Tensor4D, tf.ones([3, 3, 1, 1]) as tf.Tensor4D, 1, 'same').dataSync()));
}
const ONES_CONV = [4, 6, 6, 4, 6, 9, 9, 6, 6, 9, 9, 6, 4, 6, 6, 4];

/**
 * Gradients of the sum of that conv: with respect to the filter, each tap
 * counts the outputs whose window it sees in bounds (9 at the corners, 12 on
 * the edges, 16 in the centre); with respect to the image, ONES_CONV again.
 */
function onesConvGrads(): { dW: number[]; dX: number[] } {
  return tf.tidy(() => {
    const f = (x: tf.Tensor, w: tf.Tensor) => tf.sum(tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'same'));
    const [dX, dW] = tf.grads(f)([tf.ones([1, 4, 4, 1]), tf.ones([3, 3, 1, 1])]);
    return { dW: Array.from(dW.dataSync()), dX: Array.from(dX.dataSync()) };
  });
}
const ONES_CONV_GRADS = { dW: [9, 12, 9, 12, 16, 12, 9, 12, 9], dX: ONES_CONV };

describe('initBackend', () => {
  it('selects cpu and computes a conv', async () => {
    expect(await initBackend('cpu')).toBe('cpu');
    expect(backendName()).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
    expect(describeBackend()).toBe('cpu');
    expect(onesConv()).toEqual(ONES_CONV);
  });

  it('selects wasm, installs the conv gradient kernels, and computes a conv', async () => {
    expect(await initBackend('wasm')).toBe('wasm');
    expect(await initBackend('wasm')).toBe('wasm'); // idempotent
    expect(backendName()).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    // Stock wasm has no filter gradient and a naive input gradient: both are ours now, and compute.
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).toBeDefined();
    expect(tf.getKernel('Conv2DBackpropInput', 'wasm')).not.toBe(stockWasmConv2DBackpropInput());
    expect(onesConvGrads()).toEqual(ONES_CONV_GRADS);
    expect(onesConv()).toEqual(ONES_CONV);
    expect(describeBackend()).toMatch(/^wasm \((SIMD|no SIMD), \d+ threads?\)$/);
    expect(wasmUsesSimd()).toBe(tf.env().getBool('WASM_HAS_SIMD_SUPPORT'));
  });

  it('switches back and forth between cpu and wasm in one process', async () => {
    await initBackend('cpu');
    const x = tf.ones([1, 4, 4, 1]); // created on cpu
    await initBackend('wasm');
    const sum = tf.sum(tf.mul(x, 2)); // runs on wasm, data moved lazily
    expect(sum.dataSync()[0]).toBe(32);
    await initBackend('cpu');
    expect(backendName()).toBe('cpu');
    expect(onesConv()).toEqual(ONES_CONV);
    tf.dispose([x, sum]);
  });

  it('explains in one line how to get the "tensorflow" backend', async () => {
    if (tensorflowInstalled) {
      // Installed: it either loads, or the error says it is a broken install.
      try {
        expect(await initBackend('tensorflow')).toBe('tensorflow');
      } catch (err) {
        expect(err).toBeInstanceOf(BackendUnavailableError);
        expect((err as Error).message).toMatch(/installed but failed to load|different copy/);
      }
      return;
    }
    const before = backendName();
    const err = await initBackend('tensorflow').then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(BackendUnavailableError);
    const message = (err as Error).message;
    expect(message).not.toContain('\n');
    expect(message).toContain('npm install @tensorflow/tfjs-node-gpu');
    expect(message).toContain('--backend wasm');
    expect(backendName()).toBe(before); // a failed choice leaves the active backend alone
  });

  it('"auto" falls back to wasm when tensorflow is unavailable', async () => {
    await initBackend('cpu');
    const picked = await initBackend('auto');
    if (tensorflowInstalled && picked === 'tensorflow') return;
    expect(picked).toBe('wasm');
    expect(backendName()).toBe('wasm');
    expect(describeBackend()).toContain('tensorflow unavailable');
    expect(onesConv()).toEqual(ONES_CONV);
  });

  it('rejects an unknown choice with the list of valid ones', async () => {
    await expect(initBackend('gpu' as never)).rejects.toThrow(/unknown backend "gpu": use one of tensorflow, wasm, cpu, auto/);
  });
});

const GPU = '@tensorflow/tfjs-node-gpu';
const CPU = '@tensorflow/tfjs-node';

/**
 * A stand-in for the native packages: which are installed, and what loading
 * each does; the GPU package runs on a GPU unless `device` says otherwise
 * (`usesGpu` is what the loaded backend's isUsingGpuDevice says).
 */
function fakeLoader(
  nodeVersion: string, packages: Record<string, () => void>, calls: string[] = [],
  device: { usesGpu?: boolean | null; env?: TensorflowLoader['env'] } = {},
): TensorflowLoader {
  return {
    nodeVersion,
    installed: (pkg) => pkg in packages,
    load: async (pkg) => {
      calls.push(pkg);
      packages[pkg]!();
    },
    registered: () => true,
    usesGpu: () => {
      calls.push('usesGpu');
      return device.usesGpu === undefined ? true : device.usesGpu;
    },
    env: device.env ?? {},
  };
}

const missingCuda = () => {
  throw new Error('libcudart.so.11.0: cannot open shared object file: No such file or directory\n    at Module._extensions..node');
};

describe('loading the "tensorflow" packages', () => {
  it('refuses Node 23 and later, naming the version and the fix, before loading anything', async () => {
    for (const version of ['23.0.0', '24.11.1']) {
      expect(() => checkNodeForTensorflow(version)).toThrow(BackendUnavailableError);
      expect(() => checkNodeForTensorflow(version)).toThrow(new RegExp(`does not run on Node ${version.replaceAll('.', '\\.')}: .*util\\.isNullOrUndefined.*Node 20 or 22, or use --backend wasm`));
    }
    for (const version of ['20.20.2', '22.12.0', process.versions.node]) expect(() => checkNodeForTensorflow(version)).not.toThrow();
    const calls: string[] = [];
    const err = await loadTensorflowPackage(fakeLoader('23.3.0', { [GPU]: () => {}, [CPU]: () => {} }, calls)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendUnavailableError);
    expect((err as Error).message).toMatch(/Node 23\.3\.0/);
    expect(calls).toEqual([]);
  });

  it('prefers the GPU package, and keeps its load error when the CPU package stands in', async () => {
    expect(await loadTensorflowPackage(fakeLoader('22.12.0', { [GPU]: () => {}, [CPU]: () => {} }))).toEqual({ pkg: GPU, skipped: [], device: 'gpu' });
    const calls: string[] = [];
    const loaded = await loadTensorflowPackage(fakeLoader('20.20.2', { [GPU]: missingCuda, [CPU]: () => {} }, calls));
    expect(calls).toEqual([GPU, CPU]);
    expect(loaded).toEqual({
      pkg: CPU,
      skipped: [`${GPU} is installed but failed to load: libcudart.so.11.0: cannot open shared object file: No such file or directory`],
    });
  });

  it('when both fail, names each package and its error in one line', async () => {
    const err = await loadTensorflowPackage(fakeLoader('20.20.2', {
      [GPU]: missingCuda,
      [CPU]: () => {
        throw new Error('libtensorflow.so.2: cannot open shared object file');
      },
    })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendUnavailableError);
    const message = (err as Error).message;
    expect(message).not.toContain('\n');
    expect(message).toBe(`backend "tensorflow": ${GPU} is installed but failed to load: libcudart.so.11.0: cannot open shared object file: ` +
      `No such file or directory; ${CPU} is installed but failed to load: libtensorflow.so.2: cannot open shared object file; ` +
      'reinstall it or use --backend wasm');
  });

  it('with neither installed, says how to install one', async () => {
    await expect(loadTensorflowPackage(fakeLoader('20.20.2', {}))).rejects.toThrow(/needs @tensorflow\/tfjs-node-gpu .*npm install @tensorflow\/tfjs-node-gpu/);
  });
});

describe('the GPU package on the CPU', () => {
  const both = { [GPU]: () => {}, [CPU]: () => {} };

  it('is fine when TensorFlow uses a GPU device, and says so', async () => {
    const loaded = await loadTensorflowPackage(fakeLoader('22.12.0', both, [], { usesGpu: true, env: { CUDA_VISIBLE_DEVICES: '0' } }));
    expect(loaded).toEqual({ pkg: GPU, skipped: [], device: 'gpu' });
    expect(describeTensorflow(loaded)).toBe(`tensorflow (${GPU}, on the GPU)`);
  });

  it('is an error when TensorFlow found no GPU: it names every CUDA library it needs and the fixes, and does not try the CPU package', async () => {
    const calls: string[] = [];
    const err = await loadTensorflowPackage(fakeLoader('22.12.0', both, calls, { usesGpu: false, env: { LD_LIBRARY_PATH: '/usr/local/cuda/lib64' } }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendUnavailableError);
    const message = (err as Error).message;
    expect(message).toMatch(new RegExp(`^backend "tensorflow": ${GPU} loaded, but TensorFlow found no GPU and would run on the CPU\\.`));
    expect(TENSORFLOW_CUDA_LIBRARIES).toEqual([
      'libcudart.so.11.0', 'libcublas.so.11', 'libcublasLt.so.11', 'libcufft.so.10', 'libcurand.so.10', 'libcusolver.so.11', 'libcusparse.so.11', 'libcudnn.so.8',
    ]);
    for (const lib of TENSORFLOW_CUDA_LIBRARIES) expect(message).toContain(lib);
    expect(message).toContain('LD_LIBRARY_PATH=/usr/local/cuda/lib64');
    expect(message).toMatch(/Install CUDA 11\.x .*cuDNN 8\.1 or later .*LD_LIBRARY_PATH/);
    expect(message).toMatch(/--backend wasm/);
    expect(message).toMatch(/CUDA_VISIBLE_DEVICES=-1/);
    expect(message).not.toContain('\n');
    // The GPU package's libtensorflow is loaded by now: loading the CPU package's too would conflict.
    expect(calls).toEqual([GPU, 'usesGpu']);
  });

  it('is what was asked for when CUDA_VISIBLE_DEVICES hides every GPU, and describeBackend says it runs on the CPU', async () => {
    for (const hidden of ['-1', '', 'NoDevFiles']) {
      const loaded = await loadTensorflowPackage(fakeLoader('22.12.0', both, [], { usesGpu: false, env: { CUDA_VISIBLE_DEVICES: hidden } }));
      expect(loaded).toEqual({ pkg: GPU, skipped: [], device: 'cpu', deviceNote: `CUDA_VISIBLE_DEVICES=${hidden} hides every GPU` });
      expect(describeTensorflow(loaded)).toBe(`tensorflow (${GPU}, on the CPU: CUDA_VISIBLE_DEVICES=${hidden} hides every GPU)`);
    }
    // A GPU named but not found is not a request for the CPU.
    await expect(loadTensorflowPackage(fakeLoader('22.12.0', both, [], { usesGpu: false, env: { CUDA_VISIBLE_DEVICES: '3' } })))
      .rejects.toThrow(/found no GPU and would run on the CPU/);
  });

  it('is not checked for the CPU package, nor when the backend does not say', async () => {
    const calls: string[] = [];
    const cpu = await loadTensorflowPackage(fakeLoader('22.12.0', { [CPU]: () => {} }, calls, { usesGpu: false }));
    expect(cpu).toEqual({ pkg: CPU, skipped: [] });
    expect(calls).toEqual([CPU]);
    expect(describeTensorflow(cpu)).toBe(`tensorflow (${CPU})`);
    const unknown = await loadTensorflowPackage(fakeLoader('22.12.0', both, [], { usesGpu: null }));
    expect(unknown).toEqual({ pkg: GPU, skipped: [], device: null });
    expect(describeTensorflow(unknown)).toBe(`tensorflow (${GPU})`);
  });

  it('keeps the GPU package\'s load error in the line of the CPU package that stands in', () => {
    expect(describeTensorflow({ pkg: CPU, skipped: [`${GPU} is installed but failed to load: libcudart.so.11.0: cannot open shared object file`] }))
      .toBe(`tensorflow (${CPU}; ${GPU} is installed but failed to load: libcudart.so.11.0: cannot open shared object file)`);
  });
});
