// The stored series (coverage, gaps, freshness) and the ingestion jobs' health.

import { api } from './api.js';
import { chartBox, coverageSpec, draw } from './charts.js';
import { ago, badge, finite, h, int, num, numCell, section, table, tile, utc } from './dom.js';

const key = (coin, interval) => `${coin} ${interval}`;

export async function viewData(view) {
  const [coins, gaps, health] = await Promise.all([
    api('/market/coins'), api('/market/gaps'), api('/health'),
  ]);
  const fresh = new Map((health.series || []).map((s) => [key(s.coin, s.interval), s]));
  const gapOf = new Map(gaps.reports.map((r) => [key(r.coin, r.interval), r]));
  const stored = coins.coins.flatMap((c) => c.series.map((s) => ({ coin: c.coin, ...s })));
  const seen = new Set(stored.map((s) => key(s.coin, s.interval)));
  const empty = (health.series || []).filter((s) => !seen.has(key(s.coin, s.interval)));
  const missing = gaps.reports.reduce((n, r) => n + r.missing, 0);
  const stale = (health.series || []).filter((s) => s.stale).length;
  const db = health.database;

  const rows = stored.map((s) => {
    const k = key(s.coin, s.interval);
    const g = gapOf.get(k);
    const f = fresh.get(k);
    return h('tr', { dataset: { series: k } },
      h('td', null, h('b', null, s.coin), ' ', s.interval),
      h('td', null, s.source || '—'),
      h('td', null, utc(s.first_ts_unix)),
      h('td', null, utc(s.last_ts_unix)),
      numCell(s.count, int, 'count'),
      numCell(g ? g.missing : 0, int, 'missing'),
      numCell(g ? g.gaps.length : 0, int, 'gaps'),
      h('td', null, f ? [badge(f.stale ? 'stale' : 'fresh'), ' ', `last bar closed ${ago(f.age_s)}`]
        : h('span', { class: 'muted' }, 'not tracked (not a configured series)')),
      numCell(s.foreign_rows, int, 'foreign_rows'));
  });
  for (const s of empty) {
    rows.push(h('tr', { dataset: { series: key(s.coin, s.interval) } },
      h('td', null, h('b', null, s.coin), ' ', s.interval), h('td', null, '—'),
      h('td', { colspan: 5, class: 'muted' }, 'no candles stored yet'),
      h('td', null, badge('stale'), ' no data'), h('td', null, '')));
  }

  const chart = chartBox('coverage');
  const allGaps = gaps.reports.flatMap((r) => r.gaps.map((g) => ({ series: key(r.coin, r.interval), ...g })));
  allGaps.sort((a, b) => b.missing - a.missing);
  view.append(
    h('h1', null, 'Stored series'),
    section(null, h('div', { class: 'tiles' },
      tile('Series stored', int(stored.length), `${coins.intervals.join(', ')} configured`, 'series', stored.length),
      tile('Candles', int(stored.reduce((n, s) => n + s.count, 0)), 'across every series'),
      tile('Missing bars', int(missing), `in ${int(allGaps.length)} gaps (exchange outages stay gaps)`, 'missing', missing),
      tile('Stale series', int(stale), `of ${int((health.series || []).length)} configured`, 'stale', stale),
      tile('Database', db.ok ? `${db.backend}` : 'down',
        db.ok ? `${num(db.latency_ms, 1)} ms · revision ${db.revision && db.revision.up_to_date ? 'at head' : 'behind'}`
          : db.error || ''))),
    section('Coverage', chart,
      h('p', { class: 'note' }, 'Each bar spans a series\' first to last stored candle; red ticks are gaps.')),
    section('Series', table(['series', 'source', 'first bar (UTC)', 'last bar (UTC)', ['candles', true],
      ['missing', true], ['gaps', true], 'freshness', ['foreign rows', true]], rows, { id: 'series-table' })),
    section(`Largest gaps (${int(allGaps.length)})`, allGaps.length
      ? table(['series', 'from (UTC)', 'to (UTC)', ['missing bars', true]], allGaps.slice(0, 20).map((g) =>
        h('tr', null, h('td', null, g.series), h('td', null, utc(g.start_unix)), h('td', null, utc(g.end_unix)),
          numCell(g.missing, int))), { id: 'gaps-table' })
      : h('p', { class: 'muted' }, 'No gaps: every stored series is complete between its first and last bar.')),
  );
  const series = stored.map((s) => ({ series: key(s.coin, s.interval), start: s.first_ts_unix * 1000,
    end: s.last_ts_unix * 1000, count: s.count }));
  const marks = allGaps.map((g) => ({ series: g.series, start: g.start_unix * 1000, missing: g.missing }));
  if (series.length) await draw(chart, coverageSpec(series, marks));
  else chart.append(h('p', { class: 'muted' }, 'Nothing stored yet: `squall import FILE` or `squall download`.'));
}

export async function viewIngestion(view) {
  const health = await api('/health');
  const ing = health.ingestion;
  const ray = health.ray;
  view.append(h('h1', null, 'Ingestion'));
  const cpus = ray ? tile('Ray CPUs free', `${num(ray.available_resources.CPU || 0, 1)} / ${num(ray.cluster_resources.CPU || 0, 1)}`,
    'available / in the cluster') : tile('Ray', 'none', 'this API process runs outside a Ray runtime');
  if (!ing) {
    view.append(section(null, h('div', { class: 'tiles' },
      tile('Supervisor', 'not running', 'SQUALL_INGEST_ENABLED=false, or the API runs outside Ray'),
      cpus),
    h('p', { class: 'note' }, 'Nothing keeps the series fresh: imported and downloaded history stays as stored.')));
    return;
  }
  const now = health.time_unix;
  view.append(section(null, h('div', { class: 'tiles' },
    tile('Supervisor', ing.running ? 'running' : 'stopped', ing.reason || `role ${ing.role || '—'}`, 'running'),
    tile('Data source', ing.data_source || '—', ing.lock ? `one writer: ${String(ing.lock).replace(/ \/\S*/g, '')}` : ''),
    tile('Jobs', int(ing.jobs.length), 'one per coin × interval, plus derivatives'),
    tile('Stalled', int(ing.stalled.length), ing.stalled.join(', ') || 'none', 'stalled', ing.stalled.length),
    cpus)));
  const rows = ing.jobs.map((j) => h('tr', { dataset: { job: j.job } },
    h('td', null, j.job),
    h('td', null, j.stalled ? badge('stalled') : j.consecutive_failures ? badge('failing', 'failed') : badge('ok')),
    h('td', null, j.last_success_ts ? ago(now - j.last_success_ts) : 'never'),
    numCell(j.runs, int), numCell(j.consecutive_failures, int),
    numCell(j.written_total, int), numCell(j.written_last_run, int),
    h('td', null, ago(j.age_s)),
    h('td', { class: 'wrap' }, j.last_error ? `${j.last_error} (${ago(now - j.last_error_ts)})` : '—')));
  view.append(section('Jobs', table(['job', 'state', 'last success', ['runs', true], ['failures', true],
    ['rows written', true], ['last run', true], 'newest bar', 'last error'], rows, { id: 'jobs-table' })));
  if (ing.gap_checks && ing.gap_checks.length) {
    const checks = ing.gap_checks.slice(-12).reverse().map((g) => h('tr', null,
      h('td', null, g.job || `${g.coin} ${g.interval}`), h('td', null, finite(g.at) ? ago(now - g.at) : '—'),
      numCell(g.gaps_found, int), numCell(g.gaps_fixed, int), numCell(g.candles_added, int),
      numCell(g.known_gaps_skipped, int), numCell(g.remaining, int)));
    view.append(section('Recent gap checks', table(['job', 'when', ['gaps found', true], ['fixed', true],
      ['candles added', true], ['known outages skipped', true], ['still missing', true]], checks,
    { id: 'gap-checks' })));
  }
}
