// confusion.png for the evaluate command: a Chart.js heat map
// (chartjs-chart-matrix) of matrix[true][predicted], each cell shaded by its
// share of the row and labelled with its count (chartjs-plugin-datalabels).

import type { ChartConfiguration, ScriptableContext } from 'chart.js';
import type { MatrixDataPoint } from 'chartjs-chart-matrix';
import type { Context as LabelContext } from 'chartjs-plugin-datalabels';
import { blankCanvas, DataLabels, drawChart, plotFont, PLOT_FONT_FAMILY, writePng } from './render.js';

/** Cell size in pixels; the image grows with the number of classes and the length of their names. */
const CELL = 44;

interface Cell extends MatrixDataPoint {
  x: string;
  y: string;
  v: number;
  /** count / row total: the fraction of that true class predicted as this class. */
  share: number;
}

/** White to matplotlib's Blues end; `share` 0..1. */
function shade(share: number): string {
  const mix = (a: number, b: number) => Math.round(a + (b - a) * share);
  return `rgb(${mix(247, 8)},${mix(251, 48)},${mix(255, 107)})`;
}

export async function writeConfusionPng(file: string, matrix: number[][], classes: readonly string[], title?: string): Promise<void> {
  const n = classes.length;
  if (matrix.length !== n || matrix.some((row) => row.length !== n)) throw new Error(`confusion matrix must be ${n}x${n}`);
  const cells: Cell[] = matrix.flatMap((row, t) => {
    const total = row.reduce((a, b) => a + b, 0);
    return row.map((count, p) => ({ x: classes[p], y: classes[t], v: count, share: total > 0 ? count / total : 0 }));
  });
  // Room for the class names: beside the rows, and at 45 degrees (about 0.7 of their width) under the columns.
  const probe = blankCanvas(1, 1).ctx;
  probe.font = plotFont(12);
  const names = Math.ceil(Math.max(...classes.map((c) => probe.measureText(c).width)));
  const width = names + 60 + n * CELL + 24;
  const height = (title ? 44 : 12) + n * CELL + Math.ceil(names * 0.72) + 60;
  const cellOf = (c: ScriptableContext<'matrix'> | LabelContext) => c.dataset.data[c.dataIndex] as Cell;
  const axisTitle = (text: string) => ({ display: true, text, color: '#000000', font: { size: 12 } });
  const config: ChartConfiguration<'matrix', Cell[], string> = {
    type: 'matrix',
    data: {
      datasets: [
        {
          data: cells,
          backgroundColor: (c) => shade(cellOf(c).share),
          borderWidth: 0,
          width: ({ chart }) => (chart.chartArea?.width ?? 0) / n,
          height: ({ chart }) => (chart.chartArea?.height ?? 0) / n,
          datalabels: {
            formatter: (_value, c) => String(cellOf(c).v),
            // Dark cells get white text.
            color: (c) => (cellOf(c).share > 0.5 ? '#ffffff' : '#000000'),
            font: { family: PLOT_FONT_FAMILY, size: 12, weight: 'normal' },
          },
        },
      ],
    },
    options: {
      layout: { padding: { left: 8, right: 24, top: 4, bottom: 8 } },
      scales: {
        x: {
          type: 'category',
          labels: [...classes],
          offset: true,
          title: axisTitle('predicted class'),
          grid: { display: false },
          border: { color: '#000000' },
          ticks: { minRotation: 45, maxRotation: 45, autoSkip: false, color: '#000000' },
        },
        y: {
          type: 'category',
          labels: [...classes],
          // chartjs-chart-matrix reverses y by default; unreversed, the first class is the top row, as the matrix is printed.
          reverse: false,
          offset: true,
          title: axisTitle('true class'),
          grid: { display: false },
          border: { color: '#000000' },
          ticks: { autoSkip: false, color: '#000000' },
        },
      },
      plugins: {
        title: { display: title !== undefined, text: title, color: '#000000', font: { size: 16, weight: 'normal' }, padding: { top: 10, bottom: 14 } },
        legend: { display: false },
        tooltip: { enabled: false },
      },
    },
    plugins: [DataLabels],
  };
  const { canvas, ctx } = blankCanvas(width, height);
  drawChart(ctx, { x: 0, y: 0, width, height }, config);
  await writePng(file, canvas);
}
