// What a CUDA_VISIBLE_DEVICES value means, the way CUDA reads it. Pure. It sits
// in the backend layer because the backend must tell "no GPU on purpose"
// (CUDA_VISIBLE_DEVICES=-1) from "CUDA libraries missing", and the
// coordinator's GPU assignment (coordinator/gpu-assignment.ts) builds on it.

export const GPU_ID_HELP = 'GPU ids like 0,1,2,3, GPU-<uuid> or MIG-<uuid>';

const INDEX = /^\d+$/;
const GPU_UUID = /^GPU-[0-9a-fA-F][0-9a-fA-F-]*$/;
// MIG-<uuid> (drivers from R470), or MIG-GPU-<uuid>/<gpu instance>/<compute instance> (earlier ones).
const MIG_ID = /^MIG-(?:[0-9a-fA-F][0-9a-fA-F-]*|GPU-[0-9a-fA-F][0-9a-fA-F-]*\/\d+\/\d+)$/;

/** Whether `id` is a device index (`0`), as opposed to a UUID or MIG id. */
export function isGpuIndex(id: string): boolean {
  return INDEX.test(id);
}

/** Whether `id` names one GPU the way CUDA_VISIBLE_DEVICES does: an index, a GPU UUID (also abbreviated) or a MIG instance. */
export function isGpuId(id: string): boolean {
  return INDEX.test(id) || GPU_UUID.test(id) || MIG_ID.test(id);
}

/**
 * The GPUs a CUDA_VISIBLE_DEVICES value makes visible. Like CUDA, it stops at
 * the first entry that names no GPU, so `-1`, `` and `NoDevFiles` (Slurm's
 * value when a step has none) hide them all.
 */
export function visibleGpus(value: string): string[] {
  const ids: string[] = [];
  for (const entry of value.split(',').map((e) => e.trim())) {
    if (!isGpuId(entry)) break;
    ids.push(entry);
  }
  return ids;
}

/**
 * Whether this environment hides every GPU on purpose: CUDA_VISIBLE_DEVICES
 * is set and names none. (Unset means every GPU is visible.)
 */
export function gpusHidden(cudaVisibleDevices: string | undefined): boolean {
  return cudaVisibleDevices !== undefined && visibleGpus(cudaVisibleDevices).length === 0;
}
