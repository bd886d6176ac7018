// Peak resident memory of this process, all its threads included, while one
// piece of work runs. process.resourceUsage().maxRSS only gives the peak
// since the process started, which is not one configuration's peak when a
// benchmark runs several in turn; this samples every 20 ms instead.

export async function measurePeakRss<T>(work: () => Promise<T>): Promise<{ result: T; peakRssMb: number }> {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 20);
  try {
    const result = await work();
    peak = Math.max(peak, process.memoryUsage.rss());
    return { result, peakRssMb: peak / 2 ** 20 };
  } finally {
    clearInterval(timer);
  }
}
