// Multi-panel line plots drawn with Chart.js (see render.ts): panels side by
// side under an optional figure title, each a Chart.js line chart with axis
// titles, a legend, and optional highlighted points labelled with
// chartjs-plugin-datalabels. Used by the training curves (curves.ts) and the
// scaling benchmark's scale.png (scripts/scale-test.ts).

import type { Canvas } from '@napi-rs/canvas';
import type { ChartConfiguration, ChartDataset, ScriptableContext } from 'chart.js';
import type { Context as LabelContext } from 'chartjs-plugin-datalabels';
import { blankCanvas, DataLabels, drawChart, plotFont, PLOT_FONT_FAMILY, writePng } from './render.js';

export interface PlotSeries {
  name: string;
  /** [x, y] pairs; non-finite values break the line instead of breaking the plot. */
  points: Array<[number, number]>;
  color?: string;
}

/** A highlighted point, e.g. the best test accuracy, labelled next to the point. */
export interface PlotMarker {
  x: number;
  y: number;
  label: string;
  color?: string;
}

/**
 * Which end of the legend row the legend sits at. The legend is always drawn
 * above the plot area (it never covers data), so only left/right matters.
 */
export type LegendPlacement = 'upper right' | 'lower right' | 'upper left' | 'lower left';

export interface PlotPanel {
  title?: string;
  xLabel: string;
  yLabel: string;
  series: PlotSeries[];
  markers?: PlotMarker[];
  legend?: LegendPlacement;
}

export interface LinePlotSpec {
  title?: string;
  panels: PlotPanel[];
}

/** Pixel layout of line plots: panels sit side by side, with an optional title band above. */
export const LINE_PLOT_LAYOUT = Object.freeze({ panelWidth: 600, panelHeight: 450, titleHeight: 36 });

export const MARKER_COLOR = '#e00000';
// matplotlib's tab10 without its red, so red stays reserved for markers.
const SERIES_COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const GRID_COLOR = '#e4e4e4';

type XY = { x: number; y: number | null };
type LineConfig = ChartConfiguration<'line', XY[]>;

export function renderLinePlot(spec: LinePlotSpec): Canvas {
  if (spec.panels.length === 0) throw new Error('line plot needs at least one panel');
  const { panelWidth, panelHeight, titleHeight } = LINE_PLOT_LAYOUT;
  const top = spec.title ? titleHeight : 0;
  const { canvas, ctx } = blankCanvas(panelWidth * spec.panels.length, panelHeight + top);
  if (spec.title) {
    ctx.fillStyle = '#000000';
    ctx.font = plotFont(17);
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText(spec.title, canvas.width / 2, titleHeight / 2 + 2);
  }
  spec.panels.forEach((panel, i) => {
    drawChart(ctx, { x: i * panelWidth, y: top, width: panelWidth, height: panelHeight }, panelChart(panel));
  });
  return canvas;
}

export async function writeLinePlotPng(file: string, spec: LinePlotSpec): Promise<void> {
  await writePng(file, renderLinePlot(spec));
}

const finite = (v: number) => Number.isFinite(v);

function panelChart(panel: PlotPanel): LineConfig {
  const series: ChartDataset<'line', XY[]>[] = panel.series.map((s, i) => {
    const color = s.color ?? SERIES_COLORS[i % SERIES_COLORS.length];
    // A gap is a null y; Chart.js breaks the line there (spanGaps is off).
    const data = s.points.map(([x, y]) => ({ x: finite(x) ? x : Number.NaN, y: finite(x) && finite(y) ? y : null }));
    const drawable = (j: number) => data[j] !== undefined && data[j].y !== null && finite(data[j].x);
    return {
      label: s.name,
      data,
      borderColor: color,
      backgroundColor: color,
      borderWidth: 2,
      // Later series on top, as matplotlib draws them (Chart.js draws lower `order` on top).
      order: panel.series.length - i,
      // A point with no drawable neighbour (e.g. a 1-epoch run) would otherwise be invisible.
      pointRadius: (c: ScriptableContext<'line'>) => (drawable(c.dataIndex) && !drawable(c.dataIndex - 1) && !drawable(c.dataIndex + 1) ? 3 : 0),
      pointHoverRadius: 0,
      datalabels: { display: false },
    };
  });
  const markers: ChartDataset<'line', XY[]>[] = (panel.markers ?? [])
    .filter((m) => finite(m.x) && finite(m.y))
    .map((m) => ({
      label: m.label,
      data: [{ x: m.x, y: m.y }],
      showLine: false,
      borderColor: m.color ?? MARKER_COLOR,
      backgroundColor: m.color ?? MARKER_COLOR,
      pointRadius: 5,
      pointHoverRadius: 5,
      // Drawn above the series (Chart.js draws lower `order` on top).
      order: -1,
      datalabels: {
        display: true,
        formatter: () => m.label,
        color: m.color ?? MARKER_COLOR,
        align: awayFromTheEdges,
        offset: 6,
        // A white halo keeps the label readable where it crosses a curve or grid line.
        textStrokeColor: '#ffffff',
        textStrokeWidth: 4,
        font: { family: PLOT_FONT_FAMILY, size: 12 },
      },
    }));
  const drawn = [...panel.series.flatMap((s) => s.points), ...(panel.markers ?? []).map((m): [number, number] => [m.x, m.y])].filter(([x, y]) => finite(x) && finite(y));
  const xs = drawn.map((p) => p[0]);
  const ys = drawn.map((p) => p[1]);
  const placement = panel.legend ?? 'upper right';
  const look = { grid: { color: GRID_COLOR }, border: { color: '#000000' } };
  const axisTitle = (text: string) => ({ display: true, text, color: '#000000', font: { size: 13 } });
  return {
    type: 'line',
    data: { datasets: [...series, ...markers] },
    options: {
      layout: { padding: { left: 6, right: 18, top: panel.title ? 4 : 14, bottom: 6 } },
      scales: {
        x: {
          type: 'linear',
          title: axisTitle(panel.xLabel),
          ...look,
          ...withMargin(xs),
          // Epochs and worker counts: whole-number ticks only.
          ticks: { includeBounds: false, ...(xs.length > 0 && xs.every(Number.isInteger) ? { precision: 0 } : {}) },
        },
        y: { type: 'linear', title: axisTitle(panel.yLabel), ...look, ...withMargin(ys), ticks: { includeBounds: false } },
      },
      plugins: {
        title: { display: panel.title !== undefined, text: panel.title, color: '#000000', font: { size: 14, weight: 'normal' } },
        legend: {
          display: series.length > 0,
          // Always above the plot area, so it never covers data and panels side by side stay aligned.
          position: 'top',
          align: placement.endsWith('right') ? 'end' : 'start',
          // Markers are labelled on the plot itself.
          labels: {
            filter: (item) => (item.datasetIndex ?? 0) < series.length,
            // In the order the series were given, whatever their drawing order.
            sort: (a, b) => (a.datasetIndex ?? 0) - (b.datasetIndex ?? 0),
            // A short thick line, like matplotlib's legend handles.
            boxWidth: 22,
            boxHeight: 2,
            color: '#000000',
          },
        },
        tooltip: { enabled: false },
      },
    },
    plugins: [DataLabels],
  };
}

/**
 * The axis range: the data plus 4 % on each side, like matplotlib, instead of
 * Chart.js's default of widening to the next round tick. A single value is left
 * to Chart.js, which opens a window around it.
 */
function withMargin(values: number[]): { min?: number; max?: number } {
  if (values.length === 0) return {};
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  if (hi - lo < 1e-12 * Math.max(1, Math.abs(hi))) return {};
  return { min: lo - (hi - lo) * 0.04, max: hi + (hi - lo) * 0.04 };
}

/** Puts a marker's label on whichever side of the point has room, so it stays inside the plot. */
function awayFromTheEdges(c: LabelContext): number {
  const point = c.chart.getDatasetMeta(c.datasetIndex).data[c.dataIndex];
  const area = c.chart.chartArea;
  const right = point.x > (area.left + area.right) / 2;
  const upper = point.y < (area.top + area.bottom) / 2;
  // Degrees clockwise from "to the right of the point".
  if (right) return upper ? 135 : 225;
  return upper ? 45 : 315;
}
