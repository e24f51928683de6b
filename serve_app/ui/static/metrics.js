// How each metric of the engine, the walk-forward and the simulation is shown (the
// definitions are in docs/backtesting.md and docs/risk-simulation.md).

import { finite, int, num, pct, utc } from './dom.js';

const PCT = new Set(['total_return', 'cagr', 'annual_volatility', 'max_drawdown', 'current_drawdown',
  'exposure', 'time_under_water', 'avg_trade_return', 'win_rate', 'var_99', 'es_99', 'var_95', 'es_95',
  'max_drawdown_p50', 'max_drawdown_p95', 'ruin_probability', 'liquidation_probability',
  'terminal_return_mean']);
const INT = new Set(['bars', 'returns', 'trades', 'closed_trades', 'open_trades', 'max_drawdown_duration',
  'longest_drawdown', 'periods_per_year', 'paths', 'rows_written', 'folds', 'tasks']);
const FIRST = ['total_return', 'cagr', 'sharpe', 'sortino', 'calmar', 'max_drawdown', 'annual_volatility',
  'trades', 'win_rate', 'profit_factor', 'exposure', 'final_equity', 'var_99', 'es_99',
  'ruin_probability', 'liquidation_probability'];

export function formatMetric(key, value) {
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (value === null || value === undefined) return '—';
  if (!finite(value)) return String(value);
  if (key.endsWith('_ts')) return utc(value, false);
  if (PCT.has(key)) return pct(value);
  if (INT.has(key)) return int(value);
  return num(value, Math.abs(value) >= 1000 ? 2 : 4);
}

export const metricFormatter = (key) => (value) => formatMetric(key, value);

// Headline metrics first, then the rest alphabetically.
export function orderMetrics(keys) {
  const rank = (k) => (FIRST.includes(k) ? FIRST.indexOf(k) : FIRST.length);
  return [...keys].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

const LABELS = { var_99: 'VaR 99%', es_99: 'ES 99%', var_95: 'VaR 95%', es_95: 'ES 95%',
  max_drawdown_p50: 'max drawdown (median path)', max_drawdown_p95: 'max drawdown (5% worst paths)',
  cagr: 'CAGR', sharpe: 'Sharpe', sortino: 'Sortino', calmar: 'Calmar' };

export const metricLabel = (key) => LABELS[key] || key.replace(/_/g, ' ');
