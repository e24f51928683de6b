// The run registry: a filtered list, side-by-side compare, and one run followed live
// (progress, cancel, then its report).

import { api, seg, url } from './api.js';
import { chartBox, compareSpec, draw } from './charts.js';
import { formatMetric, metricFormatter, metricLabel, orderMetrics } from './metrics.js';
import {
  ago, badge, clear, duration, errorBox, finite, h, int, num, numCell, pct, progressBar,
  section, table, tile, utc,
} from './dom.js';

const KINDS = ['backtest', 'walkforward', 'sweep', 'simulation', 'features'];
const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const WITH_REPORT = new Set(['backtest', 'walkforward', 'simulation']);
const ACTIVE = new Set(['queued', 'running']);
const PAGE = 25;
const short = (id) => String(id).slice(0, 8);

// The metrics worth a glance, per kind: [key, label, format].
const HEADLINE = {
  backtest: [['total_return', 'return', pct], ['sharpe', 'Sharpe', num], ['max_drawdown', 'max DD', pct]],
  walkforward: [['total_return', 'OOS return', pct], ['sharpe', 'OOS Sharpe', num], ['max_drawdown', 'max DD', pct]],
  simulation: [['var_99', 'VaR 99%', pct], ['es_99', 'ES 99%', pct], ['ruin_probability', 'ruin', pct]],
  features: [['rows_written', 'rows', int]],
};

function headline(run) {
  const m = run.metrics || {};
  return (HEADLINE[run.kind] || []).filter(([k]) => k in m).map(([k, label, fmt]) =>
    h('span', { class: 'metric', dataset: { key: k, value: finite(m[k]) ? String(m[k]) : null } },
      `${label} `, h('b', null, fmt(m[k])), '  '));
}

function select(name, values, current, any = 'any') {
  return h('label', null, name, h('select', { name },
    h('option', { value: '' }, any),
    values.map((v) => h('option', { value: v, selected: v === current }, v))));
}

export async function viewRuns(view, query, ctx) {
  const filters = {};
  for (const k of ['kind', 'status', 'coin', 'strategy', 'interval']) filters[k] = query.get(k) || '';
  const offset = Math.max(0, parseInt(query.get('offset') || '0', 10) || 0);
  const chosen = new Set();
  const form = h('form', { class: 'filters', id: 'run-filters' },
    select('kind', KINDS, filters.kind), select('status', STATUSES, filters.status),
    h('label', null, 'coin', h('input', { name: 'coin', value: filters.coin, placeholder: 'BTC', size: 6 })),
    h('label', null, 'strategy', h('input', { name: 'strategy', value: filters.strategy, size: 10 })),
    h('label', null, 'interval', h('input', { name: 'interval', value: filters.interval, size: 4 })),
    h('button', { type: 'submit' }, 'Filter'),
    h('a', { href: '#/runs' }, 'clear'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) if (v) q.set(k, String(v).trim());
    location.hash = `#/runs?${q}`;
  });
  const compare = h('button', { class: 'secondary', id: 'compare-selected', disabled: true, type: 'button',
    onclick: () => { location.hash = `#/compare?ids=${[...chosen].map(seg).join(',')}`; } }, 'Compare selected');
  const body = h('div', { id: 'runs-body' });
  view.append(h('h1', null, 'Runs'), section(null, form,
    h('p', { class: 'note' }, 'Tick 2 to 10 backtest or walk-forward runs to compare them side by side.'),
    h('div', { class: 'row' }, compare)), section(null, body));

  async function load() {
    const page = await api('/runs', { params: { ...filters, limit: PAGE, offset } });
    const rows = page.runs.map((r) => {
      const box = h('input', { type: 'checkbox', 'aria-label': `compare ${r.run_id}`, checked: chosen.has(r.run_id),
        disabled: !['backtest', 'walkforward'].includes(r.kind) });
      box.addEventListener('change', () => {
        if (box.checked) chosen.add(r.run_id); else chosen.delete(r.run_id);
        compare.disabled = chosen.size < 2 || chosen.size > 10;
        compare.textContent = `Compare selected (${chosen.size})`;
      });
      const report = r.status === 'succeeded' && WITH_REPORT.has(r.kind)
        ? h('a', { href: url(`/runs/${seg(r.run_id)}/report`), target: '_blank', rel: 'noopener' }, 'report') : '';
      return h('tr', { dataset: { run: r.run_id, kind: r.kind, status: r.status } },
        h('td', { class: 'narrow' }, box),
        h('td', null, h('a', { href: `#/run/${seg(r.run_id)}`, title: r.run_id }, short(r.run_id))),
        h('td', null, r.kind),
        h('td', null, badge(r.status), ' ', ACTIVE.has(r.status) && r.progress ? progressBar(r.progress) : ''),
        h('td', null, [r.coin, r.interval].filter(Boolean).join(' ') || '—'),
        h('td', null, r.strategy || '—'),
        h('td', null, utc(r.created_at_unix)),
        numCell(r.duration_s, duration),
        h('td', { class: 'metrics grow' }, headline(r)),
        h('td', { class: 'wrap' }, r.error ? h('span', { class: 'muted' }, r.error.slice(0, 120)) : report));
    });
    const prev = offset > 0 ? h('a', { href: pageHash(filters, Math.max(0, offset - PAGE)) }, '← newer') : '';
    const next = page.next_offset !== null ? h('a', { href: pageHash(filters, page.next_offset) }, 'older →') : '';
    clear(body,
      page.runs.length ? table([['', false, 'narrow'], 'run', 'kind', 'status', 'series', 'strategy', 'created (UTC)',
        ['took', true], ['key metrics', false, 'grow'], ''], rows, { id: 'runs-table', dataset: { total: page.total } })
        : h('p', { class: 'muted' }, 'No run matches. Launch one from the Launch tab.'),
      h('div', { class: 'pager' }, prev, h('span', { class: 'muted', id: 'runs-count' },
        `${int(page.runs.length ? offset + 1 : 0)}–${int(offset + page.runs.length)} of ${int(page.total)}`), next));
    return page.runs.some((r) => ACTIVE.has(r.status));
  }
  if (await load()) ctx.every(2000, load);
}

function pageHash(filters, offset) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
  if (offset) q.set('offset', offset);
  return `#/runs?${q}`;
}

function label(run) {
  const p = run.request && run.request.params ? Object.entries(run.request.params).map(([k, v]) => `${k}=${v}`).join(' ') : '';
  return `${short(run.run_id)} ${run.strategy || run.kind}${p ? ` ${p}` : ''}`;
}

export async function viewCompare(view, query) {
  const ids = (query.get('ids') || '').split(',').map((s) => s.trim()).filter(Boolean);
  view.append(h('h1', null, 'Compare runs'));
  if (ids.length < 2) {
    view.append(section(null, h('p', null, 'Pick 2 to 10 runs on the ', h('a', { href: '#/runs?kind=backtest' }, 'Runs'),
      ' tab (tick them, then “Compare selected”).')));
    return;
  }
  const c = await api('/backtest/compare', { params: { ids: ids.join(','), equity_points: 2000 } });
  const names = c.runs.map((r) => short(r.run_id));
  const head = c.runs.map((r) => h('th', { class: 'num', title: r.run_id },
    h('a', { href: `#/run/${seg(r.run_id)}` }, short(r.run_id)), h('div', { class: 'muted' }, `${r.coin || ''} ${r.interval || ''} ${r.strategy || r.kind}`)));
  const byName = new Map(c.metrics.map((m) => [m.metric, m]));
  const rows = orderMetrics([...byName.keys()]).map((name) => h('tr', { dataset: { metric: name } },
    h('td', null, name),
    byName.get(name).values.map((v, i) => numCell(v, metricFormatter(name), `${name}:${c.runs[i].run_id}`))));
  const metrics = h('div', { class: 'table-wrap' }, h('table', { id: 'compare-table' },
    h('thead', null, h('tr', null, h('th', null, 'metric'), head)), h('tbody', null, rows)));
  const diffs = c.param_diffs.length
    ? table(['request field', ...c.runs.map((r) => short(r.run_id))], c.param_diffs.map((d) =>
      h('tr', null, h('td', null, d.field), d.values.map((v) => h('td', null, v === null ? '—' : JSON.stringify(v))))),
    { id: 'diff-table' })
    : h('p', { class: 'muted' }, 'The requests are identical.');
  const chart = chartBox('compare');
  const legend = h('p', { class: 'note' }, c.runs.map((r) => h('span', { class: 'legend-item' }, label(r))));
  view.append(section('Equity', chart, legend), section('Parameters that differ', diffs),
    section('Metrics', metrics));
  const points = [];
  c.equity.ts_unix.forEach((t, i) => {
    for (const r of c.runs) {
      const v = c.equity.series[r.run_id][i];
      if (v !== null) points.push({ t: t * 1000, run: short(r.run_id), equity: v });
    }
  });
  await draw(chart, compareSpec(points, names));
}

export async function viewRun(view, runId, ctx) {
  const title = h('h1', null, `Run ${short(runId)}`);
  const head = h('div', { id: 'run-state' });
  const result = h('div', { id: 'run-result' });
  view.append(title, section(null, head), result);
  let shownReport = false;

  async function load() {
    const r = await api(`/runs/${seg(runId)}`, { params: { equity_points: 2, max_trades: 0 } });
    title.textContent = `${r.kind} ${short(r.run_id)}`;
    const active = ACTIVE.has(r.status);
    const cancel = active ? h('button', { class: 'danger', id: 'cancel-run', type: 'button', onclick: async () => {
      cancel.disabled = true;
      try { await api(`/runs/${seg(runId)}`, { method: 'DELETE' }); await load(); } catch (err) { head.append(errorBox(err)); }
    } }, r.cancel_requested ? 'Cancel requested…' : 'Cancel') : null;
    if (cancel && r.cancel_requested) cancel.disabled = true;
    clear(head, h('div', { class: 'tiles' },
      tile('Status', badge(r.status), r.error || (r.cancel_requested && active ? 'cancel requested' : ''), 'status'),
      tile('Series', [r.coin, r.interval].filter(Boolean).join(' ') || '—', r.strategy || ''),
      tile('Created (UTC)', utc(r.created_at_unix), r.finished_at_unix ? `finished ${utc(r.finished_at_unix)}` : '', null, null, 'small'),
      tile(active ? 'Running for' : 'Took', active && r.started_at_unix ? duration(Date.now() / 1000 - r.started_at_unix)
        : duration(r.duration_s), r.heartbeat_at_unix && active ? `heartbeat ${ago(Date.now() / 1000 - r.heartbeat_at_unix)}` : ''),
      tile('Worker', r.worker || '—', 'node / process', null, null, 'small')),
    h('div', { id: 'run-progress' }, h('h2', null, 'Progress'), r.progress ? progressBar(r.progress, true)
      : h('p', { class: 'muted progress', dataset: { done: -1, total: -1 } }, 'no progress recorded')),
    h('div', { class: 'row' }, cancel,
      h('a', { href: url(`/runs/${seg(runId)}`), target: '_blank', rel: 'noopener' }, 'JSON'),
      h('span', { class: 'muted' }, `id ${r.run_id} · code ${r.code_version} · seed ${r.seed ?? '—'}`)));
    if (r.status === 'succeeded' && !shownReport) {
      shownReport = true;
      const m = r.metrics || {};
      const shown = orderMetrics(Object.keys(m).filter((k) => finite(m[k]) && !k.endsWith('_ts'))).slice(0, 12);
      result.append(section('Metrics', h('div', { class: 'tiles', id: 'run-metrics' },
        shown.map((k) => tile(metricLabel(k), formatMetric(k, m[k]), '', k, m[k])))));
      if (WITH_REPORT.has(r.kind)) {
        const src = url(`/runs/${seg(runId)}/report`);
        const frame = h('iframe', { class: 'report', id: 'run-report', src, title: `report of run ${r.run_id}` });
        frame.addEventListener('load', () => {
          try { frame.style.height = `${frame.contentDocument.documentElement.scrollHeight + 20}px`; } catch (e) { /* ignore */ }
        });
        result.append(section('Report', h('div', { class: 'row' },
          h('a', { href: src, target: '_blank', rel: 'noopener' }, 'open in a new tab'),
          h('a', { href: url(`/runs/${seg(runId)}/report`, { download: 'true' }) }, 'download HTML')), frame));
      }
    }
    return active;
  }
  if (await load()) ctx.every(700, load);
}
