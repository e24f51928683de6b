"""Derived series the reports draw: downsampling, drawdown, monthly returns, rolling stats.

Pure NumPy on plain arrays (no pandas at run time: the tests check these against pandas).

* **Downsampling (M4)**: the index range ``[0, n)`` is cut into ``B`` buckets of equal
  length, bucket ``k`` holding ``[floor(k n / B), floor((k + 1) n / B))``. Each bucket keeps
  its first and last point and the first occurrence of its minimum and of its maximum (the
  M4 rule of Jugel et al., 2014), so every extreme of the series is drawn at its true time,
  including the max-drawdown trough, and the last point is always kept. Several series drawn
  on one x axis keep the union of their points. A series of at most ``4 B`` points is kept
  whole. NaN values are ignored when looking for extremes.
* **Monthly returns**: compounded within calendar months, UTC: a point belongs to the month
  of its timestamp (a bar's open time); a month's return is its last equity point over the
  previous month's last point (the first month: over ``base``, the value before the first
  return), minus one. That equals the product of ``1 + r`` over the month's returns.
* **Rolling Sharpe and volatility**: over a trailing window of ``w`` returns (``w`` from
  :func:`rolling_window`), Sharpe = mean / sample std (ddof 1) x sqrt(periods per year),
  volatility = sample std x sqrt(periods per year), with no risk-free rate (DESIGN.md's
  definitions, 365-day year); undefined (NaN) before ``w`` returns and when the std is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DRAW_POINTS = 1_000  # points drawn per series at most (4 per M4 bucket)
ROLLING_DAYS = 90  # the rolling Sharpe / volatility window, in days of bars
MIN_ROLLING_WINDOW = 10


def as_float(values: object) -> FloatArray:
    """A JSON list (``None`` for missing) as float64 with NaN."""
    arr = np.asarray(values if values is not None else [], dtype=object)
    if arr.size == 0:
        return np.zeros(0, np.float64)
    return np.array([np.nan if v is None else float(v) for v in arr.ravel()], np.float64)


def bucket_edges(n: int, buckets: int) -> IntArray:
    """``buckets + 1`` edges cutting ``[0, n)`` into equal-length index buckets."""
    return (np.arange(buckets + 1, dtype=np.int64) * n) // buckets


def m4_indices(values: FloatArray, buckets: int) -> IntArray:
    """Sorted indices M4 keeps of ``values`` with ``buckets`` buckets (module docstring)."""
    n = int(values.shape[0])
    if n <= 4 * buckets:
        return np.arange(n, dtype=np.int64)
    edges = bucket_edges(n, buckets)
    starts, ends = edges[:-1], edges[1:]
    bucket = np.repeat(np.arange(buckets), ends - starts)
    keep = [starts, ends - 1]
    finite = np.isfinite(values)
    for pick in (np.fmin, np.fmax):
        with np.errstate(invalid="ignore"):
            extreme = pick.reduceat(np.where(finite, values, np.nan), starts)
        hit = finite & (values == extreme[bucket])
        # the first hit of each bucket: hits are in index order, so np.unique's first index
        where = np.flatnonzero(hit)
        _, first = np.unique(bucket[where], return_index=True)
        keep.append(where[first])
    return np.unique(np.concatenate(keep)).astype(np.int64)


def downsample(*series: FloatArray, points: int = DRAW_POINTS) -> IntArray:
    """Indices to draw for series sharing one x axis: the union of their M4 indices."""
    buckets = max(1, points // 4)
    if not series:
        return np.zeros(0, np.int64)
    keep = [m4_indices(s, buckets) for s in series]
    return np.unique(np.concatenate(keep)).astype(np.int64)


def drawdown(equity: FloatArray, anchor: float | None = None) -> FloatArray:
    """``equity / running peak - 1`` (<= 0); with ``anchor``, the peak starts at it (the
    starting capital before the first point, DESIGN.md's convention)."""
    peak = np.fmax.accumulate(equity)
    if anchor is not None:
        peak = np.fmax(peak, anchor)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, equity / peak - 1.0, np.nan)


@dataclass(frozen=True)
class Monthly:
    """Monthly returns: one row per calendar month with data (UTC)."""

    year: IntArray
    month: IntArray  # 1..12
    ret: FloatArray


def _year_month(ts: IntArray) -> tuple[IntArray, IntArray]:
    months = ts.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    return (months // 12 + 1970).astype(np.int64), (months % 12 + 1).astype(np.int64)


def monthly_returns(ts: IntArray, equity: FloatArray, base: float | None = None) -> Monthly:
    """Returns compounded within calendar months, UTC (module docstring). ``base`` is the
    value before the first point (default: the first point itself)."""
    if ts.size == 0:
        empty = np.zeros(0, np.int64)
        return Monthly(empty, empty, np.zeros(0, np.float64))
    year, month = _year_month(ts)
    key = year * 12 + month
    last = np.flatnonzero(np.r_[key[1:] != key[:-1], True])  # last point of each month
    ends = equity[last]
    start = float(equity[0] if base is None else base)
    prev = np.r_[start, ends[:-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(prev > 0, ends / prev - 1.0, np.nan)
    return Monthly(year[last], month[last], ret)


def yearly_from_monthly(m: Monthly) -> tuple[IntArray, FloatArray]:
    """Calendar-year returns compounded from the monthly ones."""
    years = np.unique(m.year)
    out = np.array([np.prod(1.0 + m.ret[m.year == y]) - 1.0 for y in years], np.float64)
    return years.astype(np.int64), out


def rolling_window(periods_per_year: float, n_returns: int, days: int = ROLLING_DAYS) -> int:
    """Returns per rolling window: ``days`` of bars, but at most a quarter of the returns
    (so a short run still shows a curve) and at least ``MIN_ROLLING_WINDOW``."""
    by_days = round(periods_per_year * days / 365.0)
    return int(max(MIN_ROLLING_WINDOW, min(by_days, n_returns // 4)))


@dataclass(frozen=True)
class Rolling:
    """Rolling statistics aligned with the returns (NaN where the window is not full)."""

    window: int
    periods_per_year: float
    sharpe: FloatArray
    volatility: FloatArray


def rolling_stats(returns: FloatArray, window: int, periods_per_year: float) -> Rolling:
    """Trailing-window Sharpe and volatility (module docstring), by cumulative sums of the
    returns centred on their overall mean (exact to ~1e-12 for return-sized numbers)."""
    n = int(returns.shape[0])
    sharpe = np.full(n, np.nan)
    vol = np.full(n, np.nan)
    if n >= window >= 2:
        centre = float(np.mean(returns))
        x = returns - centre
        c1 = np.concatenate([[0.0], np.cumsum(x)])
        c2 = np.concatenate([[0.0], np.cumsum(x * x)])
        s1 = c1[window:] - c1[:-window]
        s2 = c2[window:] - c2[:-window]
        mean_c = s1 / window
        std = np.sqrt(np.maximum((s2 - s1 * mean_c) / (window - 1), 0.0))
        # a window of equal returns has std 0 exactly (the sums would leave rounding noise)
        changes = np.concatenate([[0], np.cumsum(returns[1:] != returns[:-1])])
        constant = changes[window - 1 :] - changes[: n - window + 1] == 0
        std = np.where(constant, 0.0, std)
        mean = np.where(constant, returns[window - 1 :], mean_c + centre)
        root = math.sqrt(periods_per_year)
        with np.errstate(divide="ignore", invalid="ignore"):
            sharpe[window - 1 :] = np.where(std > 0, mean / std * root, np.nan)
        vol[window - 1 :] = std * root
    return Rolling(window, periods_per_year, sharpe, vol)


def returns_of(equity: FloatArray) -> FloatArray:
    """Simple returns between consecutive points."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return equity[1:] / equity[:-1] - 1.0


def aligned_close(ts: IntArray, price_ts: IntArray, close: FloatArray) -> FloatArray:
    """The close at each of ``ts`` (NaN where the price series has no bar at that time)."""
    if price_ts.size == 0:
        return np.full(ts.shape, np.nan)
    order = np.argsort(price_ts, kind="stable")
    pts, pc = price_ts[order], close[order]
    idx = np.clip(np.searchsorted(pts, ts), 0, pts.size - 1)
    return np.where(pts[idx] == ts, pc[idx], np.nan)


def buy_and_hold(
    ts: IntArray, price_ts: IntArray, close: FloatArray, initial_capital: float
) -> FloatArray:
    """Equity of holding the asset from the first point: capital x close / first close (no
    costs, no funding); NaN where no close is known."""
    c = aligned_close(ts, price_ts, close)
    if c.size == 0 or not np.isfinite(c[0]) or c[0] <= 0:
        return np.full(ts.shape, np.nan)
    return initial_capital * c / c[0]
