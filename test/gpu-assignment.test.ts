// Which GPU each local worker process gets (src/coordinator/gpu-assignment.ts),
// and the environment a local worker process starts with.
import { describe, expect, it } from 'vitest';
import { assignGpus, GpuAssignmentError, isGpuId, visibleGpus } from '../src/coordinator/gpu-assignment.js';
import { childEnv } from '../src/coordinator/local-workers.js';
import { TOKEN_ENV } from '../src/coordinator/admission.js';

const UUID = 'GPU-8932f937-d72c-4106-c12f-20bd9faed9f6';
const UUID2 = 'GPU-1f0b1e5c-0d6a-4c9a-9b6e-3a2d4c5e6f70';
const MIG = 'MIG-3b2d5ea0-7b7c-5f8a-a4a1-4e1c8e7b6f5d';
const MIG_OLD = `MIG-${UUID}/1/0`;

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(GpuAssignmentError);
    return (err as Error).message;
  }
  throw new Error('expected a GpuAssignmentError');
}

describe('GPU ids', () => {
  it('accepts indexes, GPU UUIDs (also abbreviated) and both forms of MIG ids', () => {
    for (const id of ['0', '7', '12', UUID, 'GPU-8932f937', MIG, MIG_OLD]) expect(isGpuId(id), id).toBe(true);
    for (const id of ['', '-1', 'gpu0', 'GPU-', 'GPU-xyz', 'MIG-', 'NoDevFiles', '1.5', ' 0']) expect(isGpuId(id), id).toBe(false);
  });

  it('reads CUDA_VISIBLE_DEVICES as CUDA does: up to the first entry that names no GPU', () => {
    expect(visibleGpus('2,3')).toEqual(['2', '3']);
    expect(visibleGpus(` ${UUID} , ${MIG}`)).toEqual([UUID, MIG]);
    expect(visibleGpus('1,-1,2')).toEqual(['1']);
    for (const hidden of ['', '-1', 'NoDevFiles']) expect(visibleGpus(hidden)).toEqual([]);
  });
});

describe('assignGpus', () => {
  it('without --gpus or an inherited CUDA_VISIBLE_DEVICES assigns nothing', () => {
    expect(assignGpus({ workers: 4 })).toBeUndefined();
    expect(assignGpus({ workers: 4, inherited: '-1' })).toBeUndefined(); // GPUs hidden on purpose: the workers inherit that
    expect(assignGpus({ workers: 0, gpus: ['0'] })).toBeUndefined();
  });

  it('--gpus alone is used as written, one GPU per worker', () => {
    expect(assignGpus({ workers: 2, gpus: ['0', '1'] })).toEqual({ gpus: ['0', '1'] });
    expect(assignGpus({ workers: 2, gpus: ['3', '1', '2'] })).toEqual({ gpus: ['3', '1'] });
    expect(assignGpus({ workers: 2, gpus: [UUID, MIG] })).toEqual({ gpus: [UUID, MIG] });
  });

  it('defaults to the inherited CUDA_VISIBLE_DEVICES, one entry per worker', () => {
    expect(assignGpus({ workers: 2, inherited: '4,5,6' })).toEqual({ gpus: ['4', '5'] });
    expect(assignGpus({ workers: 2, inherited: `${UUID},${UUID2}` })).toEqual({ gpus: [UUID, UUID2] });
  });

  it('with an inherited CUDA_VISIBLE_DEVICES, --gpus indexes into it instead of replacing it', () => {
    expect(assignGpus({ workers: 2, gpus: ['1', '0'], inherited: '4,5' })).toEqual({ gpus: ['5', '4'] });
    expect(assignGpus({ workers: 1, gpus: ['1'], inherited: `${UUID},${MIG}` })).toEqual({ gpus: [MIG] });
    // An id is kept when it is in the list, or when the list is of indexes (which ids they are is unknown here).
    expect(assignGpus({ workers: 1, gpus: [UUID2], inherited: `${UUID},${UUID2}` })).toEqual({ gpus: [UUID2] });
    expect(assignGpus({ workers: 1, gpus: [UUID], inherited: '0,1' })).toEqual({ gpus: [UUID] });
    expect(refusal(() => assignGpus({ workers: 1, gpus: ['2'], inherited: '4,5' })))
      .toBe('--gpus 2: CUDA_VISIBLE_DEVICES=4,5 makes 2 GPUs visible (--gpus indexes into it from 0)');
    expect(refusal(() => assignGpus({ workers: 1, gpus: ['0'], inherited: '-1' }))).toMatch(/CUDA_VISIBLE_DEVICES=-1 makes 0 GPUs visible/);
    expect(refusal(() => assignGpus({ workers: 1, gpus: [UUID2], inherited: UUID })))
      .toBe(`--gpus ${UUID2} is not among the GPUs of CUDA_VISIBLE_DEVICES=${UUID}`);
  });

  it('refuses more workers than GPUs, naming the ways on', () => {
    const fromFlag = refusal(() => assignGpus({ workers: 3, gpus: ['0', '1'] }));
    expect(fromFlag).toMatch(/^3 local workers but 2 GPUs \(--gpus 0,1\): /);
    for (const fix of ['--local-workers 2', 'TF_FORCE_GPU_ALLOW_GROWTH=true']) expect(fromFlag).toContain(fix);
    expect(refusal(() => assignGpus({ workers: 2, inherited: '3' }))).toMatch(/^2 local workers but 1 GPU \(CUDA_VISIBLE_DEVICES=3\): /);
    expect(refusal(() => assignGpus({ workers: 3, gpus: ['1', '0'], inherited: '4,5', allowGrowth: 'false' })))
      .toMatch(/^3 local workers but 2 GPUs \(--gpus 1,0 of CUDA_VISIBLE_DEVICES=4,5\): /);
    expect(refusal(() => assignGpus({ workers: 3, gpus: ['0', '1'], allowGrowth: 'TRUE' }))).toMatch(/^3 local workers/); // TensorFlow reads only "true"
  });

  it('with TF_FORCE_GPU_ALLOW_GROWTH=true, shares the GPUs round robin and says so', () => {
    const shared = assignGpus({ workers: 5, inherited: '4,5', allowGrowth: 'true' });
    expect(shared?.gpus).toEqual(['4', '5']); // worker i gets gpus[i % 2]
    expect(shared?.note).toBe('5 local workers share 2 GPUs (CUDA_VISIBLE_DEVICES=4,5) round robin, ' +
      'as TF_FORCE_GPU_ALLOW_GROWTH=true lets TensorFlow processes share a GPU');
    expect(assignGpus({ workers: 2, gpus: ['0', '1'], allowGrowth: 'true' })).toEqual({ gpus: ['0', '1'] }); // no sharing, no note
  });

  it('refuses ids CUDA_VISIBLE_DEVICES would not take', () => {
    expect(refusal(() => assignGpus({ workers: 1, gpus: ['gpu0'] }))).toMatch(/--gpus: expected GPU ids like 0,1,2,3, GPU-<uuid> or MIG-<uuid>, got "gpu0"/);
    expect(refusal(() => assignGpus({ workers: 1, gpus: [] }))).toMatch(/--gpus names no GPU/);
  });
});

describe('a local worker process environment', () => {
  it('adds the token, its GPU and TF_CPP_MIN_LOG_LEVEL=1 to the inherited one', () => {
    const env = childEnv({ PATH: '/bin', CUDA_VISIBLE_DEVICES: '4,5' }, 's3cret', '5');
    expect(env).toEqual({ PATH: '/bin', [TOKEN_ENV]: 's3cret', CUDA_VISIBLE_DEVICES: '5', TF_CPP_MIN_LOG_LEVEL: '1' });
  });

  it('keeps a TF_CPP_MIN_LOG_LEVEL the user set, and the inherited GPUs when none is assigned', () => {
    const env = childEnv({ TF_CPP_MIN_LOG_LEVEL: '0', CUDA_VISIBLE_DEVICES: '4,5' }, 't', undefined);
    expect(env.TF_CPP_MIN_LOG_LEVEL).toBe('0');
    expect(env.CUDA_VISIBLE_DEVICES).toBe('4,5');
  });
});
