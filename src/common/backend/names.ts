// The one list of TensorFlow.js backends the CLIs accept. Kept apart from
// backend.ts so that flag parsing does not load TensorFlow.js.

export const BACKEND_NAMES = ['tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** 'auto' picks the fastest one installed (see initBackend). */
export const BACKEND_CHOICES = ['auto', ...BACKEND_NAMES] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];
