// Chart.js (npm `chart.js`, with `chartjs-chart-matrix` for heat maps and
// `chartjs-plugin-datalabels` for text on data points) rendered server-side on
// @napi-rs/canvas, no browser: Chart.js draws on any object with
// getContext('2d') when it runs without a DOM. Also the PNG writer and the font
// every plot shares.

import { createCanvas, GlobalFonts, type Canvas, type SKRSContext2D } from '@napi-rs/canvas';
import type { ChartConfiguration, ChartType, DefaultDataPoint, Plugin } from 'chart.js';
import { createRequire } from 'node:module';
import path from 'node:path';
import { writeFileAtomic } from '../../fs/atomic-file.js';

// chartjs-plugin-datalabels ships only a CommonJS build, which requires Chart.js's
// CommonJS build and recognises elements with instanceof; loading Chart.js and its
// plugins the same way keeps a single Chart.js instance in the process.
const require = createRequire(import.meta.url);
const { Chart, registerables } = require('chart.js') as typeof import('chart.js');
const { MatrixController, MatrixElement } = require('chartjs-chart-matrix') as typeof import('chartjs-chart-matrix');
/** Per-chart plugin (pass it in `plugins`): labels data points with text. */
export const DataLabels = require('chartjs-plugin-datalabels') as Plugin;

const DEJAVU_SANS = '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf';

/** DejaVu Sans when installed (CI installs fonts-dejavu-core), so text renders the same everywhere; else any sans font. */
export const PLOT_FONT_FAMILY = registerFont();

function registerFont(): string {
  try {
    if (GlobalFonts.registerFromPath(DEJAVU_SANS, 'TfjsDdpPlotSans') !== null) return 'TfjsDdpPlotSans';
  } catch {
    // No such file: fall through.
  }
  return 'sans-serif';
}

export function plotFont(sizePx: number): string {
  return `${sizePx}px ${PLOT_FONT_FAMILY}`;
}

export const BACKGROUND = '#ffffff';
export const TEXT_COLOR = '#222222';

Chart.register(...registerables, MatrixController, MatrixElement);
Chart.defaults.font.family = PLOT_FONT_FAMILY;
Chart.defaults.font.size = 12;
Chart.defaults.color = TEXT_COLOR;

/** A white canvas to compose charts and text on. */
export function blankCanvas(width: number, height: number): { canvas: Canvas; ctx: SKRSContext2D } {
  const canvas = createCanvas(width, height);
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = BACKGROUND;
  ctx.fillRect(0, 0, width, height);
  return { canvas, ctx };
}

/**
 * Renders one Chart.js chart of `width` x `height` pixels and draws it onto
 * `target` at (x, y). Animation and resizing are off, so the chart is complete
 * when the constructor returns.
 */
export function drawChart<T extends ChartType, D = DefaultDataPoint<T>, L = unknown>(
  target: SKRSContext2D,
  box: { x: number; y: number; width: number; height: number },
  config: ChartConfiguration<T, D, L>,
): void {
  const canvas = createCanvas(box.width, box.height);
  const whiteBackground: Plugin<T> = {
    id: 'tfjsDdpWhiteBackground',
    beforeDraw: (chart) => {
      chart.ctx.save();
      chart.ctx.fillStyle = BACKGROUND;
      chart.ctx.fillRect(0, 0, chart.width, chart.height);
      chart.ctx.restore();
    },
  };
  const chart = new Chart<T, D, L>(canvas as unknown as HTMLCanvasElement, {
    ...config,
    options: { ...config.options, responsive: false, animation: false, devicePixelRatio: 1 } as ChartConfiguration<T, D, L>['options'],
    plugins: [whiteBackground, ...(config.plugins ?? [])],
  });
  try {
    target.drawImage(canvas, box.x, box.y);
  } finally {
    chart.destroy();
  }
}

/** Temp file + rename, so an image viewer refreshing the file never sees half a PNG. */
export async function writePng(file: string, canvas: Canvas): Promise<void> {
  const png = await canvas.encode('png');
  try {
    await writeFileAtomic(path.dirname(file), path.basename(file), [png]);
  } catch (err) {
    throw new Error(`cannot write plot ${file}: ${(err as Error).message}`);
  }
}
