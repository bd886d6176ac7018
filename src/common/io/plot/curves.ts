// curves.png: the seed's training plot, drawn with Chart.js through the line
// plot (line-plot.ts): loss and accuracy, train and test, per epoch, with the
// best test accuracy marked.

import type { EpochMetrics } from '../metrics.js';
import { writeLinePlotPng, type LinePlotSpec, type PlotSeries } from './line-plot.js';

/** Loss and accuracy (train and test) per epoch, best test accuracy marked. */
export function curvesPlotSpec(history: EpochMetrics[], title?: string): LinePlotSpec {
  if (history.length === 0) throw new Error('cannot plot training curves: the metrics history is empty');
  const series = (name: string, key: 'train_loss' | 'test_loss' | 'train_acc' | 'test_acc'): PlotSeries => ({ name, points: history.map((m) => [m.epoch, m[key]]) });
  let best: EpochMetrics | undefined;
  for (const m of history) {
    if (Number.isFinite(m.test_acc) && (best === undefined || m.test_acc > best.test_acc)) best = m;
  }
  return {
    title,
    panels: [
      { title: 'Loss', xLabel: 'epoch', yLabel: 'loss', series: [series('train loss', 'train_loss'), series('test loss', 'test_loss')], legend: 'upper right' },
      {
        title: 'Accuracy',
        xLabel: 'epoch',
        yLabel: 'accuracy',
        series: [series('train acc', 'train_acc'), series('test acc', 'test_acc')],
        markers: best ? [{ x: best.epoch, y: best.test_acc, label: `best ${best.test_acc.toFixed(4)} (epoch ${best.epoch})` }] : [],
        legend: 'upper right',
      },
    ],
  };
}

export async function writeCurvesPng(file: string, history: EpochMetrics[], title?: string): Promise<void> {
  await writeLinePlotPng(file, curvesPlotSpec(history, title));
}
