// The API of this server, from the page: same origin only (the root comes from the page,
// for a server behind a path prefix). Errors carry the API's code and message.

export const ROOT = document.documentElement.dataset.root || '';

export class ApiError extends Error {
  constructor(status, body, text) {
    const message = body && body.message ? body.message : `HTTP ${status}: ${(text || '').slice(0, 300)}`;
    super(message);
    this.status = status;
    this.code = body && body.error ? body.error : `http_${status}`;
    this.body = body;
  }
}

export function url(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
  }
  const qs = q.toString();
  return ROOT + path + (qs ? `?${qs}` : '');
}

// The API token a person pasted (only needed when the server sets SQUALL_API_TOKEN): kept
// for this tab only, in sessionStorage, and sent on every call.
const TOKEN_KEY = 'squall.apiToken';

export function apiToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
}

export function setApiToken(value) {
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
  } catch (e) { /* storage off: the token lives until the page closes */ }
}

export async function api(path, { method = 'GET', params, body } = {}) {
  const init = { method, headers: { Accept: 'application/json' } };
  const token = apiToken();
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url(path, params), init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!res.ok) throw new ApiError(res.status, data, text);
  return data;
}

export async function post(path, body) {
  return api(path, { method: 'POST', body });
}

// Path segment of an id, escaped.
export const seg = (id) => encodeURIComponent(String(id));
