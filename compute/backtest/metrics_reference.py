"""Slow, obviously correct loop versions of :mod:`compute.backtest.metrics` (plain Python floats).

Written from the definitions in ``docs/backtesting.md`` without sharing any helper with the
vectorised module, so an equality test between the two checks the vectorised code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def return_metrics(
    returns: Sequence[float], periods_per_year: float, risk_free_rate: float = 0.0
) -> dict[str, float | int | bool | None]:
    """The same keys as :func:`compute.backtest.metrics.return_metrics`, one loop at a time."""
    r = [float(x) for x in returns]
    n = len(r)
    ppy = float(periods_per_year)
    rf = risk_free_rate / ppy
    equity = [1.0]
    for x in r:
        equity.append(equity[-1] * (1.0 + x))
    growth = equity[-1]
    out: dict[str, float | int | bool | None] = {"returns": n, "total_return": growth - 1.0}
    out["cagr"] = (growth ** (ppy / n) - 1.0 if growth > 0 else -1.0) if n else None
    ex = [x - rf for x in r]
    if n >= 2:
        m = sum(r) / n
        sd = math.sqrt(sum((x - m) ** 2 for x in r) / (n - 1))
        out["annual_volatility"] = sd * math.sqrt(ppy)
        me = sum(ex) / n
        sde = math.sqrt(sum((x - me) ** 2 for x in ex) / (n - 1))
        out["sharpe"] = me / sde * math.sqrt(ppy) if sde > 0 else None
    else:
        out["annual_volatility"] = None
        out["sharpe"] = None
    down = math.sqrt(sum(min(x, 0.0) ** 2 for x in ex) / n) if n else 0.0
    out["sortino"] = (sum(ex) / n) / down * math.sqrt(ppy) if down > 0 else None

    # drawdowns: walk the curve keeping the running peak
    peak_value, peak_at = equity[0], 0
    worst, worst_peak, worst_trough = 0.0, None, None
    under_bars = 0
    longest, episode_start = 0, None
    for t, e in enumerate(equity):
        if e >= peak_value:
            if episode_start is not None:
                longest = max(longest, t - episode_start)
                episode_start = None
            peak_value, peak_at = e, t
            continue
        dd = e / peak_value - 1.0
        if t > 0:
            under_bars += 1
        if episode_start is None:
            episode_start = peak_at
        if dd < worst:
            worst, worst_peak, worst_trough = dd, peak_at, t
    if episode_start is not None:
        longest = max(longest, n - episode_start)
    recovery = None
    if worst_trough is not None and worst_peak is not None:
        for t in range(worst_trough, n + 1):
            if equity[t] >= equity[worst_peak]:
                recovery = t
                break
    final_peak = max(equity)
    current = equity[-1] / final_peak - 1.0
    out.update(
        max_drawdown=worst,
        max_drawdown_peak=worst_peak,
        max_drawdown_trough=worst_trough,
        max_drawdown_recovery=recovery,
        max_drawdown_duration=0
        if worst_peak is None
        else (recovery if recovery is not None else n) - worst_peak,
        max_drawdown_open=worst_peak is not None and recovery is None,
        current_drawdown=current,
        drawdown_open=current < 0,
        longest_drawdown=longest,
        time_under_water=under_bars / n if n else 0.0,
    )
    cagr = out["cagr"]
    out["calmar"] = cagr / abs(worst) if worst < 0 and isinstance(cagr, float) else None
    return out
