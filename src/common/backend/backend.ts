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
//  - 'auto':       'tensorflow' if it loads, otherwise 'wasm'.

import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-layers'; // registers the gradients of all ops
import { createRequire } from 'node:module';
import type { BackendChoice, BackendName } from './names.js';
import { registerWasmConvGradKernels } from './wasm-conv-grads.js';

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
let tensorflowPackage: string | null = null;
let tensorflowSkipped: string[] = [];
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
  } else if (name === 'tensorflow') {
    detail = [tensorflowPackage ?? '', ...tensorflowSkipped].filter((d) => d !== '').join('; ');
  }
  return detail === '' ? name : `${name} (${detail})`;
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
}

const nodeLoader: TensorflowLoader = {
  nodeVersion: process.versions.node,
  installed: isInstalled,
  load: (pkg) => import(pkg),
  registered: () => tf.findBackendFactory('tensorflow') != null,
};

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
    return { pkg, skipped: loadFailures };
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
  if (tensorflowPackage !== null) return;
  const loaded = await loadTensorflowPackage();
  tensorflowPackage = loaded.pkg;
  // Kept for describeBackend, whose line every run logs: who wanted the GPU sees why they got the CPU.
  tensorflowSkipped = loaded.skipped;
}

/** Whether a package for the 'tensorflow' backend is installed (without loading it). */
export function tensorflowInstalled(): boolean {
  return TENSORFLOW_PACKAGES.some(isInstalled);
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
