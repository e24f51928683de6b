// The dashboard's router: #/data, #/ingestion, #/runs?..., #/compare?ids=..., #/launch,
// #/run/{id}. Each view renders into <main>; <html data-view data-ready> say what is shown
// and when it finished loading (tests and screenshots wait on it).

import { api, apiToken, setApiToken } from './api.js';
import { clear, errorBox, h } from './dom.js';
import { viewData, viewIngestion } from './views-data.js';
import { viewLaunch } from './views-launch.js';
import { viewCompare, viewRun, viewRuns } from './views-runs.js';

const root = document.documentElement;
const tokenField = document.getElementById('api-token');
if (tokenField) {
  tokenField.value = apiToken();
  tokenField.addEventListener('change', () => { setApiToken(tokenField.value.trim()); });
}
const main = document.getElementById('view');
let current = null;

// A view's context: timers that stop when the user navigates away.
class Context {
  constructor() { this.gone = false; this.timers = []; }
  every(ms, fn) {
    const tick = async () => {
      if (this.gone) return;
      let again = true;
      try { again = await fn(); } catch (err) { main.append(errorBox(err)); again = false; }
      if (again && !this.gone) this.timers.push(setTimeout(tick, ms));
    };
    this.timers.push(setTimeout(tick, ms));
  }
  close() { this.gone = true; this.timers.forEach(clearTimeout); }
}

const ROUTES = {
  data: (view) => viewData(view),
  ingestion: (view) => viewIngestion(view),
  runs: (view, arg, query, ctx) => viewRuns(view, query, ctx),
  compare: (view, arg, query) => viewCompare(view, query),
  launch: (view) => viewLaunch(view),
  run: (view, arg, query, ctx) => viewRun(view, arg, ctx),
};

async function route() {
  const hash = location.hash.replace(/^#\/?/, '') || 'data';
  const [path, qs] = hash.split('?');
  const [name, ...rest] = path.split('/');
  const arg = rest.length ? decodeURIComponent(rest.join('/')) : null;
  const query = new URLSearchParams(qs || '');
  if (current) current.close();
  const ctx = new Context();
  current = ctx;
  root.dataset.ready = 'false';
  root.dataset.view = name;
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === name || (name === 'run' && a.dataset.nav === 'runs'));
  }
  const view = h('div', { dataset: { view: name } });
  clear(main, view);
  const render = ROUTES[name];
  try {
    if (!render) throw new Error(`no page ${name}; pick one in the bar above`);
    await render(view, arg, query, ctx);
  } catch (err) {
    view.append(errorBox(err));
    root.dataset.error = err.message || String(err);
  }
  if (current === ctx) root.dataset.ready = 'true';
}

async function pill() {
  const el = document.getElementById('health-pill');
  try {
    const health = await api('/health');
    el.textContent = health.status;
    el.className = `status ${health.status}`;
    el.title = `database ${health.database.backend}, ${health.time}`;
  } catch (err) {
    el.textContent = 'unreachable';
    el.className = 'status down';
  }
}

window.addEventListener('hashchange', route);
pill();
setInterval(pill, 15000);
route();
