// PNG charts with @napi-rs/canvas (no Python, no browser): training curves like the seed's
// matplotlib plot, a grid of sample images, and a generic multi-panel line plot that both
// (and later the scaling benchmark) share, so axis code exists once.

import { createCanvas, GlobalFonts, type Canvas, type SKRSContext2D } from '@napi-rs/canvas';
import path from 'node:path';
import { writeFileAtomic } from '../../fs/atomic-file.js';
import type { EpochMetrics } from '../metrics.js';

export interface PlotSeries {
  name: string;
  /** [x, y] pairs; non-finite values break the line instead of breaking the plot. */
  points: Array<[number, number]>;
  color?: string;
}

/** A highlighted point, e.g. the best test accuracy. */
export interface PlotMarker {
  x: number;
  y: number;
  label: string;
  color?: string;
}

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

/** Pixel layout of the sample grid: images are scaled up with nearest-neighbour sampling. */
export const SAMPLE_GRID_LAYOUT = Object.freeze({ columns: 4, scale: 4, padding: 6, titleHeight: 18 });

export const MARKER_COLOR = '#e00000';
// matplotlib's tab10 without its red, so red stays reserved for markers.
const SERIES_COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const BACKGROUND = '#ffffff';
const MARGIN = { left: 72, right: 18, top: 36, bottom: 54 };

const DEJAVU_SANS = '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf';
let fontFamily: string | undefined;

/** Registers DejaVu Sans when present so text renders the same everywhere; else any sans font. */
function plotFont(sizePx: number): string {
  if (fontFamily === undefined) {
    let registered = false;
    try {
      registered = GlobalFonts.registerFromPath(DEJAVU_SANS, 'TfjsDdpPlotSans') !== null;
    } catch {
      registered = false;
    }
    fontFamily = registered ? 'TfjsDdpPlotSans' : 'sans-serif';
  }
  return `${sizePx}px ${fontFamily}`;
}

// ---------------------------------------------------------------------------------------
// Axis scaling

interface Axis {
  min: number;
  max: number;
  ticks: number[];
  decimals: number;
}

/** 1, 2, 5 or 10 times a power of ten: tick steps people read at a glance. */
function niceStep(rough: number): number {
  const power = 10 ** Math.floor(Math.log10(rough));
  const f = rough / power;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * power;
}

/** A view range with a small margin around the data (like matplotlib) and ~5 nice ticks. */
export function computeAxis(values: number[], integerTicks = false, targetTicks = 5): Axis {
  const finite = values.filter(Number.isFinite);
  let lo = finite.length > 0 ? Math.min(...finite) : 0;
  let hi = finite.length > 0 ? Math.max(...finite) : 1;
  if (hi - lo < 1e-12 * Math.max(1, Math.abs(hi))) {
    // One point or a flat line: open a window around it rather than dividing by zero.
    const pad = integerTicks ? 1 : Math.abs(hi) > 0 ? Math.abs(hi) * 0.1 : 1;
    lo -= pad;
    hi += pad;
  }
  const margin = (hi - lo) * 0.04;
  const min = lo - margin;
  const max = hi + margin;
  let step = niceStep((max - min) / targetTicks);
  if (integerTicks) step = Math.max(1, Math.round(step));
  const ticks: number[] = [];
  for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-9; t += step) ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return { min, max, ticks, decimals };
}

// ---------------------------------------------------------------------------------------
// Line plots

export function renderLinePlot(spec: LinePlotSpec): Canvas {
  if (spec.panels.length === 0) throw new Error('line plot needs at least one panel');
  const { panelWidth, panelHeight, titleHeight } = LINE_PLOT_LAYOUT;
  const top = spec.title ? titleHeight : 0;
  const canvas = createCanvas(panelWidth * spec.panels.length, panelHeight + top);
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = BACKGROUND;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (spec.title) {
    ctx.fillStyle = '#000000';
    ctx.font = plotFont(17);
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText(spec.title, canvas.width / 2, titleHeight / 2 + 2);
  }
  spec.panels.forEach((panel, i) => drawPanel(ctx, panel, i * panelWidth, top));
  return canvas;
}

function drawPanel(ctx: SKRSContext2D, panel: PlotPanel, originX: number, originY: number): void {
  const { panelWidth, panelHeight } = LINE_PLOT_LAYOUT;
  const plot = {
    left: originX + MARGIN.left,
    top: originY + MARGIN.top,
    width: panelWidth - MARGIN.left - MARGIN.right,
    height: panelHeight - MARGIN.top - MARGIN.bottom,
  };
  const xs = panel.series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = panel.series.flatMap((s) => s.points.filter((p) => Number.isFinite(p[0])).map((p) => p[1]));
  for (const m of panel.markers ?? []) {
    xs.push(m.x);
    ys.push(m.y);
  }
  const finiteXs = xs.filter(Number.isFinite);
  const xAxis = computeAxis(xs, finiteXs.length > 0 && finiteXs.every(Number.isInteger));
  const yAxis = computeAxis(ys);
  const px = (x: number) => plot.left + ((x - xAxis.min) / (xAxis.max - xAxis.min)) * plot.width;
  const py = (y: number) => plot.top + plot.height - ((y - yAxis.min) / (yAxis.max - yAxis.min)) * plot.height;

  // Grid and ticks.
  ctx.font = plotFont(12);
  ctx.lineWidth = 1;
  ctx.fillStyle = '#222222';
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (const t of xAxis.ticks) {
    const x = Math.round(px(t)) + 0.5;
    gridLine(ctx, x, plot.top, x, plot.top + plot.height);
    ctx.fillText(t.toFixed(xAxis.decimals), x, plot.top + plot.height + 7);
  }
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (const t of yAxis.ticks) {
    const y = Math.round(py(t)) + 0.5;
    gridLine(ctx, plot.left, y, plot.left + plot.width, y);
    ctx.fillText(t.toFixed(yAxis.decimals), plot.left - 7, y);
  }

  // Frame, labels, title.
  ctx.strokeStyle = '#000000';
  ctx.strokeRect(plot.left + 0.5, plot.top + 0.5, plot.width, plot.height);
  ctx.fillStyle = '#000000';
  ctx.font = plotFont(13);
  ctx.textAlign = 'center';
  ctx.textBaseline = 'bottom';
  ctx.fillText(panel.xLabel, plot.left + plot.width / 2, originY + panelHeight - 8);
  ctx.save();
  ctx.translate(originX + 16, plot.top + plot.height / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textBaseline = 'middle';
  ctx.fillText(panel.yLabel, 0, 0);
  ctx.restore();
  if (panel.title) {
    ctx.font = plotFont(14);
    ctx.textBaseline = 'middle';
    ctx.fillText(panel.title, plot.left + plot.width / 2, originY + MARGIN.top / 2);
  }

  // Data, clipped to the plot area.
  ctx.save();
  ctx.beginPath();
  ctx.rect(plot.left, plot.top, plot.width, plot.height);
  ctx.clip();
  panel.series.forEach((s, i) => drawSeries(ctx, s.points, s.color ?? SERIES_COLORS[i % SERIES_COLORS.length], px, py));
  for (const m of panel.markers ?? []) {
    if (!Number.isFinite(m.x) || !Number.isFinite(m.y)) continue;
    ctx.fillStyle = m.color ?? MARKER_COLOR;
    ctx.beginPath();
    ctx.arc(px(m.x), py(m.y), 5, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.restore();
  for (const m of panel.markers ?? []) {
    if (Number.isFinite(m.x) && Number.isFinite(m.y)) annotate(ctx, m, px(m.x), py(m.y), plot);
  }
  drawLegend(ctx, panel, plot);
}

function gridLine(ctx: SKRSContext2D, x0: number, y0: number, x1: number, y1: number): void {
  ctx.strokeStyle = '#e4e4e4';
  ctx.beginPath();
  ctx.moveTo(x0, y0);
  ctx.lineTo(x1, y1);
  ctx.stroke();
}

function drawSeries(ctx: SKRSContext2D, points: Array<[number, number]>, color: string, px: (x: number) => number, py: (y: number) => number): void {
  const ok = (p: [number, number] | undefined) => p !== undefined && Number.isFinite(p[0]) && Number.isFinite(p[1]);
  ctx.strokeStyle = color;
  ctx.fillStyle = color;
  ctx.lineWidth = 2;
  ctx.lineJoin = 'round';
  ctx.beginPath();
  let penDown = false;
  points.forEach((p, i) => {
    if (!ok(p)) {
      penDown = false;
      return;
    }
    if (penDown) ctx.lineTo(px(p[0]), py(p[1]));
    else ctx.moveTo(px(p[0]), py(p[1]));
    penDown = true;
    // A point with no drawable neighbour (e.g. a 1-epoch run) would otherwise be invisible.
    if (!ok(points[i - 1]) && !ok(points[i + 1])) {
      ctx.stroke();
      ctx.beginPath();
      ctx.arc(px(p[0]), py(p[1]), 3, 0, 2 * Math.PI);
      ctx.fill();
      ctx.beginPath();
      penDown = false;
    }
  });
  ctx.stroke();
}

/** Puts the label on whichever side of the point has room, so it stays inside the panel. */
function annotate(ctx: SKRSContext2D, m: PlotMarker, x: number, y: number, plot: { left: number; top: number; width: number; height: number }): void {
  ctx.font = plotFont(12);
  ctx.fillStyle = m.color ?? MARKER_COLOR;
  const rightHalf = x > plot.left + plot.width / 2;
  const upperHalf = y < plot.top + plot.height / 2;
  ctx.textAlign = rightHalf ? 'right' : 'left';
  ctx.textBaseline = upperHalf ? 'top' : 'bottom';
  const tx = x + (rightHalf ? -8 : 8);
  const ty = y + (upperHalf ? 8 : -8);
  // A white halo keeps the label readable where it crosses a curve or grid line.
  ctx.strokeStyle = BACKGROUND;
  ctx.lineWidth = 4;
  ctx.lineJoin = 'round';
  ctx.strokeText(m.label, tx, ty);
  ctx.fillText(m.label, tx, ty);
}

function drawLegend(ctx: SKRSContext2D, panel: PlotPanel, plot: { left: number; top: number; width: number; height: number }): void {
  if (panel.series.length === 0) return;
  ctx.font = plotFont(12);
  const rowHeight = 18;
  const swatch = 22;
  const textWidth = Math.max(...panel.series.map((s) => ctx.measureText(s.name).width));
  const width = swatch + 8 + textWidth + 16;
  const height = panel.series.length * rowHeight + 8;
  const placement = panel.legend ?? 'upper right';
  const x = placement.endsWith('right') ? plot.left + plot.width - width - 8 : plot.left + 8;
  const y = placement.startsWith('upper') ? plot.top + 8 : plot.top + plot.height - height - 8;
  ctx.fillStyle = 'rgba(255,255,255,0.85)';
  ctx.fillRect(x, y, width, height);
  ctx.strokeStyle = '#cccccc';
  ctx.lineWidth = 1;
  ctx.strokeRect(x + 0.5, y + 0.5, width, height);
  ctx.textAlign = 'left';
  ctx.textBaseline = 'middle';
  panel.series.forEach((s, i) => {
    const rowY = y + 4 + rowHeight * i + rowHeight / 2;
    ctx.strokeStyle = s.color ?? SERIES_COLORS[i % SERIES_COLORS.length];
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x + 8, rowY);
    ctx.lineTo(x + 8 + swatch, rowY);
    ctx.stroke();
    ctx.fillStyle = '#000000';
    ctx.fillText(s.name, x + 8 + swatch + 8, rowY);
  });
}

/** Temp file + rename, so an image viewer refreshing the file never sees half a PNG. */
async function writePngAtomically(file: string, canvas: Canvas): Promise<void> {
  const png = await canvas.encode('png');
  try {
    await writeFileAtomic(path.dirname(file), path.basename(file), [png]);
  } catch (err) {
    throw new Error(`cannot write plot ${file}: ${(err as Error).message}`);
  }
}

export async function writeLinePlotPng(file: string, spec: LinePlotSpec): Promise<void> {
  await writePngAtomically(file, renderLinePlot(spec));
}

// ---------------------------------------------------------------------------------------
// Training curves

/** The seed's plot: loss and accuracy (train and test) per epoch, best test accuracy marked. */
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
        legend: 'lower right',
      },
    ],
  };
}

export async function writeCurvesPng(file: string, history: EpochMetrics[], title?: string): Promise<void> {
  await writeLinePlotPng(file, curvesPlotSpec(history, title));
}

// ---------------------------------------------------------------------------------------
// Sample images

export interface SampleImage {
  /** Height x width x channels bytes. */
  pixels: Uint8Array;
  height: number;
  width: number;
  /** 1 (grey) or 3 (RGB). */
  channels: number;
  label: string;
}

export function renderSamples(images: SampleImage[]): Canvas {
  if (images.length === 0) throw new Error('cannot plot samples: no images given');
  images.forEach((img, i) => {
    if (img.channels !== 1 && img.channels !== 3) throw new Error(`sample ${i}: channels must be 1 or 3, got ${img.channels}`);
    if (img.pixels.length !== img.height * img.width * img.channels) {
      throw new Error(`sample ${i}: ${img.pixels.length} bytes do not match ${img.height}x${img.width}x${img.channels}`);
    }
  });
  const { columns, scale, padding, titleHeight } = SAMPLE_GRID_LAYOUT;
  const cellWidth = Math.max(...images.map((im) => im.width)) * scale + 2 * padding;
  const cellHeight = Math.max(...images.map((im) => im.height)) * scale + titleHeight + 2 * padding;
  const rows = Math.ceil(images.length / columns);
  const canvas = createCanvas(Math.min(columns, images.length) * cellWidth, rows * cellHeight);
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = BACKGROUND;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.font = plotFont(12);
  ctx.fillStyle = '#000000';
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  images.forEach((img, i) => {
    const x = (i % columns) * cellWidth;
    const y = Math.floor(i / columns) * cellHeight;
    ctx.fillText(img.label, x + cellWidth / 2, y + padding + titleHeight / 2);
    ctx.putImageData(scaledImageData(ctx, img, scale), x + padding, y + padding + titleHeight);
  });
  return canvas;
}

/** Nearest-neighbour upscaling by hand: canvas smoothing would blur 32x32 images into mush. */
function scaledImageData(ctx: SKRSContext2D, img: SampleImage, scale: number) {
  const out = ctx.createImageData(img.width * scale, img.height * scale);
  const rgba = out.data;
  for (let oy = 0; oy < img.height * scale; oy++) {
    for (let ox = 0; ox < img.width * scale; ox++) {
      const src = (Math.floor(oy / scale) * img.width + Math.floor(ox / scale)) * img.channels;
      const dst = (oy * img.width * scale + ox) * 4;
      rgba[dst] = img.pixels[src];
      rgba[dst + 1] = img.pixels[src + (img.channels === 3 ? 1 : 0)];
      rgba[dst + 2] = img.pixels[src + (img.channels === 3 ? 2 : 0)];
      rgba[dst + 3] = 255;
    }
  }
  return out;
}

/** A grid (4 per row, so 2x4 for 8) of scaled-up images titled with their class names. */
export async function writeSamplesPng(file: string, images: SampleImage[]): Promise<void> {
  await writePngAtomically(file, renderSamples(images));
}

// ---------------------------------------------------------------------------------------
// Confusion matrix

/** A heat map of matrix[true][predicted], each cell shaded by its share of the row and labelled with its count. */
export async function writeConfusionPng(file: string, matrix: number[][], classes: readonly string[], title?: string): Promise<void> {
  const n = classes.length;
  if (matrix.length !== n || matrix.some((row) => row.length !== n)) throw new Error(`confusion matrix must be ${n}x${n}`);
  const cell = 44;
  const probe = createCanvas(1, 1).getContext('2d');
  probe.font = plotFont(12);
  const names = Math.ceil(Math.max(...classes.map((c) => probe.measureText(c).width))) + 16;
  const top = (title ? LINE_PLOT_LAYOUT.titleHeight : 0) + 24;
  // Column names are written at 45 degrees below the grid, so they need about 0.7 of their width.
  const canvas = createCanvas(names + 24 + n * cell + MARGIN.right, top + n * cell + Math.ceil(names * 0.72) + 30);
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = BACKGROUND;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = '#000000';
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  if (title) {
    ctx.font = plotFont(16);
    ctx.fillText(title, canvas.width / 2, LINE_PLOT_LAYOUT.titleHeight / 2 + 2);
  }
  const left = names + 24;
  ctx.font = plotFont(12);
  ctx.fillText('predicted class', left + (n * cell) / 2, top - 12);
  matrix.forEach((row, t) => {
    const total = row.reduce((a, b) => a + b, 0);
    row.forEach((count, p) => {
      const share = total > 0 ? count / total : 0;
      // White to matplotlib's Blues end; dark cells get white text.
      const shade = (a: number, b: number) => Math.round(a + (b - a) * share);
      ctx.fillStyle = `rgb(${shade(247, 8)},${shade(251, 48)},${shade(255, 107)})`;
      ctx.fillRect(left + p * cell, top + t * cell, cell, cell);
      ctx.fillStyle = share > 0.5 ? '#ffffff' : '#000000';
      ctx.fillText(String(count), left + p * cell + cell / 2, top + t * cell + cell / 2);
    });
  });
  ctx.strokeStyle = '#000000';
  ctx.strokeRect(left + 0.5, top + 0.5, n * cell, n * cell);
  ctx.fillStyle = '#000000';
  ctx.textAlign = 'right';
  classes.forEach((name, i) => {
    ctx.fillText(name, left - 8, top + i * cell + cell / 2);
    ctx.save();
    ctx.translate(left + i * cell + cell / 2, top + n * cell + 8);
    ctx.rotate(-Math.PI / 4);
    ctx.fillText(name, 0, 0);
    ctx.restore();
  });
  ctx.save();
  ctx.translate(12, top + (n * cell) / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = 'center';
  ctx.fillText('true class', 0, 0);
  ctx.restore();
  await writePngAtomically(file, canvas);
}
