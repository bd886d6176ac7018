// Learning-rate schedule: CosineAnnealingLR stepped once per epoch (as the
// seed calls scheduler.step() after each epoch), optionally preceded by a
// per-step linear warmup (Goyal et al. 2017) for large-batch runs.

export interface ScheduleConfig {
  lr: number;
  tMax: number;
  etaMin?: number;
  warmupEpochs?: number;
}

/** The run's schedule from its configuration; the one place the schedule object is built. */
export function scheduleOf(cfg: { lr: number; tMax: number; warmupEpochs: number }): ScheduleConfig {
  return { lr: cfg.lr, tMax: cfg.tMax, warmupEpochs: cfg.warmupEpochs };
}

/** PyTorch's closed form: eta_min + (lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2. */
export function cosineLr(epoch: number, cfg: ScheduleConfig): number {
  const etaMin = cfg.etaMin ?? 0;
  return etaMin + ((cfg.lr - etaMin) * (1 + Math.cos((Math.PI * epoch) / cfg.tMax))) / 2;
}

/** The rate for one optimizer step: cosine by epoch, scaled by the warmup ramp in the first epochs. */
export function learningRate(epoch: number, stepInEpoch: number, stepsPerEpoch: number, cfg: ScheduleConfig): number {
  const base = cosineLr(epoch, cfg);
  const warmupSteps = (cfg.warmupEpochs ?? 0) * stepsPerEpoch;
  const step = epoch * stepsPerEpoch + stepInEpoch;
  if (warmupSteps > 0 && step < warmupSteps) return (base * (step + 1)) / warmupSteps;
  return base;
}

/** The rate at `perEpoch` evenly spaced points of every epoch, plus the last step's: the planned curve (dashboard). */
export function plannedLearningRates(cfg: ScheduleConfig, epochs: number, stepsPerEpoch: number, perEpoch = 4): [number, number][] {
  const points: [number, number][] = [];
  for (let epoch = 0; epoch < epochs; epoch++) {
    for (let q = 0; q < perEpoch; q++) {
      const step = Math.floor((q * stepsPerEpoch) / perEpoch);
      points.push([epoch + step / stepsPerEpoch, learningRate(epoch, step, stepsPerEpoch, cfg)]);
    }
  }
  points.push([epochs, learningRate(epochs - 1, stepsPerEpoch - 1, stepsPerEpoch, cfg)]);
  return points;
}
