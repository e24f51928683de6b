"""Volatility and trend regimes: realized vol, vol of vol, and small-int regime labels.

Labels are ``int8`` with the codes of :mod:`compute.core.labels` (``-1`` = missing, i.e. warm-up).
Every label at bar ``t`` is a function of bars ``<= t`` only; the volatility regime compares
bar ``t`` with a baseline built from bars ``<= t - 1`` (the bar being judged never sets its own
threshold). No sorting anywhere: XLA:CPU sorts slowly, and an exponentially weighted baseline
needs no window of past values at all. Rules and defaults: ``docs/indicators.md``.

``*_from`` functions take already computed components and work on any shape with time on the
last axis; the pipeline uses them to share components between requests.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from compute.core import inputs
from compute.core.batching import over_series
from compute.core.jaxconf import NAN, jax, jnp
from compute.core.labels import GATE_Z, TrendRegime, VolRegime
from compute.core.rolling import lag, seeded_ew_moments, window_moments
from compute.indicators.kernels import atr_1d, ema_1d, log_returns_1d

Array = jax.Array

DEFAULT_Z = GATE_Z  # standard-normal quartile: ~25% low / 50% normal / 25% high


def realized_vol_from(m2: Array, ppy: Array | float, n: int) -> Array:
    """Annualised sample std from the squared-deviation sum of ``n`` log returns."""
    return jnp.sqrt(m2 / (n - 1) * ppy)


def realized_vol_1d(close: Array, ppy: Array | float, *, n: int) -> Array:
    """Sample std (ddof=1) of the last ``n`` log returns x sqrt(periods per year).

    NaN for the first ``n`` bars (the first return exists at bar 1).
    """
    return realized_vol_from(window_moments(log_returns_1d(close), n)[1], ppy, n)


def vol_of_vol_1d(close: Array, ppy: Array | float, *, n: int, m: int) -> Array:
    """Sample std (ddof=1) over ``m`` bars of the realized-vol series; NaN for ``n + m - 1``."""
    _, m2, _ = window_moments(realized_vol_1d(close, ppy, n=n), m)
    return jnp.sqrt(m2 / (m - 1))


def vol_label(value: Array, low: Array | float, high: Array | float, defined: Array) -> Array:
    """HIGH above ``high``, LOW below ``low``, NORMAL between, MISSING where not ``defined``."""
    code = jnp.where(
        value > high, VolRegime.HIGH, jnp.where(value < low, VolRegime.LOW, VolRegime.NORMAL)
    )
    return jnp.where(defined, code, VolRegime.MISSING).astype(jnp.int8)


def vol_regime_label(rv: Array, mean: Array, var: Array, z: Array | float) -> Array:
    """The label of ``rv[t]`` against ``mean[t-1] +- z sqrt(var[t-1])`` (time on the last axis)."""
    mean_prev, std_prev = lag(mean, 1), jnp.sqrt(lag(var, 1))
    return vol_label(rv, mean_prev - z * std_prev, mean_prev + z * std_prev, ~jnp.isnan(mean_prev))


def vol_regime_from_1d(rv: Array, z: Array | float, *, n: int, lookback: int) -> Array:
    """The volatility regime of a realized-vol series ``rv`` (defined from bar ``n``).

    Baseline: EW mean and variance of ``rv`` with ``alpha = 2 / (lookback + 1)``, seeded with
    the mean and population variance of ``rv[n : n + lookback]`` (:func:`~compute.core.rolling.
    seeded_ew_moments`); bar ``t`` is judged against the baseline as of ``t - 1``. Missing
    for the first ``n + lookback`` bars.
    """
    mean, var = seeded_ew_moments(rv, n=lookback, start=n)
    return vol_regime_label(rv, mean, var, z)


def vol_regime_1d(close: Array, z: Array | float, *, n: int, lookback: int) -> Array:
    """LOW / NORMAL / HIGH: realized vol(n) against its EW mean +- z EW std as of bar t-1.

    Invariant to the annualisation factor, so none is taken.
    """
    return vol_regime_from_1d(realized_vol_1d(close, 1.0, n=n), z, n=n, lookback=lookback)


def vol_regime_fixed_1d(
    close: Array, low: Array | float, high: Array | float, ppy: Array | float, *, n: int
) -> Array:
    """LOW / NORMAL / HIGH by fixed thresholds on annualised realized vol (missing for ``n``)."""
    rv = realized_vol_1d(close, ppy, n=n)
    return vol_label(rv, low, high, ~jnp.isnan(rv))


def trend_from(ema: Array, atr: Array, threshold: Array | float, slope: int) -> tuple[Array, Array]:
    """``(score, label)`` from EMA and ATR series (time on the last axis).

    score = ``(EMA[t] - EMA[t - slope]) / (slope * ATR[t])``, NaN in warm-up and where ATR = 0.
    label = UP if score > threshold, DOWN if < -threshold, RANGE otherwise or when ATR = 0.
    """
    rise = ema - lag(ema, slope)
    positive = atr > 0.0
    score = jnp.where(positive, rise / (slope * jnp.where(positive, atr, 1.0)), NAN)
    code = jnp.where(
        score > threshold,
        TrendRegime.UP,
        jnp.where(score < -threshold, TrendRegime.DOWN, TrendRegime.RANGE),
    )
    defined = ~jnp.isnan(rise) & ~jnp.isnan(atr)
    return score, jnp.where(defined, code, TrendRegime.MISSING).astype(jnp.int8)


def trend_1d(
    high: Array,
    low: Array,
    close: Array,
    threshold: Array | float,
    *,
    n: int,
    atr_n: int,
    slope: int,
) -> tuple:
    """Trend score and regime from EMA(n) slope over ``slope`` bars in units of ATR(atr_n).

    Both are undefined for the first ``max(n - 1 + slope, atr_n)`` bars.
    """
    return trend_from(ema_1d(close, n), atr_1d(high, low, close, atr_n), threshold, slope)


batched = SimpleNamespace(
    realized_vol=over_series(realized_vol_1d),
    vol_of_vol=over_series(vol_of_vol_1d),
    vol_regime=over_series(vol_regime_1d),
    vol_regime_from=over_series(vol_regime_from_1d),
    vol_regime_fixed=over_series(vol_regime_fixed_1d),
    trend=over_series(trend_1d),
)

_jit = SimpleNamespace(
    realized_vol=jax.jit(batched.realized_vol, static_argnames="n"),
    vol_of_vol=jax.jit(batched.vol_of_vol, static_argnames=("n", "m")),
    vol_regime=jax.jit(batched.vol_regime, static_argnames=("n", "lookback")),
    vol_regime_fixed=jax.jit(batched.vol_regime_fixed, static_argnames="n"),
    trend=jax.jit(batched.trend, static_argnames=("n", "atr_n", "slope")),
)


def realized_vol(
    close: inputs.ArrayLike, n: int = 20, periods_per_year: inputs.FloatParam = 365.0
) -> np.ndarray:
    """Annualised realized volatility (sample std of ``n`` log returns); NaN for ``n`` bars."""
    ppy = inputs.positive_float("periods_per_year", periods_per_year)
    w = inputs.window("n", n, minimum=2)
    return inputs.run(_jit.realized_vol, [inputs.price("close", close)], [ppy], n=w)


def vol_of_vol(
    close: inputs.ArrayLike, n: int = 20, m: int = 20, periods_per_year: inputs.FloatParam = 365.0
) -> np.ndarray:
    """Sample std over ``m`` bars of ``realized_vol(n)``; NaN for ``n + m - 1`` bars."""
    ppy = inputs.positive_float("periods_per_year", periods_per_year)
    statics = {"n": inputs.window("n", n, minimum=2), "m": inputs.window("m", m, minimum=2)}
    return inputs.run(_jit.vol_of_vol, [inputs.price("close", close)], [ppy], **statics)


def vol_regime(
    close: inputs.ArrayLike, n: int = 20, lookback: int = 250, z: inputs.FloatParam = DEFAULT_Z
) -> np.ndarray:
    """Volatility regime codes (:class:`~compute.core.labels.VolRegime`), ``int8``."""
    zz = inputs.nonnegative_float("z", z)
    statics = {
        "n": inputs.window("n", n, minimum=2),
        "lookback": inputs.window("lookback", lookback, minimum=2),
    }
    return inputs.run(_jit.vol_regime, [inputs.price("close", close)], [zz], **statics)


def vol_regime_fixed(
    close: inputs.ArrayLike,
    n: int = 20,
    low: inputs.FloatParam = 0.4,
    high: inputs.FloatParam = 0.8,
    periods_per_year: inputs.FloatParam = 365.0,
) -> np.ndarray:
    """Volatility regime by fixed annualised-vol thresholds ``low < high``, ``int8`` codes."""
    lo, hi = inputs.positive_float("low", low), inputs.positive_float("high", high)
    inputs.require_less("low", lo, "high", hi)
    ppy = inputs.positive_float("periods_per_year", periods_per_year)
    w = inputs.window("n", n, minimum=2)
    return inputs.run(_jit.vol_regime_fixed, [inputs.price("close", close)], [lo, hi, ppy], n=w)


def trend(
    high: inputs.ArrayLike,
    low: inputs.ArrayLike,
    close: inputs.ArrayLike,
    n: int = 20,
    atr_n: int = 14,
    slope: int = 5,
    threshold: inputs.FloatParam = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """``(score, regime)``: EMA slope in ATR units and its
    :class:`~compute.core.labels.TrendRegime`."""
    statics = {k: inputs.window(k, v) for k, v in (("n", n), ("atr_n", atr_n), ("slope", slope))}
    thr = inputs.nonnegative_float("threshold", threshold)
    series = inputs.ohlc(high=high, low=low, close=close)
    return inputs.run(_jit.trend, series, [thr], **statics)
