"""A slow, plain-Python backtest of the same rules as :mod:`compute.backtest.engine` (one bar at a
time).

Written from ``docs/backtesting.md`` in the language of a trading ledger (cash, units, orders
with explicit buy / sell branches) rather than the kernel's closed form, and sharing no code
with it, so tests that hold the two equal check the kernel's algebra. Slow: for tests only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

BPS = 1e-4


def realized_vol(close: Sequence[float], lookback: int, ppy: float) -> list[float]:
    """Sample std (ddof=1) of the last ``lookback`` log returns x sqrt(ppy); NaN before."""
    out = [math.nan] * len(close)
    logs = [math.log(close[t] / close[t - 1]) for t in range(1, len(close))]
    for t in range(lookback, len(close)):
        window = logs[t - lookback : t]
        m = sum(window) / lookback
        out[t] = math.sqrt(sum((x - m) ** 2 for x in window) / (lookback - 1) * ppy)
    return out


def weights(
    target: Sequence[float],
    close: Sequence[float],
    *,
    sizing: str,
    fraction: float,
    target_vol: float,
    vol_lookback: int,
    max_leverage: float,
    ppy: float,
) -> list[float]:
    """The weight decided at each close."""
    out = []
    rv = realized_vol(close, vol_lookback, ppy) if sizing == "vol_target" else None
    for t, x in enumerate(target):
        if rv is None:
            w = x * fraction
        elif math.isnan(rv[t]):
            w = 0.0
        else:
            w = x * (min(max_leverage, target_vol / rv[t]) if rv[t] > 0 else max_leverage)
        out.append(max(-max_leverage, min(max_leverage, w)))
    return out


def simulate(
    open_: Sequence[float],
    high: Sequence[float],
    low: Sequence[float],
    close: Sequence[float],
    decided: Sequence[float],
    *,
    fee_bps: float,
    slippage_bps: float = 0.0,
    slippage_range_frac: float = 0.0,
    funding: Sequence[float] | None = None,
    capital: float = 1.0,
) -> dict[str, list[float]]:
    """Ledger per bar: ``decided[t]`` (a weight) is executed at ``open_[t + 1]``."""
    length = len(open_)
    cash, units, in_force = capital, 0.0, 0.0
    rec: dict[str, list[float]] = {
        k: [] for k in ("equity", "units", "traded", "fees", "slippage", "funding")
    }
    for t in range(length):
        order_weight = decided[t - 1] if t > 0 else 0.0
        slip = slippage_bps * BPS
        if t > 0:
            slip += slippage_range_frac * (high[t - 1] - low[t - 1]) / close[t - 1]
        fee = fee_bps * BPS
        value_at_open = cash + units * open_[t]
        traded = 0.0
        if order_weight != in_force and value_at_open > 0:
            holding = units * open_[t]
            want = order_weight * value_at_open
            if want > holding:  # buy: after paying (fee + slip) on the purchase,
                # holding + b == order_weight * (value_at_open - (fee + slip) * b)
                traded = (want - holding) / (1.0 + order_weight * (fee + slip))
            elif want < holding:  # sell s = -traded > 0:
                # holding - s == order_weight * (value_at_open - (fee + slip) * s)
                traded = (want - holding) / (1.0 - order_weight * (fee + slip))
            units = (holding + traded) / open_[t]
            in_force = order_weight
        paid_fee, paid_slip = fee * abs(traded), slip * abs(traded)
        cash -= traded + paid_fee + paid_slip
        paid_funding = (funding[t] if funding is not None else 0.0) * units * close[t]
        cash -= paid_funding
        equity = cash + units * close[t]
        if equity <= 0:
            cash, units, equity = 0.0, 0.0, 0.0
        rec["equity"].append(equity)
        rec["units"].append(units)
        rec["traded"].append(traded)
        rec["fees"].append(paid_fee)
        rec["slippage"].append(paid_slip)
        rec["funding"].append(paid_funding)
    return rec
