// The run page: one read-only Server-Sent Events feed (/events) that first
// sends the whole run and then deltas; uPlot draws the charts. No build step,
// no commands sent back: the page only listens.
'use strict';

const state = { view: null, charts: {} };
const $ = (id) => document.getElementById(id);

function fmt(x, digits = 4) {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits);
}

function duration(seconds) {
  if (seconds === null || !Number.isFinite(seconds)) return '';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `ETA ${h > 0 ? `${h}h ` : ''}${m}m ${s % 60}s`;
}

function chart(id, series, opts = {}) {
  const el = $(id);
  const width = Math.max(300, el.clientWidth || 460);
  const plot = new uPlot({
    width, height: 240,
    scales: { x: { time: false }, ...(opts.scales || {}) },
    // 4 significant digits: the lr of a cosine schedule changes in the 3rd or 4th digit.
    axes: [{ label: 'epoch' }, { label: opts.yLabel || '', size: 60, values: (u, vals) => vals.map((v) => +v.toPrecision(4)) }],
    series: [{ label: 'epoch' }, ...series],
  }, [[], ...series.map(() => [])], el);
  return plot;
}

function lossData(view) {
  // uPlot wants one shared x: merge step points and epoch points, leaving gaps (null).
  const xs = [];
  const stepLoss = [];
  const trainLoss = [];
  const testLoss = [];
  for (const p of view.steps) { xs.push(p.epoch); stepLoss.push(p.loss); trainLoss.push(null); testLoss.push(null); }
  for (const m of view.epochs) { xs.push(m.epoch); stepLoss.push(null); trainLoss.push(m.train_loss); testLoss.push(m.test_loss); }
  const order = xs.map((_, i) => i).sort((a, b) => xs[a] - xs[b]);
  const pick = (arr) => order.map((i) => arr[i]);
  return [pick(xs), pick(stepLoss), pick(trainLoss), pick(testLoss)];
}

function render() {
  const v = state.view;
  if (!v) return;
  const r = v.run;
  $('run-title').textContent = `${r.model} width ${r.width} on ${r.dataset} · ${r.workers} workers · batch ${r.batchSize} · ${r.allreduce} all-reduce`;
  const status = $('run-status');
  status.textContent = r.status;
  status.className = `status ${r.status}`;
  $('run-message').textContent = r.message || '';

  const p = v.progress;
  const frac = p.total > 0 ? p.seen / p.total : 0;
  $('progress-text').textContent = r.status === 'waiting'
    ? `waiting for workers (${v.workers.length}/${r.workers} joined)`
    : `epoch ${p.epoch + 1}/${r.epochs}: ${p.seen}/${p.total} images`;
  $('eta').textContent = r.status === 'training' ? duration(p.etaSeconds) : '';
  $('progress-bar').style.width = `${(100 * frac).toFixed(1)}%`;

  const loss = lossData(v);
  state.charts.loss.setData(loss);
  $('loss-chart').dataset.epochPoints = String(v.epochs.length);
  $('loss-chart').dataset.stepPoints = String(v.steps.length);
  state.charts.acc.setData([v.epochs.map((m) => m.epoch), v.epochs.map((m) => m.train_acc), v.epochs.map((m) => m.test_acc)]);
  $('acc-chart').dataset.epochPoints = String(v.epochs.length);
  state.charts.allreduce.setData([v.steps.map((s) => s.epoch), v.steps.map((s) => s.allReduceMs)]);
  $('allreduce-chart').dataset.stepPoints = String(v.steps.length);

  const now = Date.now();
  $('workers').querySelector('tbody').replaceChildren(...v.workers.map((w) => row([
    w.rank ?? '–', [w.host, 'text'], [w.backend ?? '–', 'text'], [w.state, 'text'], fmt(w.imagesPerS, 1), `${((now - w.lastSeen) / 1000).toFixed(1)} s ago`,
  ])));
  $('epochs').querySelector('tbody').replaceChildren(...v.epochs.map((m) => row([
    m.epoch, fmt(m.lr, 5), fmt(m.train_loss), fmt(m.train_acc), fmt(m.test_loss), fmt(m.test_acc), fmt(m.seconds, 1), fmt(m.images_per_s, 1),
  ])));
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const cell of cells) {
    const td = document.createElement('td');
    const [text, cls] = Array.isArray(cell) ? cell : [cell, ''];
    td.textContent = String(text); // textContent: nothing from the feed is ever parsed as HTML
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  return tr;
}

function apply(event) {
  if (event.type === 'snapshot') {
    state.view = event.view;
    state.charts.lr.setData([event.view.schedule.map((p) => p[0]), event.view.schedule.map((p) => p[1])]);
  } else if (event.type === 'delta' && state.view) {
    state.view.steps.push(...event.steps);
    state.view.epochs.push(...event.epochs);
    state.view.workers = event.workers;
    state.view.progress = event.progress;
    state.view.run = event.run;
  }
  render();
}

function start() {
  state.charts.loss = chart('loss-chart', [
    { label: 'step loss', stroke: '#9db8e8', width: 1, spanGaps: true },
    { label: 'train loss', stroke: '#1f5fd1', width: 2, spanGaps: true, points: { size: 6 } },
    { label: 'test loss', stroke: '#d1461f', width: 2, spanGaps: true, points: { size: 6 } },
  ], { yLabel: 'loss' });
  state.charts.acc = chart('acc-chart', [
    { label: 'train acc', stroke: '#1f5fd1', width: 2, points: { size: 6 } },
    { label: 'test acc', stroke: '#d1461f', width: 2, points: { size: 6 } },
  ], { yLabel: 'accuracy' });
  state.charts.lr = chart('lr-chart', [{ label: 'lr', stroke: '#2a9d4a', width: 2 }], { yLabel: 'lr' });
  state.charts.allreduce = chart('allreduce-chart', [{ label: 'all-reduce ms', stroke: '#7a4fd1', width: 1 }], { yLabel: 'ms' });

  const source = new EventSource('/events');
  source.onmessage = (msg) => apply(JSON.parse(msg.data));
  source.onerror = () => {
    if (state.view && state.view.run.status !== 'finished') {
      $('run-status').textContent = 'disconnected';
      $('run-status').className = 'status failed';
    }
  };
  setInterval(render, 1000); // keeps "last heard" ages current between updates
}

start();
