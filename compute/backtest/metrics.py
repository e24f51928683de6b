"""Performance metrics of a per-bar return series, as defined in ``DESIGN.md`` (vectorised NumPy).

Conventions (the ones users check against; ``docs/backtesting.md`` has the formulas):

* ``r`` holds one simple return per bar; the equity curve is anchored at the starting capital
  *before* the first return (``E_0 = 1``, ``E_t = prod(1 + r_1..r_t)``), so a loss on the first
  bar is a drawdown;
* annualisation uses ``periods_per_year`` (365-day year: daily 365, hourly 8,760, 1-minute
  525,600), a parameter;
* Sharpe = mean of per-bar excess returns / their sample std (ddof=1) x sqrt(ppy); the per-bar
  risk-free rate is ``risk_free_rate / ppy`` (0 by default);
* Sortino = mean excess / sqrt(mean over **all** bars of min(excess, 0)^2) x sqrt(ppy);
* CAGR = (prod(1 + r))^(ppy / n) - 1; Calmar = CAGR / |max drawdown|;
* max drawdown is a negative fraction; its duration runs from the peak to the bar where equity
  first regains the peak, or to the last bar when it never does (then it is flagged *open*).

A value that is undefined (fewer than two returns, zero variance, no downside, no drawdown)
is ``None``, never ``inf`` or NaN, so every dict serialises to JSON as is. The slow loop-based
definitions live in :mod:`compute.backtest.metrics_reference`; the tests hold the two equal.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

Metric = float | int | None


def _num(value: float) -> float | None:
    """``value`` as a float, or None when it is not finite."""
    v = float(value)
    return v if math.isfinite(v) else None


def equity_from_returns(returns: npt.ArrayLike, start: float = 1.0) -> np.ndarray:
    """Equity ``(n + 1,)`` anchored at ``start`` before the first return."""
    r = np.asarray(returns, dtype=np.float64)
    return start * np.concatenate([[1.0], np.cumprod(1.0 + r)])


def returns_from_equity(equity: npt.ArrayLike) -> np.ndarray:
    """Simple returns ``E_t / E_{t-1} - 1`` (``(n,)`` from ``(n + 1,)``); 0 after a wipe-out
    (equity already at 0 stays at 0 and earns nothing)."""
    e = np.asarray(equity, dtype=np.float64)
    prev = e[:-1]
    safe = np.where(prev > 0.0, prev, 1.0)
    return np.where(prev > 0.0, e[1:] / safe - 1.0, 0.0)


def drawdown(equity: npt.ArrayLike) -> np.ndarray:
    """``E_t / max(E_0..E_t) - 1`` (<= 0); 0 where the running peak is 0."""
    e = np.asarray(equity, dtype=np.float64)
    peak = np.maximum.accumulate(e)
    safe = np.where(peak > 0.0, peak, 1.0)
    return np.where(peak > 0.0, e / safe - 1.0, 0.0)


def drawdown_stats(equity: npt.ArrayLike) -> dict[str, Metric]:
    """Max drawdown, its peak/trough/recovery indices and duration, time under water.

    Indices refer to ``equity`` (index 0 is the starting capital). ``max_drawdown_duration``
    is ``recovery - peak`` bars, or ``last - peak`` when the drawdown is still open at the end.
    ``longest_drawdown`` is the longest peak-to-recovery (or peak-to-end) stretch of any
    drawdown. ``time_under_water`` is the share of bars 1..n that close below the running peak.
    """
    e = np.asarray(equity, dtype=np.float64)
    n = e.shape[0] - 1
    dd = drawdown(e)
    under = dd < 0.0
    out: dict[str, Metric] = {
        "max_drawdown": float(dd.min()) if n >= 0 and dd.size else 0.0,
        "max_drawdown_peak": None,
        "max_drawdown_trough": None,
        "max_drawdown_recovery": None,
        "max_drawdown_duration": 0,
        "max_drawdown_open": False,
        "current_drawdown": float(dd[-1]) if dd.size else 0.0,
        "drawdown_open": bool(under[-1]) if dd.size else False,
        "longest_drawdown": 0,
        "time_under_water": float(under[1:].mean()) if n > 0 else 0.0,
    }
    if not under.any():
        return out
    trough = int(np.argmin(dd))
    # the peak of that drawdown: last bar at or before the trough that is not under water
    peak = int(np.flatnonzero(~under[: trough + 1])[-1])
    after = np.flatnonzero(~under[trough:])
    recovery = trough + int(after[0]) if after.size else None
    out.update(
        max_drawdown_peak=peak,
        max_drawdown_trough=trough,
        max_drawdown_recovery=recovery,
        max_drawdown_duration=(recovery if recovery is not None else n) - peak,
        max_drawdown_open=recovery is None,
    )
    # stretches under water: [start, end) runs of `under`; each spans from the bar before
    # (its peak) to the first bar back above water (or the last bar when still open)
    edges = np.diff(np.concatenate([[0], under.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = np.minimum(ends, n) - (starts - 1)
    out["longest_drawdown"] = int(lengths.max())
    return out


def return_metrics(
    returns: npt.ArrayLike, periods_per_year: float, risk_free_rate: float = 0.0
) -> dict[str, Metric]:
    """Total return, CAGR, annualised volatility, Sharpe, Sortino, Calmar and the drawdown
    statistics of :func:`drawdown_stats` for one return series."""
    r = np.asarray(returns, dtype=np.float64)
    n = int(r.shape[0])
    ppy = float(periods_per_year)
    growth = float(np.prod(1.0 + r)) if n else 1.0
    out: dict[str, Metric] = {"returns": n, "total_return": growth - 1.0}
    out["cagr"] = _num(growth ** (ppy / n) - 1.0) if n and growth > 0.0 else (-1.0 if n else None)
    excess = r - risk_free_rate / ppy
    if n >= 2:
        std = float(np.std(r, ddof=1))
        out["annual_volatility"] = std * math.sqrt(ppy)
        ex_std = float(np.std(excess, ddof=1))
        out["sharpe"] = (
            _num(float(np.mean(excess)) / ex_std * math.sqrt(ppy)) if ex_std > 0.0 else None
        )
    else:
        out["annual_volatility"] = None
        out["sharpe"] = None
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2))) if n else 0.0
    out["sortino"] = (
        _num(float(np.mean(excess)) / downside * math.sqrt(ppy)) if downside > 0.0 else None
    )
    dd = drawdown_stats(equity_from_returns(r))
    out.update(dd)
    mdd = float(dd["max_drawdown"] or 0.0)
    cagr = out["cagr"]
    out["calmar"] = _num(float(cagr) / abs(mdd)) if mdd < 0.0 and cagr is not None else None
    return out


def objective_value(
    returns: npt.ArrayLike, objective: str, periods_per_year: float, risk_free_rate: float = 0.0
) -> Metric:
    """``return_metrics(returns, ...)[objective]`` for one of ``total_return``, ``sharpe``,
    ``sortino``, ``calmar``, computing only what that metric needs (the same expressions in
    the same order, so the same bits: tested). For ranking many parameter sets."""
    r = np.asarray(returns, dtype=np.float64)
    n = int(r.shape[0])
    ppy = float(periods_per_year)
    if objective in ("total_return", "calmar"):
        growth = float(np.prod(1.0 + r)) if n else 1.0
        if objective == "total_return":
            return growth - 1.0
        cagr = _num(growth ** (ppy / n) - 1.0) if n and growth > 0.0 else (-1.0 if n else None)
        dd = drawdown(equity_from_returns(r))
        mdd = float(dd.min()) if dd.size else 0.0
        return _num(float(cagr) / abs(mdd)) if mdd < 0.0 and cagr is not None else None
    excess = r - risk_free_rate / ppy
    if objective == "sharpe":
        if n < 2:
            return None
        ex_std = float(np.std(excess, ddof=1))
        return _num(float(np.mean(excess)) / ex_std * math.sqrt(ppy)) if ex_std > 0.0 else None
    if objective == "sortino":
        downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2))) if n else 0.0
        return _num(float(np.mean(excess)) / downside * math.sqrt(ppy)) if downside > 0.0 else None
    raise ValueError(f"unknown objective {objective!r}")


def trade_metrics(
    pnl: npt.ArrayLike, returns: npt.ArrayLike, closed: npt.ArrayLike
) -> dict[str, Metric]:
    """Win rate, profit factor and average trade over the *closed* trades (as vectorbt does).

    ``pnl`` (currency, net of costs and funding) and ``returns`` (pnl / equity at entry) have one
    value per trade; ``closed`` marks the trades that were exited before the data ended. A
    win is a closed trade with pnl > 0; profit factor = gross profit / gross loss (None without
    a losing trade).
    """
    p = np.asarray(pnl, dtype=np.float64)
    rr = np.asarray(returns, dtype=np.float64)
    done = np.asarray(closed, dtype=bool)
    pc, rc = p[done], rr[done]
    count = int(pc.shape[0])
    loss = float(-pc[pc < 0.0].sum())
    return {
        "trades": int(p.shape[0]),
        "closed_trades": count,
        "open_trades": int(p.shape[0] - count),
        "win_rate": float((pc > 0.0).mean()) if count else None,
        "profit_factor": _num(float(pc[pc > 0.0].sum()) / loss) if loss > 0.0 else None,
        "avg_trade_pnl": float(pc.mean()) if count else None,
        "avg_trade_return": float(rc.mean()) if count else None,
    }


def annualised_sharpe(returns: npt.ArrayLike, periods_per_year: float) -> float | None:
    """Sharpe (ddof=1) of a return series, None with fewer than two returns or zero std."""
    r = np.asarray(returns, dtype=np.float64)
    if r.shape[0] < 2:
        return None
    std = float(np.std(r, ddof=1))
    return _num(float(np.mean(r)) / std * math.sqrt(periods_per_year)) if std > 0.0 else None


def from_sums(
    n: Any,
    sum_log: Any,
    sum_r: Any,
    sum_r2: Any,
    sum_neg2: Any,
    max_dd_log: Any,
    periods_per_year: float,
) -> dict[str, np.ndarray]:
    """The return metrics from streamed sums (what a sweep kernel accumulates), vectorised.

    ``sum_log`` = sum of log(1 + r), ``sum_r``/``sum_r2`` = sums of r and r^2, ``sum_neg2`` =
    sum of min(r, 0)^2, ``max_dd_log`` = min over bars of (log equity - running peak). The
    variance comes from one-pass sums, so values agree with :func:`return_metrics` to ~1e-9,
    not bitwise. Undefined entries are NaN (arrays, not dicts).
    """
    n_ = np.asarray(n, dtype=np.float64)
    ppy = float(periods_per_year)
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = np.exp(np.asarray(sum_log, dtype=np.float64))
        mean = np.asarray(sum_r) / n_
        var = (np.asarray(sum_r2) - np.asarray(sum_r) * mean) / (n_ - 1.0)
        std = np.sqrt(np.maximum(var, 0.0))
        down = np.sqrt(np.asarray(sum_neg2) / n_)
        mdd = np.expm1(np.asarray(max_dd_log, dtype=np.float64))
        cagr = growth ** (ppy / n_) - 1.0
        return {
            "total_return": growth - 1.0,
            "cagr": cagr,
            "annual_volatility": std * math.sqrt(ppy),
            "sharpe": np.where(std > 0.0, mean / std * math.sqrt(ppy), np.nan),
            "sortino": np.where(down > 0.0, mean / down * math.sqrt(ppy), np.nan),
            "max_drawdown": mdd,
            "calmar": np.where(mdd < 0.0, cagr / np.abs(mdd), np.nan),
        }
