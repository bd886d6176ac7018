// The live dashboard in real headless Chromium (Debian's, driven by
// playwright-core) during a real 2-worker run, plus its read-only HTTP rules.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { chromium } from 'playwright-core';
import { DEFAULTS, type TrainConfig } from '../src/common/training/config.js';
import { runCoordinator, type CoordinatorOptions } from '../src/coordinator/coordinator.js';
import type { HostPort } from '../src/common/protocol/index.js';
import { CHROMIUM_PATH, chromium as chromiumDep } from './helpers/system-deps.js';

const SCREENSHOT = path.resolve(import.meta.dirname, '..', 'test-output', 'dashboard.png');
const TOKEN = 'dashboard-test-secret-93b1';

const cfg = (epochs: number): TrainConfig => ({
  ...DEFAULTS, model: 'resnet18', width: 2, dataset: 'synthetic', backend: 'wasm', trainLimit: 48, testLimit: 12,
  batchSize: 12, epochs, seed: 2, plots: false, out: fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ddp-dash-')),
});

/** Starts a run and resolves the dashboard's URL once the port is open. */
function startRun(epochs: number, extra: Partial<CoordinatorOptions> = {}) {
  let onListening: (a: HostPort) => void = () => {};
  const listening = new Promise<HostPort>((resolve) => (onListening = resolve));
  const run = runCoordinator(cfg(epochs), { workers: 2, port: 0, token: TOKEN, onListening, ...extra });
  run.catch(() => {}); // awaited by the test
  return { url: listening.then((a) => `http://${a.host}:${a.port}`), run };
}

describe('dashboard', () => {
  chromiumDep.test('shows curves that gain points and both workers, live, in Chromium', async () => {
    // The browser first: the page must be open while the run still has epochs to go.
    const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: ['--no-sandbox'] });
    const { url, run } = startRun(6);
    try {
      const page = await browser.newPage({ viewport: { width: 1200, height: 1100 } });
      const errors: string[] = [];
      page.on('pageerror', (err) => errors.push(err.message));
      await page.goto(`${await url}/`);
      const epochPoints = () => page.$eval('#loss-chart', (el) => Number((el as HTMLElement).dataset.epochPoints));
      await page.waitForFunction(() => Number((document.querySelector('#loss-chart') as HTMLElement).dataset.epochPoints) >= 1, null, { timeout: 60_000 });
      const first = await epochPoints();
      await page.waitForFunction((n) => Number((document.querySelector('#loss-chart') as HTMLElement).dataset.epochPoints) > n, first, { timeout: 60_000 });
      expect(await epochPoints()).toBeGreaterThan(first);
      expect(Number(await page.$eval('#loss-chart', (el) => (el as HTMLElement).dataset.stepPoints))).toBeGreaterThan(4);
      expect(Number(await page.$eval('#allreduce-chart', (el) => (el as HTMLElement).dataset.stepPoints))).toBeGreaterThan(4);
      const rows = await page.$$eval('#workers tbody tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)));
      expect(rows.map((r) => r[0]).sort()).toEqual(['0', '1']);
      for (const r of rows) {
        expect(r[1]).toMatch(/^127\.0\.0\.1:\d+$/);
        expect(r[2]).toMatch(/^wasm/);
      }
      expect(await page.textContent('#run-title')).toContain('resnet18 width 2 on synthetic · 2 workers');
      fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      expect(fs.statSync(SCREENSHOT).size).toBeGreaterThan(10_000);
      await run;
      // The last SSE event can trail the run's end by seconds on a loaded 2-core machine.
      await page.waitForFunction(() => document.querySelector('#run-status')?.textContent === 'finished', null, { timeout: 30_000 });
      // By the end the page holds every epoch and every step of the run (6 epochs of 48 / 12 steps).
      const chart = (id: string) => page.$eval(id, (el) => ({ ...(el as HTMLElement).dataset }));
      expect(await chart('#loss-chart')).toMatchObject({ epochPoints: '6', stepPoints: '24' });
      expect(await chart('#allreduce-chart')).toMatchObject({ stepPoints: '24' });
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  }, 150_000);

  test('is read-only, serves uPlot from npm, and never shows the token', async () => {
    const { url, run } = startRun(1);
    const base = await url;
    const page = await fetch(`${base}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("default-src 'self'");
    expect(await page.text()).toContain('/vendor/uPlot.iife.min.js');
    const uplot = await fetch(`${base}/vendor/uPlot.iife.min.js`);
    expect(uplot.status).toBe(200);
    expect(await uplot.text()).toMatch(/uPlot/);
    expect((await fetch(`${base}/api/run`, { method: 'POST', body: '{}' })).status).toBe(405);
    expect((await fetch(`${base}/../package.json`)).status).toBe(404);
    const snapshot = await (await fetch(`${base}/api/run`)).text();
    expect(JSON.parse(snapshot).run.workers).toBe(2);
    await run;
    expect(snapshot).not.toContain(TOKEN);
  }, 60_000);

  test('--dashboard false serves nothing but still trains', async () => {
    const { url, run } = startRun(1, { dashboard: false });
    const res = await fetch(`${await url}/`);
    expect(res.status).toBe(404);
    expect(await res.text()).toMatch(/dashboard is off/);
    expect((await run).history).toHaveLength(1);
  }, 60_000);
});
