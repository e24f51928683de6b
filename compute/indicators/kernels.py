"""Technical indicators as JAX kernels: one-series kernels, batched kernels, NumPy-facing calls.

Three layers per indicator (definitions, seeds and warm-ups: ``docs/indicators.md``):

* ``<name>_1d`` - the kernel for one series (1-D ``jax.Array``), traceable, the definition;
* ``batched.<name>`` - the same over ``(K, T)`` arrays via :mod:`compute.core.batching` (what the
  pipeline composes inside one ``jit``);
* ``<name>(...)`` - the public call: validates NumPy input, pads the length to a bucket so
  one compilation serves many lengths, runs the jitted batched kernel, returns ``np.ndarray``.

Recursion periods (EMA/RSI/ATR/MACD) are traced, so one compilation serves every period and a
vector of periods sweeps parameter sets in one call; window lengths are static (one compilation
per window). Warm-up bars are NaN, never zeros.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

import numpy as np

from compute.core import fastmath, inputs
from compute.core.batching import over_series
from compute.core.jaxconf import NAN, jax, jnp
from compute.core.rolling import lag, seeded_ema, session_ratio, window_moments, window_sums

Array = jax.Array


# --- one-series kernels -------------------------------------------------------------------


def sma_1d(x: Array, *, n: int) -> Array:
    """Simple moving average over ``n`` bars; NaN for the first ``n - 1``."""
    return window_moments(x, n)[0]


def ema_smoothing(n: Array | int, start: Array | int = 0) -> tuple:
    """``(alpha, n, start)`` of :func:`~compute.core.rolling.seeded_ema` for the classic EMA."""
    return 2.0 / (n + 1.0), n, start


def wilder_smoothing(n: Array | int) -> tuple:
    """``(alpha, n, start)`` of Wilder's smoothing (RSI, ATR): ``1 / n`` from bar 1."""
    return 1.0 / n, n, 1


def ema_1d(x: Array, n: Array | int) -> Array:
    """EMA with ``alpha = 2 / (n + 1)``, seeded with the SMA of the first ``n`` values."""
    return seeded_ema(x, *ema_smoothing(n))


def gains_losses(close: Array) -> tuple[Array, Array]:
    """``max(d, 0)`` and ``max(-d, 0)`` of ``d = close[t] - close[t-1]`` (NaN on bar 0)."""
    change = close - lag(close, 1)
    return jnp.maximum(change, 0.0), jnp.maximum(-change, 0.0)


def rsi_from(gain: Array, loss: Array) -> Array:
    """``100 G / (G + L)`` of smoothed gains and losses; 50 where both are 0."""
    total = gain + loss
    return jnp.where(total == 0.0, 50.0, 100.0 * gain / jnp.where(total == 0.0, 1.0, total))


def rsi_1d(close: Array, n: Array | int) -> Array:
    """Wilder RSI: ``100 * G / (G + L)`` of Wilder-smoothed gains/losses; 50 when both are 0."""
    up, down = gains_losses(close)
    return rsi_from(seeded_ema(up, *wilder_smoothing(n)), seeded_ema(down, *wilder_smoothing(n)))


def macd_signal_1d(line: Array, signal: Array | int, start: Array | int) -> Array:
    """EMA(signal) of the MACD line, seeded with the SMA of its first ``signal`` values."""
    return seeded_ema(line, *ema_smoothing(signal, start))


def macd_1d(close: Array, fast: Array | int, slow: Array | int, signal: Array | int) -> tuple:
    """MACD line (EMA fast - EMA slow), signal (EMA of the line, SMA-seeded), histogram."""
    line = ema_1d(close, fast) - ema_1d(close, slow)
    sig = macd_signal_1d(line, signal, jnp.maximum(fast, slow) - 1)
    return line, sig, line - sig


def true_range_1d(high: Array, low: Array, close: Array) -> Array:
    """``max(h - l, |h - c[t-1]|, |l - c[t-1]|)``; NaN on the first bar (no previous close)."""
    prev = lag(close, 1)
    return jnp.maximum(high - low, jnp.maximum(jnp.abs(high - prev), jnp.abs(low - prev)))


def atr_1d(high: Array, low: Array, close: Array, n: Array | int) -> Array:
    """Wilder ATR: true range from bar 1, seeded with the mean of the first ``n`` true ranges."""
    return seeded_ema(true_range_1d(high, low, close), *wilder_smoothing(n))


class Bollinger(NamedTuple):
    """Bollinger bands (population std, ddof=0) and their derived ratios."""

    mid: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    pct_b: np.ndarray
    width: np.ndarray


def bollinger_from(mid: Array, m2: Array, dev: Array, k: Array | float, n: int) -> tuple:
    """Bands from window moments (any shape): ``(mid, upper, lower, pct_b, width)``.

    ``pct_b = (close - lower) / (upper - lower)`` is evaluated as ``0.5 + dev / (2 k std)``
    with ``dev = close - mid`` from the window kernel, free of cancellation; NaN when std = 0.
    """
    std = jnp.sqrt(m2 / n)
    band = k * std
    pct_b = jnp.where(std > 0.0, 0.5 + dev / (2.0 * jnp.where(std > 0.0, band, 1.0)), NAN)
    return mid, mid + band, mid - band, pct_b, 2.0 * band / mid


def bollinger_1d(close: Array, k: Array | float, *, n: int) -> tuple:
    """mid = SMA(n), std = population std (ddof=0) over n, bands mid +- k std, %b, width.

    ``width = (upper - lower) / mid``.
    """
    mid, m2, dev = window_moments(close, n)
    return bollinger_from(mid, m2, dev, k, n)


def zscore_from(m2: Array, dev: Array, n: int) -> Array:
    """``dev / std`` (population std from ``m2``); NaN where the std is 0."""
    std = jnp.sqrt(m2 / n)
    return jnp.where(std > 0.0, dev / jnp.where(std > 0.0, std, 1.0), NAN)


def zscore_1d(x: Array, *, n: int) -> Array:
    """``(x - SMA(n)) / std(n)`` with population std; NaN where the std is 0."""
    _, m2, dev = window_moments(x, n)
    return zscore_from(m2, dev, n)


def typical_price_1d(high: Array, low: Array, close: Array) -> Array:
    """``(high + low + close) / 3``."""
    return (high + low + close) / 3.0


def ratio_or_nan(num: Array, den: Array) -> Array:
    """``num / den`` where ``den > 0``, else NaN (a VWAP with no traded volume)."""
    return jnp.where(den > 0.0, num / jnp.where(den > 0.0, den, 1.0), NAN)


def vwap_rolling_1d(high: Array, low: Array, close: Array, volume: Array, *, n: int) -> Array:
    """Sum(typical x volume) / Sum(volume) over ``n`` bars; NaN when no volume traded."""
    pv = window_sums(typical_price_1d(high, low, close) * volume, n)
    return ratio_or_nan(pv, window_sums(volume, n))


def vwap_session_1d(
    high: Array, low: Array, close: Array, volume: Array, new_session: Array
) -> Array:
    """VWAP since the session's first bar (``new_session`` marks it); NaN until volume > 0."""
    return session_ratio(typical_price_1d(high, low, close) * volume, volume, new_session)


def simple_returns_1d(close: Array) -> Array:
    """``close[t] / close[t-1] - 1``; NaN on the first bar."""
    return close / lag(close, 1) - 1.0


def log_returns_1d(close: Array) -> Array:
    """``log(close[t] / close[t-1])``; NaN on the first bar."""
    return fastmath.log(close / lag(close, 1))


# --- batched kernels over (K, T) ----------------------------------------------------------

batched = SimpleNamespace(
    sma=over_series(sma_1d),
    ema=over_series(ema_1d),
    rsi=over_series(rsi_1d),
    macd=over_series(macd_1d),
    atr=over_series(atr_1d),
    true_range=over_series(true_range_1d),
    bollinger=over_series(bollinger_1d),
    zscore=over_series(zscore_1d),
    vwap_rolling=over_series(vwap_rolling_1d),
    vwap_session=over_series(vwap_session_1d),
    simple_returns=over_series(simple_returns_1d),
    log_returns=over_series(log_returns_1d),
)

_jit = SimpleNamespace(
    sma=jax.jit(batched.sma, static_argnames="n"),
    ema=jax.jit(batched.ema),
    rsi=jax.jit(batched.rsi),
    macd=jax.jit(batched.macd),
    atr=jax.jit(batched.atr),
    bollinger=jax.jit(batched.bollinger, static_argnames="n"),
    zscore=jax.jit(batched.zscore, static_argnames="n"),
    vwap_rolling=jax.jit(batched.vwap_rolling, static_argnames="n"),
    vwap_session=jax.jit(batched.vwap_session),
    simple_returns=jax.jit(batched.simple_returns),
    log_returns=jax.jit(batched.log_returns),
)


# --- public calls on NumPy arrays ---------------------------------------------------------
# Series are (T,) or (K, T); a period may be an int or a 1-D array (one per series, or - for
# a 1-D series - a sweep: the result then has one row per period).


def sma(x: inputs.ArrayLike, n: int) -> np.ndarray:
    """Simple moving average; NaN for the first ``n - 1`` bars."""
    w = inputs.window("n", n)
    return inputs.run(_jit.sma, [inputs.price("x", x)], [], n=w)


def ema(x: inputs.ArrayLike, n: inputs.IntParam) -> np.ndarray:
    """EMA seeded with the SMA of the first ``n`` values; NaN for the first ``n - 1`` bars."""
    return inputs.run(_jit.ema, [inputs.price("x", x)], [inputs.period("n", n)])


def rsi(close: inputs.ArrayLike, n: inputs.IntParam = 14) -> np.ndarray:
    """Wilder RSI in [0, 100]; NaN for the first ``n`` bars; 50 where price did not move."""
    return inputs.run(_jit.rsi, [inputs.price("close", close)], [inputs.period("n", n)])


def macd(
    close: inputs.ArrayLike,
    fast: inputs.IntParam = 12,
    slow: inputs.IntParam = 26,
    signal: inputs.IntParam = 9,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(line, signal, histogram)``; line NaN for ``slow - 1`` bars, the others for
    ``slow + signal - 2``."""
    f, s, g = (
        inputs.period(name, v) for name, v in (("fast", fast), ("slow", slow), ("signal", signal))
    )
    inputs.require_less("fast", f, "slow", s)
    return inputs.run(_jit.macd, [inputs.price("close", close)], [f, s, g])


def atr(
    high: inputs.ArrayLike,
    low: inputs.ArrayLike,
    close: inputs.ArrayLike,
    n: inputs.IntParam = 14,
) -> np.ndarray:
    """Wilder average true range; NaN for the first ``n`` bars."""
    series = inputs.ohlc(high=high, low=low, close=close)
    return inputs.run(_jit.atr, series, [inputs.period("n", n)])


def bollinger(close: inputs.ArrayLike, n: int = 20, k: inputs.FloatParam = 2.0) -> Bollinger:
    """Bollinger bands with population std; NaN for the first ``n - 1`` bars."""
    w = inputs.window("n", n)
    mult = inputs.positive_float("k", k)
    return Bollinger(*inputs.run(_jit.bollinger, [inputs.price("close", close)], [mult], n=w))


def zscore(x: inputs.ArrayLike, n: int = 20) -> np.ndarray:
    """Rolling z-score (population std); NaN in warm-up and where the window is constant."""
    return inputs.run(_jit.zscore, [inputs.price("x", x)], [], n=inputs.window("n", n))


def vwap_rolling(
    high: inputs.ArrayLike,
    low: inputs.ArrayLike,
    close: inputs.ArrayLike,
    volume: inputs.ArrayLike,
    n: int = 20,
) -> np.ndarray:
    """Rolling VWAP of the typical price over ``n`` bars, weighted by base volume."""
    series = inputs.ohlc(high=high, low=low, close=close, volume=volume)
    return inputs.run(_jit.vwap_rolling, series, [], n=inputs.window("n", n))


def vwap_session(
    high: inputs.ArrayLike,
    low: inputs.ArrayLike,
    close: inputs.ArrayLike,
    volume: inputs.ArrayLike,
    ts: inputs.ArrayLike,
) -> np.ndarray:
    """VWAP anchored at each UTC day's first bar (``ts``: unix seconds or datetime64)."""
    series = inputs.ohlc(high=high, low=low, close=close, volume=volume)
    flags = np.broadcast_to(inputs.session_starts(ts, series[0].shape[-1]), series[0].shape)
    return inputs.run(_jit.vwap_session, [*series, flags], [])


def simple_returns(close: inputs.ArrayLike) -> np.ndarray:
    """``close[t] / close[t-1] - 1``; NaN on the first bar."""
    return inputs.run(_jit.simple_returns, [inputs.price("close", close)], [])


def log_returns(close: inputs.ArrayLike) -> np.ndarray:
    """``log(close[t] / close[t-1])``; NaN on the first bar."""
    return inputs.run(_jit.log_returns, [inputs.price("close", close)], [])
