// The dashboard's charts: Vega-Lite specs drawn by the bundle this server serves at
// /ui/vega.js (the same one the reports inline). Each drawn chart is marked
// data-rendered="true" and its view kept in window.squallViews[name].

import { h } from './dom.js';

const FONT = '"DejaVu Sans", "Liberation Sans", Arial, sans-serif';
const CONFIG = {
  font: FONT,
  view: { stroke: null },
  axis: { labelColor: '#5b6474', titleColor: '#1d2433', gridColor: '#eceff3', labelFontSize: 11 },
  legend: { labelFontSize: 11, titleFontSize: 11, orient: 'top' },
  title: { fontSize: 13, anchor: 'start', color: '#1d2433' },
};
const PALETTE = ['#2f5bd3', '#d9480f', '#2b8a3e', '#862e9c', '#c92a2a', '#1098ad', '#e67700',
  '#5c940d', '#364fc7', '#a61e4d'];

window.squallViews = window.squallViews || {};

export function chartBox(name) {
  return h('div', { class: 'chart', id: `chart-${name}`, dataset: { chart: name } });
}

export async function draw(el, spec) {
  if (typeof window.vegaEmbed !== 'function') {
    el.dataset.renderError = 'the chart library (/ui/vega.js) did not load';
    el.textContent = el.dataset.renderError;
    return;
  }
  const full = { $schema: 'https://vega.github.io/schema/vega-lite/v6.json', config: CONFIG, ...spec };
  delete full.$schema; // no URL in a spec: nothing to resolve, nothing to fetch
  try {
    const res = await window.vegaEmbed(el, full, { actions: false, renderer: 'svg' });
    window.squallViews[el.dataset.chart] = res.view;
    el.dataset.rendered = 'true';
  } catch (err) {
    el.dataset.renderError = String(err);
    el.textContent = `chart failed: ${err}`;
  }
}

// Axis labels for a time span: years over long spans, days over short ones.
export function timeAxis(msLow, msHigh, title = null) {
  const days = (msHigh - msLow) / 86400000;
  if (days > 3 * 365) {
    return { title, format: '%Y', tickCount: { interval: 'year', step: Math.max(1, Math.ceil(days / 365 / 12)) } };
  }
  if (days > 120) {
    return { title, format: '%b %Y', tickCount: { interval: 'month', step: Math.max(1, Math.ceil(days / 30.4 / 10)) } };
  }
  return { title, format: days > 3 ? '%d %b' : '%d %b %H:%M', labelOverlap: true };
}

const extent = (values) => values.reduce(([a, b], v) => [Math.min(a, v), Math.max(b, v)], [Infinity, -Infinity]);

// 1-2-5 ticks of a log axis (only the powers of ten when that would be too many).
export function logTicks(lo, hi) {
  const out = [];
  for (let k = Math.floor(Math.log10(lo)); k <= Math.ceil(Math.log10(hi)); k++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** k;
      if (v >= lo / 1.05 && v <= hi * 1.05) out.push(Number(v.toPrecision(12)));
    }
  }
  return out.length > 10 ? out.filter((v) => /^1(e|$|0*$|\.0*$)|^0\.0*1$/.test(String(v))) : out;
}

// Stored series as bars from first to last bar, with each gap marked in red.
export function coverageSpec(series, gaps) {
  const height = Math.max(60, 26 * new Set(series.map((s) => s.series)).size);
  return {
    width: 'container',
    height,
    datasets: { series, gaps },
    layer: [
      {
        data: { name: 'series' },
        mark: { type: 'bar', height: 14, color: '#9fb6ee', cornerRadius: 2 },
        encoding: {
          y: { field: 'series', type: 'nominal', title: null, sort: null },
          x: { field: 'start', type: 'temporal',
            axis: timeAxis(...extent([...series.map((s) => s.start), ...series.map((s) => s.end)]), 'stored bars (UTC)') },
          x2: { field: 'end' },
          tooltip: [{ field: 'series' }, { field: 'start', type: 'temporal', format: '%Y-%m-%d' },
            { field: 'end', type: 'temporal', format: '%Y-%m-%d %H:%M' }, { field: 'count', format: ',' }],
        },
      },
      {
        data: { name: 'gaps' },
        mark: { type: 'tick', color: '#c92a2a', thickness: 2, size: 18 },
        encoding: {
          y: { field: 'series', type: 'nominal', sort: null },
          x: { field: 'start', type: 'temporal' },
          tooltip: [{ field: 'series' }, { field: 'start', type: 'temporal', format: '%Y-%m-%d %H:%M' },
            { field: 'missing', title: 'missing bars' }],
        },
      },
    ],
  };
}

// Equity of several runs on one time axis.
export function compareSpec(points, names) {
  const [lo, hi] = extent(points.map((p) => p.equity).filter((v) => v > 0));
  const log = lo > 0 && hi / lo > 10;
  const [t0, t1] = extent(points.map((p) => p.t));
  return {
    width: 'container',
    height: 300,
    datasets: { points },
    data: { name: 'points' },
    mark: { type: 'line', strokeWidth: 1.6, interpolate: 'step-after' },
    encoding: {
      x: { field: 't', type: 'temporal', axis: timeAxis(t0, t1) },
      y: { field: 'equity', type: 'quantitative', title: log ? 'equity (log scale)' : 'equity',
        scale: log ? { type: 'log' } : { zero: false },
        axis: log ? { values: logTicks(lo, hi), format: '~g' } : {} },
      color: { field: 'run', type: 'nominal', title: null, scale: { domain: names, range: PALETTE } },
      tooltip: [{ field: 'run' }, { field: 't', type: 'temporal', format: '%Y-%m-%d %H:%M' },
        { field: 'equity', format: ',.4f' }],
    },
    params: [{ name: 'zoom', select: { type: 'interval', encodings: ['x'] }, bind: 'scales' }],
  };
}
