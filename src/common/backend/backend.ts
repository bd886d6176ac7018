// The one place that chooses the TensorFlow.js backend. Everything else just
// imports '@tensorflow/tfjs-core' and runs ops on whatever backend is current;
// no other module calls tf.setBackend.
//
// Backends:
//  - 'cpu':        pure JS, always available; the slow reference.
//  - 'wasm':       XNNPACK via WebAssembly, plus our fast conv gradient kernels
//                  (wasm-conv-grads.ts). Loaded lazily: importing the package
//                  makes wasm the highest-priority backend as a side effect.
//  - 'tensorflow': native libtensorflow through @tensorflow/tfjs-node-gpu
//                  (CUDA) or @tensorflow/tfjs-node, optional dependencies that
//                  need a download at install time. Version 4.22 fails on
//                  Node 23+ (checkNodeForTensorflow); when the GPU package
//                  fails and the CPU one loads, describeBackend says why.
//                  When the GPU package loads but TensorFlow found no GPU
//                  (CUDA libraries missing), that is an error, not a slow
//                  run on the CPU; unless CUDA_VISIBLE_DEVICES hides the
//                  GPUs on purpose (checkGpuDevice).
//  - 'auto':       'tensorflow' if it loads, otherwise 'wasm'.

import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-layers'; // registers the gradients of all ops
import { createRequire } from 'node:module';
import type { BackendChoice, BackendName } from './names.js';
import { registerWasmConvGradKernels } from './wasm-conv-grads.js';
import { gpusHidden } from './cuda-visible-devices.js';

/** A backend was asked for that cannot run here; the message says how to fix it. */
export class BackendUnavailableError extends Error {
  constructor(readonly backend: BackendName, message: string) {
    super(message);
    this.name = 'BackendUnavailableError';
  }
}

/** Native packages that provide the 'tensorflow' backend, in order of preference. */
const TENSORFLOW_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;

const require = createRequire(import.meta.url);

let current: BackendName | null = null;
let tensorflowLoaded: LoadedTensorflow | null = null;
let autoFallbackReason: string | null = null;
let wasmThreads = 0;

/**
 * Makes `choice` the active backend and returns the backend actually in use
 * ('auto' resolves to 'tensorflow' or 'wasm'). Safe to call repeatedly, also
 * with different choices: it then switches the active backend (tests use this
 * to compare cpu and wasm in one process). Tensors already created stay on
 * their backend and are moved lazily when next used.
 */
export async function initBackend(choice: BackendChoice): Promise<BackendName> {
  switch (choice) {
    case 'cpu':
      await activate('cpu');
      return 'cpu';
    case 'wasm': {
      const wasm = await loadWasm();
      await activate('wasm');
      wasmThreads = wasm.getThreadsCount(); // known only once initialised
      return 'wasm';
    }
    case 'tensorflow':
      await loadTensorflow();
      await activate('tensorflow');
      return 'tensorflow';
    case 'auto':
      try {
        return await initBackend('tensorflow');
      } catch (err) {
        if (!(err instanceof BackendUnavailableError)) throw err;
        autoFallbackReason = err.message;
        return await initBackend('wasm');
      }
    default:
      throw new Error(`unknown backend "${String(choice)}": use one of tensorflow, wasm, cpu, auto`);
  }
}

/** The active backend. Throws if initBackend has not been called. */
export function backendName(): BackendName {
  if (current === null) throw new Error('no TensorFlow.js backend selected yet: call initBackend() first');
  return current;
}

/** Whether the wasm backend runs its SIMD build (about 2-3x faster convs). */
export function wasmUsesSimd(): boolean {
  return current === 'wasm' && tf.env().getBool('WASM_HAS_SIMD_SUPPORT');
}

/**
 * One line for logs, e.g. "wasm (SIMD, 1 thread)", "tensorflow (@tensorflow/tfjs-node-gpu)", or
 * "tensorflow (@tensorflow/tfjs-node; @tensorflow/tfjs-node-gpu is installed but failed to load: ...)".
 */
export function describeBackend(): string {
  const name = backendName();
  let detail = '';
  if (name === 'wasm') {
    detail = `${wasmUsesSimd() ? 'SIMD' : 'no SIMD'}, ${wasmThreads} thread${wasmThreads === 1 ? '' : 's'}`;
    if (autoFallbackReason !== null) detail += `; tensorflow unavailable: ${autoFallbackReason}`;
  } else if (name === 'tensorflow' && tensorflowLoaded !== null) {
    return describeTensorflow(tensorflowLoaded);
  }
  return detail === '' ? name : `${name} (${detail})`;
}

/**
 * describeBackend's line for a loaded tensorflow package, e.g. "tensorflow
 * (@tensorflow/tfjs-node-gpu, on the GPU)" or "tensorflow
 * (@tensorflow/tfjs-node-gpu, on the CPU: CUDA_VISIBLE_DEVICES=-1 hides every GPU)".
 */
export function describeTensorflow(loaded: LoadedTensorflow): string {
  const device = loaded.device === 'gpu' ? 'on the GPU' : loaded.device === 'cpu' ? `on the CPU: ${loaded.deviceNote}` : '';
  const pkg = device === '' ? loaded.pkg : `${loaded.pkg}, ${device}`;
  return `tensorflow (${[pkg, ...loaded.skipped].join('; ')})`;
}

async function activate(name: BackendName): Promise<void> {
  if (!(await tf.setBackend(name))) {
    throw new BackendUnavailableError(name, `backend "${name}" failed to initialise (see the TensorFlow.js warning above)`);
  }
  await tf.ready();
  if (name === 'cpu') muteCpuNodeBanner();
  current = name;
}

/**
 * On first use in Node, tfjs-backend-cpu prints a multi-line banner urging to
 * install tfjs-node. Here cpu is always a deliberate choice (and the
 * 'tensorflow' backend explains its own install), so the banner is noise. It
 * is gated by a private flag of the backend instance; if a future version
 * renames it, this does nothing and the banner simply comes back.
 */
function muteCpuNodeBanner(): void {
  const cpu = tf.findBackend('cpu') as unknown as { firstUse?: boolean } | null;
  if (cpu !== null && typeof cpu.firstUse === 'boolean') cpu.firstUse = false;
}

async function loadWasm(): Promise<typeof import('@tensorflow/tfjs-backend-wasm')> {
  // Node finds the .wasm binaries next to the package's own dist/ bundle, so
  // no setWasmPaths call is needed (a bundler would need one).
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  registerWasmConvGradKernels();
  return wasm;
}

/**
 * How loadTensorflowPackage reaches the packages; tests pass their own. The
 * Node version is process.versions.node.
 */
export interface TensorflowLoader {
  nodeVersion: string;
  installed(pkg: string): boolean;
  load(pkg: string): Promise<unknown>;
  /** Whether the loaded package registered "tensorflow" on our copy of tfjs-core. */
  registered(): boolean;
  /**
   * Whether the registered "tensorflow" backend runs its ops on a GPU, or
   * null when it does not say. tfjs-node's NodeJSKernelBackend sets
   * `isUsingGpuDevice` in its constructor from `binding.isUsingGpuDevice()`,
   * which is true when libtensorflow listed a "GPU" device at load
   * (binding/tfjs_backend.cc); without one it falls back to the CPU.
   */
  usesGpu(): boolean | null;
  /** CUDA_VISIBLE_DEVICES and LD_LIBRARY_PATH, as this process has them. */
  env: { CUDA_VISIBLE_DEVICES?: string; LD_LIBRARY_PATH?: string };
}

const nodeLoader: TensorflowLoader = {
  nodeVersion: process.versions.node,
  installed: isInstalled,
  load: (pkg) => import(pkg),
  registered: () => tf.findBackendFactory('tensorflow') != null,
  usesGpu: () => {
    // findBackend initialises the backend if the package has not (its index.ts does, with setBackend).
    const native = tf.findBackend('tensorflow') as { isUsingGpuDevice?: unknown } | null;
    return typeof native?.isUsingGpuDevice === 'boolean' ? native.isUsingGpuDevice : null;
  },
  get env() {
    return process.env;
  },
};

const GPU_PACKAGE = TENSORFLOW_PACKAGES[0];

/**
 * The shared libraries libtensorflow 2.9.1 (in tfjs-node-gpu 4.22) dlopens for
 * its GPU device, by soname: TensorFlow's dso_loader.cc formats each as
 * lib<name>.so.<version> with the versions of its CUDA 11.2 / cuDNN 8.1
 * build (cuBLASLt shares cuBLAS's). These sonames are the same in every CUDA
 * 11.x and cuDNN 8.x; CUDA 12 renamed them, so it does not do.
 */
export const TENSORFLOW_CUDA_LIBRARIES = [
  'libcudart.so.11.0', 'libcublas.so.11', 'libcublasLt.so.11', 'libcufft.so.10',
  'libcurand.so.10', 'libcusolver.so.11', 'libcusparse.so.11', 'libcudnn.so.8',
] as const;

/**
 * Where the GPU package runs its ops: 'gpu', or 'cpu' when CUDA_VISIBLE_DEVICES
 * hides every GPU on purpose, or null when the backend does not say. Throws
 * BackendUnavailableError when TensorFlow found no GPU otherwise: it would
 * silently train on the CPU, 10-50x slower, while the user expects a GPU.
 */
export function checkGpuDevice(usesGpu: boolean | null, env: TensorflowLoader['env']): Pick<LoadedTensorflow, 'device' | 'deviceNote'> {
  if (usesGpu === null) return { device: null };
  if (usesGpu) return { device: 'gpu' };
  if (gpusHidden(env.CUDA_VISIBLE_DEVICES)) {
    return { device: 'cpu', deviceNote: `CUDA_VISIBLE_DEVICES=${env.CUDA_VISIBLE_DEVICES} hides every GPU` };
  }
  const libs = TENSORFLOW_CUDA_LIBRARIES;
  throw new BackendUnavailableError('tensorflow',
    `backend "tensorflow": ${GPU_PACKAGE} loaded, but TensorFlow found no GPU and would run on the CPU. ` +
      `It needs an NVIDIA GPU with its driver (libcuda.so.1; see nvidia-smi) and the CUDA 11 / cuDNN 8 libraries ` +
      `${libs.slice(0, -1).join(', ')} and ${libs[libs.length - 1]} (TensorFlow's "Could not load dynamic library" warnings above name ` +
      `the missing ones; LD_LIBRARY_PATH=${env.LD_LIBRARY_PATH ?? '(unset)'}). Install CUDA 11.x (TensorFlow 2.9 is built with 11.2) ` +
      'and cuDNN 8.1 or later and put their lib directories on LD_LIBRARY_PATH, or use the deploy/Dockerfile image; ' +
      'or use --backend wasm; to run TensorFlow on the CPU on purpose, set CUDA_VISIBLE_DEVICES=-1');
}

/** The first Node major version @tensorflow/tfjs-node(-gpu) 4.22 fails on. */
export const TENSORFLOW_FIRST_BROKEN_NODE = 23;

/**
 * Throws BackendUnavailableError on a Node version @tensorflow/tfjs-node(-gpu)
 * 4.22 cannot run on: every op calls util.isNullOrUndefined, which Node 23
 * removed (fixed upstream in tensorflow/tfjs#8425, in no release yet).
 * Importing the package still works there; only the first op fails.
 */
export function checkNodeForTensorflow(nodeVersion: string): void {
  const major = Number.parseInt(nodeVersion, 10);
  if (major >= TENSORFLOW_FIRST_BROKEN_NODE) {
    throw new BackendUnavailableError('tensorflow',
      `backend "tensorflow" does not run on Node ${nodeVersion}: @tensorflow/tfjs-node(-gpu) 4.22 calls util.isNullOrUndefined, ` +
        `which Node ${TENSORFLOW_FIRST_BROKEN_NODE} removed; run it with Node 20 or 22, or use --backend wasm`);
  }
}

export interface LoadedTensorflow {
  pkg: string;
  /** Why the packages preferred to `pkg` did not load (the GPU package's error when the CPU one stands in). */
  skipped: string[];
  /**
   * For the GPU package: where its ops run ('cpu' only when asked for, see
   * checkGpuDevice); null when the backend does not say. Absent for the CPU package.
   */
  device?: 'gpu' | 'cpu' | null;
  /** Why the GPU package runs on the CPU. */
  deviceNote?: string;
}

/** The first package of TENSORFLOW_PACKAGES that loads; throws BackendUnavailableError naming every failure. */
export async function loadTensorflowPackage(loader: TensorflowLoader = nodeLoader): Promise<LoadedTensorflow> {
  checkNodeForTensorflow(loader.nodeVersion);
  const loadFailures: string[] = [];
  for (const pkg of TENSORFLOW_PACKAGES) {
    if (!loader.installed(pkg)) continue;
    try {
      await loader.load(pkg);
    } catch (err) {
      loadFailures.push(`${pkg} is installed but failed to load: ${firstLine(err)}`);
      continue;
    }
    if (!loader.registered()) {
      // The package registered its backend on its own copy of tfjs-core.
      loadFailures.push(
        `${pkg} loaded but registered "tensorflow" on a different copy of @tensorflow/tfjs-core ` +
          `(versions differ; install ${pkg}@${tf.version_core})`);
      continue;
    }
    // The CPU package needs no check; after the GPU package has loaded, the
    // CPU one must not be tried: two libtensorflows in one process conflict.
    if (pkg !== GPU_PACKAGE) return { pkg, skipped: loadFailures };
    return { pkg, skipped: loadFailures, ...checkGpuDevice(loader.usesGpu(), loader.env) };
  }
  if (loadFailures.length > 0) {
    throw new BackendUnavailableError('tensorflow',
      `backend "tensorflow": ${loadFailures.join('; ')}; reinstall it or use --backend wasm`);
  }
  throw new BackendUnavailableError('tensorflow',
    'backend "tensorflow" needs @tensorflow/tfjs-node-gpu (or @tensorflow/tfjs-node): run ' +
      '"npm install @tensorflow/tfjs-node-gpu" on a machine with internet access and CUDA, or use --backend wasm');
}

async function loadTensorflow(): Promise<void> {
  if (tensorflowLoaded !== null) return;
  // Kept for describeBackend, whose line every run logs: who wanted the GPU sees why they got the CPU.
  tensorflowLoaded = await loadTensorflowPackage();
}

/** Whether a package for the 'tensorflow' backend is installed (without loading it). */
export function tensorflowInstalled(): boolean {
  return installedTensorflowPackage() !== null;
}

/** The package 'tensorflow' would load first (without loading it), or null when neither is installed. */
export function installedTensorflowPackage(): string | null {
  return TENSORFLOW_PACKAGES.find(isInstalled) ?? null;
}

/** Installed = resolvable; a failure while loading it is then a broken install, not a missing one. */
function isInstalled(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split('\n', 1)[0]!.trim();
}
