import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PNG } from 'pngjs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EpochMetrics } from '../src/common/io/metrics.js';
import { writeConfusionPng } from '../src/common/io/plot/confusion.js';
import { writeCurvesPng } from '../src/common/io/plot/curves.js';
import { LINE_PLOT_LAYOUT, writeLinePlotPng } from '../src/common/io/plot/line-plot.js';
import { SAMPLE_GRID_LAYOUT, writeSamplesPng, type SampleImage } from '../src/common/io/plot/samples.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'tfjs-ddp-plot-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function readPng(file: string): Promise<PNG> {
  return PNG.sync.read(await readFile(file));
}

/** Pixels (x, y) matching a predicate, within an optional column range. */
function pixelsWhere(png: PNG, match: (r: number, g: number, b: number) => boolean, xFrom = 0, xTo = png.width): Array<[number, number]> {
  const hits: Array<[number, number]> = [];
  for (let y = 0; y < png.height; y++) {
    for (let x = xFrom; x < xTo; x++) {
      const i = (y * png.width + x) * 4;
      if (match(png.data[i], png.data[i + 1], png.data[i + 2])) hits.push([x, y]);
    }
  }
  return hits;
}

const isMarkerRed = (r: number, g: number, b: number) => r > 200 && g < 40 && b < 40;
// The default series colours: matplotlib blue (31,119,180) and orange (255,127,14).
const isSeriesBlue = (r: number, g: number, b: number) => Math.abs(r - 31) < 20 && Math.abs(g - 119) < 20 && Math.abs(b - 180) < 20;
const isSeriesOrange = (r: number, g: number, b: number) => r > 235 && Math.abs(g - 127) < 20 && b < 40;

function history(epochs: number): EpochMetrics[] {
  return Array.from({ length: epochs }, (_, i) => {
    const e = i + 1;
    return {
      epoch: e,
      lr: 0.1,
      train_loss: 2 * Math.exp(-e / 5),
      test_loss: 2 * Math.exp(-e / 6) + 0.3,
      train_acc: 1 - 0.9 * Math.exp(-e / 5),
      // Peaks at epoch 8, then overfits a little.
      test_acc: 0.85 - 0.002 * (e - 8) ** 2,
      seconds: 10,
      images_per_s: 500,
      workers: 2,
    };
  });
}

describe('writeCurvesPng', () => {
  it('draws two panels with both series and a red best-accuracy marker in the accuracy panel', async () => {
    const file = path.join(dir, 'curves.png');
    await writeCurvesPng(file, history(12), 'resnet18 / synthetic');
    const png = await readPng(file);
    expect(png.width).toBe(2 * LINE_PLOT_LAYOUT.panelWidth);
    expect(png.height).toBe(LINE_PLOT_LAYOUT.panelHeight + LINE_PLOT_LAYOUT.titleHeight);

    const { panelWidth } = LINE_PLOT_LAYOUT;
    expect(pixelsWhere(png, isSeriesBlue, 0, panelWidth).length).toBeGreaterThan(100);
    expect(pixelsWhere(png, isSeriesOrange, 0, panelWidth).length).toBeGreaterThan(100);
    expect(pixelsWhere(png, isMarkerRed, 0, panelWidth)).toEqual([]);
    const red = pixelsWhere(png, isMarkerRed, panelWidth);
    expect(red.length).toBeGreaterThan(20);
    // The marker is labelled: red text runs well beyond the 10-pixel dot.
    const redXs = red.map(([x]) => x);
    expect(Math.max(...redXs) - Math.min(...redXs)).toBeGreaterThan(60);

    // The legend sits above the plot at its right end: the highest blue in the panel's right half is
    // the train-loss swatch, above every point of the curves, with the test-loss swatch beside it.
    const blueLoss = pixelsWhere(png, isSeriesBlue, 0, panelWidth);
    const swatch = blueLoss.filter(([x]) => x > panelWidth / 2).reduce((a, b) => (b[1] < a[1] ? b : a));
    const curveTop = Math.min(...blueLoss.filter(([x]) => x < panelWidth / 2).map(([, y]) => y));
    expect(swatch[1]).toBeLessThan(curveTop - 20);
    const beside = pixelsWhere(png, isSeriesOrange, swatch[0], panelWidth).filter(([, y]) => Math.abs(y - swatch[1]) <= 2);
    expect(beside.length).toBeGreaterThan(15);

    // The figure title is drawn in its band.
    const dark = (r: number, g: number, b: number) => r < 90 && g < 90 && b < 90;
    expect(pixelsWhere(png, dark).filter(([, y]) => y < LINE_PLOT_LAYOUT.titleHeight).length).toBeGreaterThan(50);
    // No temp file is left next to the plot.
    expect(await readdir(dir)).toEqual(['curves.png']);
  });

  it('marks nothing red when no epoch has a finite test accuracy', async () => {
    const file = path.join(dir, 'curves.png');
    await writeCurvesPng(file, history(5).map((m) => ({ ...m, test_acc: Number.NaN })));
    const png = await readPng(file);
    expect(png.height).toBe(LINE_PLOT_LAYOUT.panelHeight);
    expect(pixelsWhere(png, isMarkerRed)).toEqual([]);
  });

  it('handles a single epoch (points instead of lines)', async () => {
    const file = path.join(dir, 'one.png');
    await writeCurvesPng(file, history(1));
    const png = await readPng(file);
    expect(png.width).toBe(2 * LINE_PLOT_LAYOUT.panelWidth);
    expect(pixelsWhere(png, isSeriesBlue, 0, LINE_PLOT_LAYOUT.panelWidth).length).toBeGreaterThan(5);
    expect(pixelsWhere(png, isMarkerRed).length).toBeGreaterThan(20);
  });

  it('survives diverged values and flat curves', async () => {
    const file = path.join(dir, 'nan.png');
    const h = history(6).map((m, i) => ({ ...m, train_loss: i === 3 ? Number.NaN : i === 4 ? Infinity : m.train_loss, train_acc: 0.1, test_acc: 0.1 }));
    await writeCurvesPng(file, h);
    const png = await readPng(file);
    expect(pixelsWhere(png, isSeriesBlue, 0, LINE_PLOT_LAYOUT.panelWidth).length).toBeGreaterThan(50);
    expect(pixelsWhere(png, isMarkerRed).length).toBeGreaterThan(20);
  });

  it('refuses an empty history with a clear message', async () => {
    await expect(writeCurvesPng(path.join(dir, 'x.png'), [])).rejects.toThrow(/metrics history is empty/);
  });
});

describe('writeLinePlotPng', () => {
  it('sizes the image by panel count and draws the given series colours', async () => {
    const file = path.join(dir, 'scaling.png');
    await writeLinePlotPng(file, {
      panels: [
        {
          xLabel: 'workers',
          yLabel: 'images/s',
          series: [
            { name: 'measured', points: [[1, 500], [2, 950], [4, 1800]], color: '#00a000' },
            { name: 'ideal', points: [[1, 500], [2, 1000], [4, 2000]], color: '#0000ff' },
          ],
        },
      ],
    });
    const png = await readPng(file);
    expect([png.width, png.height]).toEqual([LINE_PLOT_LAYOUT.panelWidth, LINE_PLOT_LAYOUT.panelHeight]);
    expect(pixelsWhere(png, (r, g, b) => r < 30 && g > 140 && g < 180 && b < 30).length).toBeGreaterThan(50);
    expect(pixelsWhere(png, (r, g, b) => r < 30 && g < 30 && b > 230).length).toBeGreaterThan(50);
  });

  it('rejects a plot without panels', async () => {
    await expect(writeLinePlotPng(path.join(dir, 'x.png'), { panels: [] })).rejects.toThrow(/at least one panel/);
  });

  it('reports an unwritable destination', async () => {
    const spec = { panels: [{ xLabel: 'x', yLabel: 'y', series: [] }] };
    // A directory that cannot exist because a file holds its name.
    await writeFile(path.join(dir, 'blocker'), 'a file, not a directory');
    await expect(writeLinePlotPng(path.join(dir, 'blocker', 'x.png'), spec)).rejects.toThrow(/cannot write plot .*blocker\/x\.png/);
  });
});

describe('writeSamplesPng', () => {
  function gradientImage(seed: number, channels: number, label: string): SampleImage {
    const pixels = new Uint8Array(32 * 32 * channels);
    for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 7 + seed * 31) & 255;
    return { pixels, height: 32, width: 32, channels, label };
  }

  it('lays 8 images out 2x4, scaled up with nearest-neighbour sampling', async () => {
    const images = Array.from({ length: 8 }, (_, i) => gradientImage(i, i === 5 ? 1 : 3, `class ${i}`));
    const file = path.join(dir, 'samples.png');
    await writeSamplesPng(file, images);
    const png = await readPng(file);
    const { columns, scale, padding, titleHeight } = SAMPLE_GRID_LAYOUT;
    const cellWidth = 32 * scale + 2 * padding;
    const cellHeight = 32 * scale + titleHeight + 2 * padding;
    expect([png.width, png.height]).toEqual([columns * cellWidth, 2 * cellHeight]);

    const pixelAt = (x: number, y: number) => Array.from(png.data.subarray((y * png.width + x) * 4, (y * png.width + x) * 4 + 4));
    for (const [index, sx, sy] of [[0, 0, 0], [6, 17, 9], [5, 31, 31], [3, 4, 30]]) {
      const img = images[index];
      const cellX = (index % columns) * cellWidth + padding;
      const cellY = Math.floor(index / columns) * cellHeight + padding + titleHeight;
      const src = (sy * 32 + sx) * img.channels;
      const expected = img.channels === 3 ? [img.pixels[src], img.pixels[src + 1], img.pixels[src + 2], 255] : [img.pixels[src], img.pixels[src], img.pixels[src], 255];
      // Every pixel of the scale x scale block repeats the source pixel exactly.
      for (const [dx, dy] of [[0, 0], [scale - 1, scale - 1], [1, scale - 2]]) {
        expect(pixelAt(cellX + sx * scale + dx, cellY + sy * scale + dy)).toEqual(expected);
      }
    }
    // Titles are drawn: dark text pixels in the title band of the first cell.
    const titleBand = pixelsWhere(png, (r, g, b) => r < 100 && g < 100 && b < 100, 0, cellWidth).filter(([, y]) => y < padding + titleHeight);
    expect(titleBand.length).toBeGreaterThan(10);
  });

  it('rejects images whose bytes do not match their size', async () => {
    const bad = { ...gradientImage(0, 3, 'x'), channels: 1 };
    await expect(writeSamplesPng(path.join(dir, 's.png'), [bad])).rejects.toThrow(/sample 0: 3072 bytes do not match 32x32x1/);
    await expect(writeSamplesPng(path.join(dir, 's.png'), [{ ...gradientImage(0, 3, 'x'), channels: 4 }])).rejects.toThrow(/channels must be 1 or 3/);
    await expect(writeSamplesPng(path.join(dir, 's.png'), [])).rejects.toThrow(/no images/);
  });
});

describe('writeConfusionPng', () => {
  const isDarkBlue = (r: number, g: number, b: number) => r < 30 && Math.abs(g - 48) < 20 && Math.abs(b - 107) < 20;
  const isWhite = (r: number, g: number, b: number) => r > 245 && g > 245 && b > 245;

  it('shades each cell by its share of the row, diagonal from top left, with counts and class names', async () => {
    const file = path.join(dir, 'confusion.png');
    // Rows 0 and 1 are all correct (share 1, the darkest blue); row 2 has one of five wrong.
    await writeConfusionPng(file, [[5, 0, 0], [0, 5, 0], [1, 0, 4]], ['cat', 'dog', 'a rather long class name'], 'model on data: accuracy 0.9333');
    const png = await readPng(file);
    const blue = pixelsWhere(png, isDarkBlue);
    // Two full cells of darkest blue (less their white count text).
    expect(blue.length).toBeGreaterThan(2 * 30 * 30);
    const top = blue.reduce((a, b) => (b[1] < a[1] ? b : a));
    const bottom = blue.reduce((a, b) => (b[1] > a[1] ? b : a));
    expect(top[0]).toBeLessThan(bottom[0]); // row 0's dark cell is left of row 1's: the diagonal runs down to the right
    // White count digits inside the dark cells.
    const [minX, maxX] = [Math.min(...blue.map(([x]) => x)), Math.max(...blue.map(([x]) => x))];
    const [minY, maxY] = [top[1], bottom[1]];
    const whiteInside = pixelsWhere(png, isWhite, minX, maxX).filter(([, y]) => y > minY && y < maxY);
    expect(whiteInside.length).toBeGreaterThan(20);
    // The long class name gets room: the image is wider than the 3 cells plus short labels would need.
    const short = path.join(dir, 'short.png');
    await writeConfusionPng(short, [[5, 0, 0], [0, 5, 0], [1, 0, 4]], ['cat', 'dog', 'cow']);
    expect(png.width).toBeGreaterThan((await readPng(short)).width + 100);
  });

  it('refuses a matrix that does not match the classes', async () => {
    await expect(writeConfusionPng(path.join(dir, 'x.png'), [[1, 0]], ['a', 'b'])).rejects.toThrow(/confusion matrix must be 2x2/);
  });
});
