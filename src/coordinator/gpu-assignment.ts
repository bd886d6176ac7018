// Which GPU each local worker process gets, as its CUDA_VISIBLE_DEVICES. Pure:
// the caller passes in the environment it inherited.
//
// - GPU ids are what CUDA_VISIBLE_DEVICES accepts: an index (`0`), a GPU UUID
//   (`GPU-8932f937-...`, also abbreviated) or a MIG instance (`MIG-...`).
// - An inherited CUDA_VISIBLE_DEVICES (Slurm, Kubernetes, a user) is the set
//   of GPUs this job may use. Without --gpus every entry of it is one GPU for
//   one worker; with --gpus, integers index into it (`--gpus 1` under
//   CUDA_VISIBLE_DEVICES=4,5 is GPU 5), so a worker never leaves that set.
// - More workers than GPUs is refused: each TensorFlow process reserves
//   nearly all of its GPU's memory up front, so a second one on it fails.
//   With TF_FORCE_GPU_ALLOW_GROWTH=true TensorFlow allocates as it goes, and
//   the workers then share the GPUs round robin.

import { GPU_ID_HELP, isGpuId, isGpuIndex, visibleGpus } from '../common/backend/cuda-visible-devices.js';

// Re-exported: the coordinator's CLI and tests reach them through this module.
export { GPU_ID_HELP, isGpuId, visibleGpus };

export interface GpuRequest {
  /** Local worker processes to place. */
  workers: number;
  /** --gpus as given, or undefined. */
  gpus?: string[];
  /** The CUDA_VISIBLE_DEVICES this process inherited, or undefined. */
  inherited?: string;
  /** TF_FORCE_GPU_ALLOW_GROWTH as inherited. */
  allowGrowth?: string;
}

export interface GpuAssignment {
  /** CUDA_VISIBLE_DEVICES of worker i: gpus[i % gpus.length]. */
  gpus: string[];
  /** Set when workers share GPUs: a line for the log. */
  note?: string;
}

/** What does not fit; the message says how to fix it. */
export class GpuAssignmentError extends Error {
  override name = 'GpuAssignmentError';
}

/**
 * The GPU of each local worker, or undefined when there is nothing to assign
 * (no --gpus and no inherited CUDA_VISIBLE_DEVICES naming a GPU: the workers
 * then inherit the environment as it is). Throws GpuAssignmentError.
 */
export function assignGpus(req: GpuRequest): GpuAssignment | undefined {
  if (req.workers <= 0) return undefined;
  const inherited = req.inherited === undefined ? undefined : visibleGpus(req.inherited);
  const inheritedText = `CUDA_VISIBLE_DEVICES=${req.inherited ?? ''}`;
  let gpus: string[];
  let source: string;
  if (req.gpus !== undefined) {
    if (req.gpus.length === 0) throw new GpuAssignmentError(`--gpus names no GPU: pass ${GPU_ID_HELP}`);
    for (const id of req.gpus) {
      if (!isGpuId(id)) throw new GpuAssignmentError(`--gpus: expected ${GPU_ID_HELP}, got "${id}"`);
    }
    gpus = inherited === undefined ? [...req.gpus] : req.gpus.map((id) => withinInherited(id, inherited, inheritedText));
    source = inherited === undefined ? `--gpus ${req.gpus.join(',')}` : `--gpus ${req.gpus.join(',')} of ${inheritedText}`;
  } else {
    if (inherited === undefined || inherited.length === 0) return undefined;
    gpus = inherited;
    source = inheritedText;
  }
  if (req.workers <= gpus.length) return { gpus: gpus.slice(0, req.workers) };
  if (req.allowGrowth === 'true') {
    return {
      gpus,
      note: `${req.workers} local workers share ${gpus.length} GPU${gpus.length === 1 ? '' : 's'} (${source}) round robin, ` +
        'as TF_FORCE_GPU_ALLOW_GROWTH=true lets TensorFlow processes share a GPU',
    };
  }
  throw new GpuAssignmentError(
    `${req.workers} local workers but ${gpus.length} GPU${gpus.length === 1 ? '' : 's'} (${source}): each TensorFlow process ` +
      'reserves nearly all of its GPU\'s memory. Use --local-workers ' + `${gpus.length}, name more GPUs, ` +
      'or set TF_FORCE_GPU_ALLOW_GROWTH=true to share them round robin');
}

/** An index picks that entry of the inherited list; a UUID or MIG id must be in it when the list names devices by id. */
function withinInherited(id: string, inherited: string[], inheritedText: string): string {
  if (isGpuIndex(id)) {
    const index = Number(id);
    if (index >= inherited.length) {
      throw new GpuAssignmentError(
        `--gpus ${id}: ${inheritedText} makes ${inherited.length} GPU${inherited.length === 1 ? '' : 's'} visible ` +
          `(--gpus indexes into it from 0)`);
    }
    return inherited[index]!;
  }
  if (inherited.some(isGpuIndex) || inherited.includes(id)) return id;
  throw new GpuAssignmentError(`--gpus ${id} is not among the GPUs of ${inheritedText}`);
}
