"""Slow, obviously correct NumPy references for every kernel (one 1-D series at a time).

Written straight from the definitions in ``docs/indicators.md`` with plain Python loops for
recursions and explicit windows (``sliding_window_view``) for rolling statistics; nothing here
is shared with the JAX kernels, so an equality test between the two checks the kernels'
numerics, not a common helper. Inputs are assumed valid (the JAX side validates).

Rolling variance here is the textbook two-pass formula on each window after subtracting the
window's last value (variance is shift-invariant; the subtraction of nearby prices is exact),
so a constant window has exactly zero variance.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from compute.core.labels import (
    GATE_ALLOWED,
    GATE_LOOKBACK,
    GATE_N,
    GATE_Z,
    Position,
    TrendRegime,
    VolRegime,
)

NAN = math.nan


def _full(length: int) -> np.ndarray:
    return np.full(length, NAN)


def _windows(x: np.ndarray, n: int) -> np.ndarray:
    return sliding_window_view(np.asarray(x, dtype=np.float64), n)


def _rolling(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, sum of squared deviations, x - mean) of each trailing window, NaN-padded."""
    mean, ss, dev = _full(len(x)), _full(len(x)), _full(len(x))
    if len(x) >= n:
        win = _windows(x, n)
        d = win - win[:, -1:]
        dbar = d.mean(axis=1)
        mean[n - 1 :] = win[:, -1] + dbar
        ss[n - 1 :] = ((d - dbar[:, None]) ** 2).sum(axis=1)
        dev[n - 1 :] = -dbar
    return mean, ss, dev


def seeded_ema(x: np.ndarray, alpha: float, n: int, start: int = 0) -> np.ndarray:
    """NaN until ``start + n - 1``; there the mean of ``x[start:start+n]``; then
    ``y = y + alpha * (x - y)``."""
    out = _full(len(x))
    seed_at = start + n - 1
    if seed_at >= len(x):
        return out
    values = np.asarray(x, dtype=np.float64).tolist()  # Python floats: a fast, exact loop
    anchor = values[start]
    acc = 0.0
    for v in values[start : seed_at + 1]:
        acc += v - anchor
    y = anchor + acc / n
    ys = [y]
    for v in values[seed_at + 1 :]:
        y = y + alpha * (v - y)
        ys.append(y)
    out[seed_at:] = ys
    return out


def sma(x: np.ndarray, n: int) -> np.ndarray:
    return _rolling(x, n)[0]


def ema(x: np.ndarray, n: int) -> np.ndarray:
    return seeded_ema(x, 2.0 / (n + 1.0), n)


def _diff(x: np.ndarray) -> np.ndarray:
    out = _full(len(x))
    out[1:] = x[1:] - x[:-1]
    return out


def rsi(close: np.ndarray, n: int) -> np.ndarray:
    change = _diff(close)
    gains = seeded_ema(np.where(change > 0, change, 0.0), 1.0 / n, n, start=1)
    losses = seeded_ema(np.where(change < 0, -change, 0.0), 1.0 / n, n, start=1)
    out = _full(len(close))
    for t in range(len(close)):
        g, lo = gains[t], losses[t]
        if not math.isnan(g):
            out[t] = 50.0 if g + lo == 0 else 100.0 * g / (g + lo)
    return out


def macd(close: np.ndarray, fast: int, slow: int, signal: int) -> tuple[np.ndarray, ...]:
    line = ema(close, fast) - ema(close, slow)
    sig = seeded_ema(line, 2.0 / (signal + 1.0), signal, start=max(fast, slow) - 1)
    return line, sig, line - sig


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    out = _full(len(close))
    for t in range(1, len(close)):
        prev = close[t - 1]
        out[t] = max(high[t] - low[t], abs(high[t] - prev), abs(low[t] - prev))
    return out


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> np.ndarray:
    return seeded_ema(true_range(high, low, close), 1.0 / n, n, start=1)


def bollinger(close: np.ndarray, n: int, k: float) -> tuple[np.ndarray, ...]:
    mid, ss, _ = _rolling(close, n)
    std = np.sqrt(ss / n)
    upper, lower = mid + k * std, mid - k * std
    with np.errstate(invalid="ignore", divide="ignore"):
        pct_b = np.where(std > 0, (close - lower) / (upper - lower), NAN)
    return mid, upper, lower, pct_b, (upper - lower) / mid


def zscore(x: np.ndarray, n: int) -> np.ndarray:
    _, ss, dev = _rolling(x, n)
    std = np.sqrt(ss / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(std > 0, dev / std, NAN)


def typical_price(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    return (high + low + close) / 3.0


def vwap_rolling(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, n: int
) -> np.ndarray:
    out = _full(len(close))
    if len(close) >= n:
        pv = _windows(typical_price(high, low, close) * volume, n).sum(axis=1)
        vol = _windows(volume, n).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[n - 1 :] = np.where(vol > 0, pv / vol, NAN)
    return out


def vwap_session(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, ts: np.ndarray
) -> np.ndarray:
    """Cumulative typical-price VWAP, restarting at the first bar of each UTC day."""
    tp = typical_price(high, low, close)
    out = _full(len(close))
    pv = vol = 0.0
    day = None
    for t in range(len(close)):
        today = int(ts[t]) // 86_400
        if today != day:
            pv = vol = 0.0
            day = today
        pv += tp[t] * volume[t]
        vol += volume[t]
        out[t] = pv / vol if vol > 0 else NAN
    return out


def simple_returns(close: np.ndarray) -> np.ndarray:
    out = _full(len(close))
    out[1:] = close[1:] / close[:-1] - 1.0
    return out


def log_returns(close: np.ndarray) -> np.ndarray:
    out = _full(len(close))
    out[1:] = np.log(close[1:] / close[:-1])
    return out


def realized_vol(close: np.ndarray, n: int, ppy: float) -> np.ndarray:
    _, ss, _ = _rolling(log_returns(close), n)
    return np.sqrt(ss / (n - 1) * ppy)


def vol_of_vol(close: np.ndarray, n: int, m: int, ppy: float) -> np.ndarray:
    _, ss, _ = _rolling(realized_vol(close, n, ppy), m)
    return np.sqrt(ss / (m - 1))


def _vol_code(value: float, low: float, high: float) -> int:
    if value > high:
        return VolRegime.HIGH
    return VolRegime.LOW if value < low else VolRegime.NORMAL


def vol_regime(close: np.ndarray, n: int, lookback: int, z: float) -> np.ndarray:
    """Realized vol vs. its EW mean +- z EW std as of the previous bar (seeded over lookback)."""
    rv = realized_vol(close, n, 1.0)
    out = np.full(len(close), VolRegime.MISSING, dtype=np.int8)
    seed_at = n + lookback - 1
    if seed_at >= len(close):
        return out
    window = rv[n : seed_at + 1]
    mean = ema(rv[n:], lookback)[lookback - 1]  # the SMA seed, as the EMA defines it
    var = float(((window - window.mean()) ** 2).mean())
    alpha = 2.0 / (lookback + 1.0)
    for t in range(seed_at + 1, len(close)):
        std = math.sqrt(var)
        out[t] = _vol_code(rv[t], mean - z * std, mean + z * std)
        d = rv[t] - mean
        mean = mean + alpha * d
        var = var + alpha * ((1.0 - alpha) * d * d - var)  # = (1 - alpha) (var + alpha d^2)
    return out


def vol_regime_fixed(close: np.ndarray, n: int, low: float, high: float, ppy: float) -> np.ndarray:
    rv = realized_vol(close, n, ppy)
    out = np.full(len(close), VolRegime.MISSING, dtype=np.int8)
    for t in range(n, len(close)):
        out[t] = _vol_code(rv[t], low, high)
    return out


def trend_score(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int, atr_n: int, slope: int
) -> np.ndarray:
    e, a = ema(close, n), atr(high, low, close, atr_n)
    out = _full(len(close))
    for t in range(slope, len(close)):
        if a[t] > 0:
            out[t] = (e[t] - e[t - slope]) / (slope * a[t])
    return out


def trend_regime(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    n: int,
    atr_n: int,
    slope: int,
    threshold: float,
) -> np.ndarray:
    a = atr(high, low, close, atr_n)
    score = trend_score(high, low, close, n, atr_n, slope)
    out = np.full(len(close), TrendRegime.MISSING, dtype=np.int8)
    for t in range(max(n - 1 + slope, atr_n), len(close)):
        if not a[t] > 0:
            out[t] = TrendRegime.RANGE
        elif score[t] > threshold:
            out[t] = TrendRegime.UP
        elif score[t] < -threshold:
            out[t] = TrendRegime.DOWN
        else:
            out[t] = TrendRegime.RANGE
    return out


# --- signals ------------------------------------------------------------------------------


def _finish(pos: np.ndarray, close: np.ndarray, long_only: bool, vol_gate: bool) -> np.ndarray:
    if long_only:
        pos = np.where(pos > 0, pos, Position.FLAT)
    if vol_gate:
        regime = vol_regime(close, GATE_N, GATE_LOOKBACK, GATE_Z)
        pos = np.where(np.isin(regime, [int(c) for c in GATE_ALLOWED]), pos, Position.FLAT)
    return pos.astype(np.int8)


def ema_cross(
    close: np.ndarray, fast: int, slow: int, long_only: bool = False, vol_gate: bool = False
) -> np.ndarray:
    ef, es = ema(close, fast), ema(close, slow)
    pos = np.zeros(len(close), dtype=np.int8)
    for t in range(len(close)):
        if ef[t] > es[t]:
            pos[t] = Position.LONG
        elif ef[t] < es[t]:
            pos[t] = Position.SHORT
    return _finish(pos, close, long_only, vol_gate)


def rsi_reversion(
    close: np.ndarray,
    n: int,
    lower: float,
    upper: float,
    long_only: bool = False,
    vol_gate: bool = False,
) -> np.ndarray:
    r = rsi(close, n)
    pos = np.zeros(len(close), dtype=np.int8)
    pos[r < lower] = Position.LONG
    pos[r > upper] = Position.SHORT
    return _finish(pos, close, long_only, vol_gate)


def bollinger_breakout(
    close: np.ndarray, n: int, k: float, long_only: bool = False, vol_gate: bool = False
) -> np.ndarray:
    _, upper, lower, _, _ = bollinger(close, n, k)
    pos = np.zeros(len(close), dtype=np.int8)
    pos[close > upper] = Position.LONG
    pos[close < lower] = Position.SHORT
    return _finish(pos, close, long_only, vol_gate)
