// DOM building and number formatting. Every value is inserted as text (never as HTML), so
// nothing the API returns can become markup or script.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') {
      for (const [k, v] of Object.entries(value)) if (v !== null && v !== undefined) el.dataset[k] = String(v);
    } else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'href' || key === 'src') {
      el.setAttribute(key, safeUrl(String(value)));
    } else if (key === 'value') {
      el.value = String(value);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Only links within this origin: a hash route, or a path of this server.
export function safeUrl(url) {
  if (url.startsWith('#') || (url.startsWith('/') && !url.startsWith('//'))) return url;
  return '#';
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const MINUS = '\u2212';
export const finite = (v) => typeof v === 'number' && Number.isFinite(v);
const minus = (text) => text.replace(/-/g, MINUS);

export function pct(v, digits = 2) {
  return finite(v) ? minus((v * 100).toFixed(digits) + '%') : '—';
}

export function num(v, digits = 2) {
  if (!finite(v)) return '—';
  return minus(v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }));
}

export function int(v) {
  return finite(v) ? minus(Math.round(v).toLocaleString('en-US')) : '—';
}

export function utc(unix, time = true) {
  if (!finite(unix)) return '—';
  const iso = new Date(unix * 1000).toISOString();
  return time ? iso.slice(0, 10) + ' ' + iso.slice(11, 16) : iso.slice(0, 10);
}

export function ago(seconds) {
  if (!finite(seconds)) return '—';
  const s = Math.abs(seconds);
  const text = s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min`
    : s < 172800 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86400)} d`;
  return seconds < 0 ? `in ${text}` : `${text} ago`;
}

export function duration(seconds) {
  if (!finite(seconds)) return '—';
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : seconds < 120 ? `${seconds.toFixed(1)} s`
    : `${(seconds / 60).toFixed(1)} min`;
}

// A numeric table cell: the formatted text, the exact value in data-value, red when negative.
export function numCell(value, fmt = num, key = null) {
  const cls = ['num'];
  if (finite(value) && value < 0) cls.push('neg');
  return h('td', { class: cls.join(' '), dataset: { value: finite(value) ? String(value) : null, key } },
    fmt(value));
}

export function tile(label, value, hint = '', key = null, exact = null, size = '') {
  return h('div', { class: 'tile' },
    h('div', { class: 'label' }, label),
    h('div', { class: `value ${size}`.trim(), dataset: { key, value: finite(exact) ? String(exact) : null } }, value),
    hint ? h('div', { class: 'hint' }, hint) : null);
}

export function table(columns, rows, attrs = {}) {
  const head = h('tr', null, columns.map((c) => {
    const [name, numeric, cls] = Array.isArray(c) ? c : [c, false, ''];
    return h('th', { class: [numeric ? 'num' : '', cls || ''].join(' ').trim() || null }, name);
  }));
  return h('div', { class: 'table-wrap' }, h('table', attrs, h('thead', null, head), h('tbody', null, rows)));
}

export function badge(text, kind = text) {
  return h('span', { class: `badge ${kind}` }, text);
}

// A progress bar of done / total (indeterminate when the total is unknown).
export function progressBar(p, big = false) {
  const done = p && finite(p.done) ? p.done : 0;
  const total = p && finite(p.total) && p.total > 0 ? p.total : null;
  const frac = total ? Math.min(1, done / total) : 0;
  const fill = h('span');
  fill.style.width = `${(frac * 100).toFixed(1)}%`;
  const label = total ? `${int(done)} / ${int(total)} ${p.unit || ''} (${(frac * 100).toFixed(0)}%)`
    : `${int(done)} ${(p && p.unit) || ''}`;
  return h('span', { class: 'progress', dataset: { done, total, unit: p && p.unit } },
    h('span', { class: big ? 'bar big' : 'bar' }, fill), h('span', { class: 'progress-label' }, label));
}

export function errorBox(err) {
  const text = err && err.message ? err.message : String(err);
  return h('div', { class: 'error', role: 'alert', dataset: { code: err && err.code } }, text);
}

export function section(title, ...children) {
  return h('section', { class: 'card' }, title ? h('h2', null, title) : null, children);
}
