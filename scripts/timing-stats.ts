// Summaries of repeated timings, one definition for every benchmark script.

export interface Stats {
  medianMs: number;
  meanMs: number;
  stdMs: number;
}

/** The median (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Median, mean and sample standard deviation of `ms`. */
export function stats(ms: number[]): Stats {
  const mean = ms.reduce((a, b) => a + b, 0) / ms.length;
  const std = Math.sqrt(ms.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, ms.length - 1));
  return { medianMs: median(ms), meanMs: mean, stdMs: std };
}
