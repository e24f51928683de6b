// Launch a backtest or a stress simulation (queued on the warm workers: "mode": "async"),
// then follow it on its run page.

import { api, post, seg } from './api.js';
import { errorBox, h, section } from './dom.js';

const STRATEGIES = JSON.parse(document.getElementById('squall-strategies').textContent);

function field(label, input, hint) {
  return h('label', { title: hint || null }, label, input);
}

function numberInput(name, value, attrs = {}) {
  return h('input', { type: 'number', name, value, step: 'any', ...attrs });
}

// Coin, interval and strategy with its parameters (from the embedded catalogue).
function seriesFields(prefix, stored) {
  // the coin with the longest history first: the one most runs are about
  const most = new Map();
  for (const s of stored) most.set(s.coin, Math.max(most.get(s.coin) || 0, s.count));
  const coins = [...most.keys()].sort((a, b) => most.get(b) - most.get(a));
  const coin = h('select', { name: 'coin', id: `${prefix}-coin` }, coins.map((c) => h('option', { value: c }, c)));
  const interval = h('select', { name: 'interval', id: `${prefix}-interval` });
  const fill = () => {
    const ivs = stored.filter((s) => s.coin === coin.value).sort((a, b) => b.count - a.count).map((s) => s.interval);
    interval.replaceChildren(...ivs.map((iv) => h('option', { value: iv }, iv)));
  };
  coin.addEventListener('change', fill);
  fill();
  const strategy = h('select', { name: 'strategy', id: `${prefix}-strategy` },
    STRATEGIES.map((s) => h('option', { value: s.name, selected: s.name === 'ema_cross' }, s.name)));
  const params = h('div', { class: 'grid', id: `${prefix}-params` });
  const summary = h('p', { class: 'note' });
  const fillParams = () => {
    const s = STRATEGIES.find((x) => x.name === strategy.value);
    summary.textContent = s ? s.summary : '';
    params.replaceChildren(...(s ? s.params : []).map((p) => field(p.name,
      numberInput(`param:${p.name}`, p.default, { min: p.min, max: p.max, step: p.type === 'int' ? 1 : 'any' }),
      `${p.doc || ''} (${p.type} ${p.min}..${p.max})`)));
  };
  strategy.addEventListener('change', fillParams);
  fillParams();
  return h('div', null, h('div', { class: 'grid' }, field('coin', coin), field('interval', interval),
    field('strategy', strategy)), summary, h('fieldset', null, h('legend', null, 'parameters'), params));
}

function values(form) {
  const out = { params: {} };
  for (const el of form.querySelectorAll('input, select')) {
    if (!el.name || el.value === '') continue;
    const v = el.type === 'number' ? Number(el.value) : el.value;
    if (el.name.startsWith('param:')) out.params[el.name.slice(6)] = v;
    else out[el.name] = v;
  }
  return out;
}

function onSubmit(form, status, build) {
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    status.replaceChildren(h('span', { class: 'muted' }, 'Submitting…'));
    try {
      const [path, body] = build(values(form));
      const answer = await post(path, body);
      location.hash = `#/run/${seg(answer.run_id)}`;
    } catch (err) {
      status.replaceChildren(errorBox(err));
    } finally {
      button.disabled = false;
    }
  });
}

const isoDay = (d) => (d ? `${d}T00:00:00Z` : undefined);

export async function viewLaunch(view) {
  const coins = await api('/market/coins');
  const stored = coins.coins.flatMap((c) => c.series.map((s) => ({ coin: c.coin, interval: s.interval, count: s.count })));
  view.append(h('h1', null, 'Launch'));
  if (!stored.length) {
    view.append(section(null, h('p', null, 'No candles stored yet: import some first (`squall import FILE`).')));
    return;
  }
  const btStatus = h('div', { id: 'backtest-status' });
  const bt = h('form', { id: 'backtest-form' }, seriesFields('bt', stored),
    h('div', { class: 'grid' },
      field('start (UTC day)', h('input', { type: 'date', name: 'start' }), 'first bar; empty: the first stored'),
      field('end (UTC day)', h('input', { type: 'date', name: 'end' }), 'last bar; empty: the latest'),
      field('fee (bps per side)', numberInput('fee_bps', 10, { min: 0, max: 1000 })),
      field('slippage (bps)', numberInput('slippage_bps', 0, { min: 0, max: 1000 }))),
    h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Run backtest')), btStatus);
  onSubmit(bt, btStatus, (v) => ['/backtest/run', {
    coin: v.coin, interval: v.interval, strategy: v.strategy, params: v.params, start: isoDay(v.start),
    end: isoDay(v.end), fee_bps: v.fee_bps, slippage_bps: v.slippage_bps, mode: 'async',
  }]);

  const simStatus = h('div', { id: 'simulation-status' });
  const sim = h('form', { id: 'simulation-form' }, seriesFields('sim', stored),
    h('div', { class: 'grid' },
      field('paths', numberInput('paths', 100000, { min: 1, max: 10000000, step: 1 })),
      field('horizon (bars)', numberInput('horizon', 365, { min: 1, step: 1 })),
      field('seed', numberInput('seed', 7, { min: 0, step: 1 })),
      field('leverage', numberInput('leverage', 1, { min: 0.01, max: 125 })),
      field('generator', h('select', { name: 'generator' }, h('option', { value: 'bootstrap' }, 'block bootstrap'),
        h('option', { value: 'regime_switching' }, 'regime switching')))),
    h('p', { class: 'note' }, 'Paths are bootstrapped from the strategy\'s own returns on the stored candles.'),
    h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Run simulation')), simStatus);
  onSubmit(sim, simStatus, (v) => ['/risk/simulate', {
    backtest: { coin: v.coin, interval: v.interval, strategy: v.strategy, params: v.params },
    paths: v.paths, horizon: v.horizon, seed: v.seed, generator: v.generator,
    shocks: { leverage: v.leverage }, mode: 'async',
  }]);
  view.append(h('div', { class: 'forms' }, section('Backtest', bt), section('Stress simulation', sim)));
}
