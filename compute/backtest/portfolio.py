"""Portfolio backtests: several coins in one run, one ``lax.scan`` over the aligned bars.

**Alignment** (:func:`align`). The run's timeline is the union (default) or the intersection
of the coins' timestamps. No bar is invented: a coin without a bar at ``t`` has no open, no
close, no trade and no funding at ``t``; its units carry and it is marked at its last close
(so it earns nothing over the missing bar, and its price jump shows when its next bar comes).
Before a coin's first bar it cannot be held (target 0).

**Targets** ``(N, T)``: weights of equity decided at each close - from per-coin strategies
(:func:`strategy_targets`: each coin's strategy on its own bars; a coin's target carries over
its missing bars) or from a cross-sectional rule (:func:`momentum_targets`: rank by trailing
return over ``lookback`` bars, hold the top ``k`` equally weighted, optionally short the
bottom ``k``).

**Rebalancing** (:class:`Schedule`): the targets are read only at *decision bars* - every bar,
every ``n`` bars (bars ``0, n, 2n, ...``), or the last bar of each UTC week / month (the bar
whose successor opens in the next period: a calendar fact of the timestamps, never a price).
At a decision bar the targets of coins present at that bar are **normalised**: when the gross
weight ``sum |w|`` exceeds ``max_gross`` every weight is scaled by ``max_gross / gross``.

**Execution** at the next bar's open, as in :mod:`compute.backtest.engine`: at the open of
``t + 1`` with equity ``E_o`` (cash + units x open, absent coins at their last close), every
leg that trades (``resize=True``: every present leg; ``False``: only legs whose target changed
since the one in force) is set to exactly ``w_i`` of the equity left after this rebalance's
costs: ``N_i + d_i = w_i E'`` with ``E' = E_o - sum_j c_j |d_j|``, ``c_j`` = fee + slippage of
leg ``j``. With the signs ``s_i`` of the orders that is linear, ``E' = (E_o + sum s_i c_i N_i) /
(1 + sum s_i c_i w_i)``; the signs are taken at ``E_o`` and corrected once at ``E'`` (a sign can
only differ for an order smaller than the costs). One leg reduces to the single-coin engine's
``d = (w E_o - N) / (1 + w c sign(d))``. A leg absent at the execution bar does not trade and
keeps its units (with ``resize=False`` its changed target then trades at the next decision bar
where it is present). Funding ``f[i, t] x units x close`` is paid at each present close;
equity at or below 0 is ruin (everything 0 from then on).

**Outputs** (:class:`PortfolioResult`): equity, per-bar returns, drawdown, gross and net
exposure, turnover, per-asset pnl and **contribution** ``pnl_i(t) / E(t - 1)`` - units held
over the gap and the bar, minus the leg's costs and funding - whose sum over assets is the
portfolio's return of the bar exactly; the metrics of :mod:`compute.backtest.metrics`, and
regime stats. :mod:`compute.backtest.portfolio_reference` is the slow NumPy ledger the tests
hold this to (1e-12 on real daily data).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from compute.backtest.engine import BPS, MAX_COST_BPS, MAX_LEVERAGE, MIN_REGIME_BARS
from compute.backtest.metrics import Metric, annualised_sharpe, drawdown, return_metrics
from compute.backtest.portfolio_inputs import (
    Aligned,
    Schedule,
    align,
    decision_bars,
    momentum_targets,
    normalise,
    strategy_targets,
)
from compute.core.errors import InputDataError, SpecError
from compute.core.jaxconf import F64, jax, jnp, lax, require_x64
from compute.core.labels import TrendRegime, VolRegime

# --- configuration and kernel -----------------------------------------------------------------


@dataclass(frozen=True)
class PortfolioConfig:
    """Costs (per coin or shared), leverage cap and annualisation of a portfolio run.

    fee_bps / slippage_bps: per side on traded notional, one number or ``{coin: bps}``;
    max_gross: cap on ``sum |weight|`` (0 < cap <= 10); resize: every rebalance resets every
    present leg (True) or trades only legs whose target changed (False).
    """

    fee_bps: float | Mapping[str, float] = 0.0
    slippage_bps: float | Mapping[str, float] = 0.0
    max_gross: float = 1.0
    resize: bool = True
    periods_per_year: float = 365.0
    initial_capital: float = 1.0
    risk_free_rate: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.max_gross) and 0.0 < self.max_gross <= MAX_LEVERAGE):
            raise SpecError(f"max_gross must be in (0, {MAX_LEVERAGE:g}], got {self.max_gross!r}")
        for name in ("periods_per_year", "initial_capital"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
                raise SpecError(f"{name} must be > 0, got {value!r}")

    def rates(self, coins: Sequence[str]) -> np.ndarray:
        """``(N,)`` cost rate per leg: (fee + slippage) bps / 10,000."""
        out = np.zeros(len(coins))
        for name in ("fee_bps", "slippage_bps"):
            value = getattr(self, name)
            per = dict(value) if isinstance(value, Mapping) else dict.fromkeys(coins, value)
            unknown = sorted(set(per) - set(coins))
            if unknown:
                raise SpecError(f"{name}: unknown coin(s) {unknown}; coins are {list(coins)}")
            bps = np.array([float(per.get(c, 0.0)) for c in coins])
            if not (np.isfinite(bps).all() and (bps >= 0).all() and (bps <= MAX_COST_BPS).all()):
                raise SpecError(f"{name} must be in [0, {MAX_COST_BPS:g}] for every coin")
            out += bps * BPS
        return out


def _orders(e_open: jax.Array, held: jax.Array, w: jax.Array, trade: jax.Array,
            rate: jax.Array) -> jax.Array:  # fmt: skip
    """Order notionals ``d`` (N,) setting the traded legs to ``w`` of the post-cost equity
    ``E'`` (see the module docstring): signs at ``E_o``, corrected once at ``E'``."""

    def solve(sign: jax.Array) -> jax.Array:
        s = jnp.where(trade, sign, 0.0)
        return (e_open + jnp.sum(s * rate * held)) / (1.0 + jnp.sum(s * rate * w))

    e_net = solve(jnp.sign(w * solve(jnp.sign(w * e_open - held)) - held))
    return jnp.where(trade, w * e_net - held, 0.0)


def _step(resize: bool, carry: tuple, x: tuple) -> tuple[tuple, tuple]:
    cash, q, w_force = carry
    p_open, p_close, present, go, w, fund, rate = x
    held = q * p_open
    e_open = cash + jnp.sum(held)
    trade = go & present & (e_open > 0.0)
    if not resize:
        trade = trade & (w != w_force)
    d = _orders(e_open, held, w, trade, rate)
    cost = rate * jnp.abs(d)
    q_new = jnp.where(trade, (held + d) / jnp.where(trade, p_open, 1.0), q)
    w_force = jnp.where(trade, w, w_force)
    paid = jnp.where(present, fund * q_new * p_close, 0.0)
    cash = cash - jnp.sum(d) - jnp.sum(cost) - jnp.sum(paid)
    e_close = cash + jnp.sum(q_new * p_close)
    ruined = e_close <= 0.0
    cash = jnp.where(ruined, 0.0, cash)
    q_new = jnp.where(ruined, 0.0, q_new)
    e_close = jnp.where(ruined, 0.0, e_close)
    return (cash, q_new, w_force), (e_open, e_close, q_new, d, cost, paid)


@functools.partial(jax.jit, static_argnames=("resize",))
def simulate(
    p_open: jax.Array, p_close: jax.Array, present: jax.Array, go: jax.Array,
    weights: jax.Array, funding: jax.Array, rate: jax.Array, capital: jax.Array, *,
    resize: bool,
) -> tuple[jax.Array, ...]:  # fmt: skip
    """The accounting over ``(T, N)`` time-major inputs: marks at the open and close (a coin
    without a bar at its last close, 0 before its first), presence, ``go[t]`` (orders execute
    at the open of ``t``, to ``weights[t]``), funding rates; ``rate`` (N,) per-leg cost rate.
    Returns equity at open and close ``(T,)`` and units, orders, costs, funding ``(T, N)``."""
    n = p_open.shape[1]
    init = (jnp.asarray(capital, F64), jnp.zeros(n, F64), jnp.zeros(n, F64))
    rates = jnp.broadcast_to(rate, p_open.shape)
    xs = (p_open, p_close, present, go, weights, funding, rates)
    _, out = lax.scan(functools.partial(_step, resize), init, xs)
    return out


# --- the run ----------------------------------------------------------------------------------


@dataclass
class PortfolioResult:
    """One portfolio run.

    metrics: return metrics of the equity curve plus turnover, exposure, costs, funding.
    equity: ``ts``, ``equity`` (at each close), ``returns`` (0 on bar 0), ``drawdown``,
        ``gross`` / ``net`` exposure (position value / equity at the close), ``turnover``
        (traded notional / equity at the open), ``rebalance`` (orders executed at the open).
    assets: one dict per coin: pnl, contribution (sum of its per-bar contributions), costs,
        funding, turnover, average gross weight, bars held.
    contributions: ``(N, T)`` per-bar contribution to the portfolio return (sums over coins to
        ``equity["returns"]``); weights: ``(N, T)`` position value / equity at each close.
    """

    metrics: dict[str, Metric]
    equity: dict[str, np.ndarray]
    assets: list[dict[str, Any]]
    contributions: np.ndarray
    weights: np.ndarray
    regime_stats: list[dict[str, Any]] = field(default_factory=list)
    bars: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def marks(aligned: Aligned) -> tuple[np.ndarray, np.ndarray]:
    """``(N, T)`` prices the ledger uses at each open and close: the bar's own where the coin
    has a bar, else its last close (0 before its first bar: nothing can be held there)."""
    before = np.concatenate([np.full((aligned.mark.shape[0], 1), np.nan), aligned.mark[:, :-1]],
                            axis=1)  # fmt: skip
    carried = np.where(np.isnan(before), 0.0, before)
    p_open = np.where(aligned.present, aligned.open, carried)
    p_close = np.where(aligned.present, aligned.close, carried)
    return p_open, p_close


def run_portfolio(
    aligned: Aligned,
    targets: npt.ArrayLike,
    schedule: Schedule,
    config: PortfolioConfig,
    *,
    funding_rate: npt.ArrayLike | None = None,
    regimes: Mapping[str, npt.ArrayLike] | None = None,
    window: tuple[int, int] | None = None,
) -> PortfolioResult:
    """Backtest ``targets`` (``(N, T)`` weights decided at each close) on ``aligned`` coins.

    ``funding_rate`` ``(N, T)`` fractions per bar (on the bars where funding settles);
    ``regimes`` ``{"vol", "trend"}`` label arrays ``(T,)`` for the regime stats (default: none
    computed - pass a benchmark coin's labels). ``window = (lo, hi)`` backtests bars
    ``[lo, hi)`` only, flat with fresh capital, with the targets computed on all bars (for
    walk-forward folds: the signals keep their history as warm-up).
    """
    require_x64()
    if not isinstance(config, PortfolioConfig) or not isinstance(schedule, Schedule):
        raise SpecError("config must be a PortfolioConfig and schedule a Schedule")
    n, length = aligned.present.shape
    w = np.asarray(targets, dtype=np.float64)
    if w.shape != (n, length):
        raise InputDataError(f"targets: expected shape ({n}, {length}), got {w.shape}")
    bad = ~np.isfinite(w) | (np.abs(w) > MAX_LEVERAGE)
    if bad.any():
        i, t = np.argwhere(bad)[0]
        raise InputDataError(f"targets: {w[i, t]!r} for {aligned.coins[i]} at bar {t} is not a "
                             f"finite weight in [-{MAX_LEVERAGE:g}, {MAX_LEVERAGE:g}]")  # fmt: skip
    fund = np.zeros((n, length))
    if funding_rate is not None:
        fund = np.where(aligned.present, np.asarray(funding_rate, dtype=np.float64), 0.0)
        if fund.shape != (n, length) or not np.isfinite(fund).all() or (np.abs(fund) > 0.1).any():
            raise InputDataError("funding_rate: (N, T) finite fractions per bar, |rate| <= 10%")
    lo, hi = window if window is not None else (0, length)
    if not 0 <= lo < hi - 1 < length:
        raise SpecError(f"window must satisfy 0 <= lo < hi - 1 < {length}, got {window!r}")
    decided = normalise(w, config.max_gross)
    decide = decision_bars(aligned.ts, schedule)
    p_open, p_close = marks(aligned)
    go = np.concatenate([[False], decide[:-1]])
    w_exec = np.concatenate([np.zeros((n, 1)), decided[:, :-1]], axis=1)
    go[lo] = False  # the window starts flat: nothing was decided before it
    sl = slice(lo, hi)
    rate = config.rates(aligned.coins)
    out = simulate(
        p_open[:, sl].T, p_close[:, sl].T, aligned.present[:, sl].T, go[sl], w_exec[:, sl].T,
        fund[:, sl].T, rate, config.initial_capital, resize=bool(config.resize),
    )  # fmt: skip
    e_open, e_close, units, orders, costs, paid = (np.asarray(a) for a in out)
    bars = {
        "ts": aligned.ts[sl], "p_open": p_open[:, sl], "p_close": p_close[:, sl],
        "present": aligned.present[:, sl], "go": go[sl], "target": w_exec[:, sl],
        "equity_open": e_open, "equity": e_close, "units": units.T, "orders": orders.T,
        "costs": costs.T, "funding": paid.T,
    }  # fmt: skip
    return _result(aligned, bars, config, regimes, sl)


def _result(
    aligned: Aligned,
    bars: dict[str, np.ndarray],
    config: PortfolioConfig,
    regimes: Mapping[str, npt.ArrayLike] | None,
    sl: slice,
) -> PortfolioResult:
    eq, e_open, units = bars["equity"], bars["equity_open"], bars["units"]
    p_open, p_close = bars["p_open"], bars["p_close"]
    prev_units = np.concatenate([np.zeros((units.shape[0], 1)), units[:, :-1]], axis=1)
    prev_close = np.concatenate([p_close[:, :1], p_close[:, :-1]], axis=1)
    pnl = (prev_units * (p_open - prev_close) + units * (p_close - p_open)
           - bars["costs"] - bars["funding"])  # fmt: skip
    pnl[:, 0] = 0.0
    prev_eq = np.concatenate([[config.initial_capital], eq[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        contrib = np.where(prev_eq > 0.0, pnl / np.where(prev_eq > 0, prev_eq, 1.0), 0.0)
        value = units * p_close
        weights = np.where(eq > 0.0, value / np.where(eq > 0, eq, 1.0), 0.0)
        turn = np.where(e_open > 0.0, np.abs(bars["orders"]) / np.where(e_open > 0, e_open,
                                                                        1.0), 0.0)  # fmt: skip
    returns = np.concatenate([[0.0], np.where(prev_eq[1:] > 0, eq[1:] / np.where(
        prev_eq[1:] > 0, prev_eq[1:], 1.0) - 1.0, 0.0)])  # fmt: skip
    gross, net = np.abs(weights).sum(axis=0), weights.sum(axis=0)
    traded = (bars["orders"] != 0.0).any(axis=0)
    ts = bars["ts"]
    r = returns[1:]
    ppy = config.periods_per_year
    metrics: dict[str, Metric] = {"bars": int(eq.shape[0]), "coins": len(aligned.coins)}
    metrics.update(return_metrics(r, ppy, config.risk_free_rate))
    for key in ("max_drawdown_peak", "max_drawdown_trough", "max_drawdown_recovery"):
        idx = metrics.pop(key)
        metrics[f"{key}_ts"] = int(ts[int(idx)]) if idx is not None else None
    held = (units[:, 1:] != 0.0).any(axis=0)
    count = max(r.shape[0], 1)
    metrics.update(
        exposure=float(held.mean()) if held.size else 0.0,
        gross_exposure_avg=float(gross[1:].mean()) if gross.size > 1 else 0.0,
        net_exposure_avg=float(net[1:].mean()) if net.size > 1 else 0.0,
        gross_exposure_max=float(gross.max()),
        turnover=float(turn.sum()),
        turnover_annual=float(turn.sum()) * ppy / count,
        rebalances=int(traded.sum()),
        costs_paid=float(bars["costs"].sum()),
        funding_paid=float(bars["funding"].sum()),
        initial_capital=config.initial_capital,
        final_equity=float(eq[-1]),
        ruined=bool((eq <= 0.0).any()),
        periods_per_year=ppy,
        start_ts=int(ts[0]),
        end_ts=int(ts[-1]),
    )
    assets = [
        {
            "coin": coin,
            "pnl": float(pnl[i].sum()),
            "contribution": float(contrib[i].sum()),
            "costs": float(bars["costs"][i].sum()),
            "funding": float(bars["funding"][i].sum()),
            "turnover": float(turn[i].sum()),
            "avg_weight": float(weights[i, 1:].mean()),  # a window has >= 2 bars
            "avg_gross_weight": float(np.abs(weights[i, 1:]).mean()),
            "bars_held": int((units[i, 1:] != 0.0).sum()),
            "bars_present": int(bars["present"][i].sum()),
        }
        for i, coin in enumerate(aligned.coins)
    ]
    equity = {"ts": ts, "equity": eq, "returns": returns, "drawdown": drawdown(eq), "gross": gross,
              "net": net, "turnover": turn.sum(axis=0), "rebalance": traded}  # fmt: skip
    stats = _regime_stats(regimes, sl, returns, eq, held, traded, ppy) if regimes else []
    return PortfolioResult(metrics, equity, assets, contrib, weights, stats, bars)


def _regime_stats(
    regimes: Mapping[str, npt.ArrayLike],
    sl: slice,
    returns: np.ndarray,
    eq: np.ndarray,
    held: np.ndarray,
    traded: np.ndarray,
    ppy: float,
) -> list[dict[str, Any]]:
    """Per regime kind and code: the returns of bars 1.. grouped by the label of the bar before
    (known when the positions held in the bar were decided); each kind sums to the totals."""
    unknown = set(regimes) - {"vol", "trend"}
    if unknown:
        raise InputDataError(f"regimes: unknown kinds {sorted(unknown)}; use 'vol' and 'trend'")
    r = returns[1:]
    pnl = np.diff(eq)
    with np.errstate(divide="ignore"):
        logr = np.log1p(r)
    out: list[dict[str, Any]] = []
    for kind, enum in (("vol", VolRegime), ("trend", TrendRegime)):
        if kind not in regimes:
            continue
        labels = np.asarray(regimes[kind])[sl]
        if labels.shape != eq.shape:
            raise InputDataError(f"regimes[{kind!r}]: expected {eq.shape[0]} labels of the bars")
        lab = labels[:-1]
        for member in enum:
            sel = lab == int(member)
            active = sel & held
            log_ret = float(logr[sel].sum())
            out.append({
                "kind": kind, "regime": member.name, "code": int(member),
                "bars": int(sel.sum()), "bars_in_market": int(active.sum()),
                "rebalances": int((traded[1:] & sel).sum()), "pnl": float(pnl[sel].sum()),
                "log_return": log_ret, "return": float(np.expm1(log_ret)),
                "sharpe": annualised_sharpe(r[sel], ppy),
                "hit_rate": float((r[active] > 0.0).mean()) if active.any() else None,
                "sufficient": int(sel.sum()) >= MIN_REGIME_BARS,
            })  # fmt: skip
    return out


__all__ = [
    "Aligned",
    "PortfolioConfig",
    "PortfolioResult",
    "Schedule",
    "align",
    "decision_bars",
    "marks",
    "momentum_targets",
    "normalise",
    "run_portfolio",
    "strategy_targets",
]
