"""Trading signals: target positions in {-1, 0, 1} (short / flat / long) as ``int8``.

A position at bar ``t`` is decided at the close of bar ``t`` from bars ``<= t`` only (causal;
a backtest applies it to the return of bar ``t + 1``). Wherever an input is still in warm-up
(NaN) the position is 0 (flat), never missing. ``long_only`` turns every short into flat.
``vol_gate`` keeps a position only while the volatility regime (:func:`compute.indicators.regimes.
vol_regime_1d` with ``compute.core.labels.GATE_*`` parameters) is LOW or NORMAL: flat in HIGH and
while the regime is still missing. :func:`regime_gate` gates any position by any labels.
Rules: ``docs/indicators.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace

import numpy as np

from compute.core import inputs
from compute.core.batching import over_series
from compute.core.errors import InputDataError
from compute.core.jaxconf import jax, jnp
from compute.core.labels import GATE_ALLOWED, GATE_LOOKBACK, GATE_N, GATE_Z
from compute.core.rolling import window_moments
from compute.indicators.kernels import ema_1d, rsi_1d
from compute.indicators.regimes import vol_regime_1d

Array = jax.Array


def position_from(long_cond: Array, short_cond: Array, long_only: bool) -> Array:
    """1 where ``long_cond``, else -1 where ``short_cond`` (0 if ``long_only``), else 0."""
    pos = jnp.where(long_cond, 1, jnp.where(short_cond, 0 if long_only else -1, 0))
    return pos.astype(jnp.int8)


def gate_from(position: Array, regime: Array, allowed: Iterable[int] = GATE_ALLOWED) -> Array:
    """``position`` where ``regime`` is one of ``allowed``, else 0 (missing is never allowed)."""
    ok = jnp.zeros(regime.shape, bool)
    for code in allowed:
        ok = ok | (regime == int(code))
    return jnp.where(ok, position, 0).astype(jnp.int8)


def ema_cross_from(fast_ema: Array, slow_ema: Array, long_only: bool) -> Array:
    """Long while EMA(fast) > EMA(slow), short while below, flat when equal or undefined."""
    diff = fast_ema - slow_ema
    return position_from(diff > 0.0, diff < 0.0, long_only)


def rsi_reversion_from(
    rsi: Array, lower: Array | float, upper: Array | float, long_only: bool
) -> Array:
    """Long while RSI < lower (oversold), short while RSI > upper (overbought), else flat."""
    return position_from(rsi < lower, rsi > upper, long_only)


def bollinger_breakout_from(
    m2: Array, dev: Array, k: Array | float, n: int, long_only: bool
) -> Array:
    """Long while close > mid + k std, short while close < mid - k std (``dev = close - mid``)."""
    band = k * jnp.sqrt(m2 / n)
    return position_from(dev > band, dev < -band, long_only)


def _gated(position: Array, close: Array, vol_gate: bool) -> Array:
    if not vol_gate:
        return position
    return gate_from(position, vol_regime_1d(close, GATE_Z, n=GATE_N, lookback=GATE_LOOKBACK))


def ema_cross_1d(
    close: Array, fast: Array | int, slow: Array | int, *, long_only: bool, vol_gate: bool
) -> Array:
    """EMA crossover position for one series."""
    pos = ema_cross_from(ema_1d(close, fast), ema_1d(close, slow), long_only)
    return _gated(pos, close, vol_gate)


def rsi_reversion_1d(
    close: Array,
    n: Array | int,
    lower: Array | float,
    upper: Array | float,
    *,
    long_only: bool,
    vol_gate: bool,
) -> Array:
    """RSI mean-reversion position for one series."""
    return _gated(rsi_reversion_from(rsi_1d(close, n), lower, upper, long_only), close, vol_gate)


def bollinger_breakout_1d(
    close: Array, k: Array | float, *, n: int, long_only: bool, vol_gate: bool
) -> Array:
    """Bollinger breakout position for one series."""
    _, m2, dev = window_moments(close, n)
    return _gated(bollinger_breakout_from(m2, dev, k, n, long_only), close, vol_gate)


batched = SimpleNamespace(
    ema_cross=over_series(ema_cross_1d),
    rsi_reversion=over_series(rsi_reversion_1d),
    bollinger_breakout=over_series(bollinger_breakout_1d),
)

_FLAGS = ("long_only", "vol_gate")
_jit = SimpleNamespace(
    ema_cross=jax.jit(batched.ema_cross, static_argnames=_FLAGS),
    rsi_reversion=jax.jit(batched.rsi_reversion, static_argnames=_FLAGS),
    bollinger_breakout=jax.jit(batched.bollinger_breakout, static_argnames=("n", *_FLAGS)),
)


def ema_crossover(
    close: inputs.ArrayLike,
    fast: inputs.IntParam = 12,
    slow: inputs.IntParam = 26,
    *,
    long_only: bool = False,
    vol_gate: bool = False,
) -> np.ndarray:
    """EMA crossover positions; flat for the first ``slow - 1`` bars."""
    f, s = inputs.period("fast", fast), inputs.period("slow", slow)
    inputs.require_less("fast", f, "slow", s)
    flags = {"long_only": bool(long_only), "vol_gate": bool(vol_gate)}
    return inputs.run(_jit.ema_cross, [inputs.price("close", close)], [f, s], **flags)


def rsi_reversion(
    close: inputs.ArrayLike,
    n: inputs.IntParam = 14,
    lower: inputs.FloatParam = 30.0,
    upper: inputs.FloatParam = 70.0,
    *,
    long_only: bool = False,
    vol_gate: bool = False,
) -> np.ndarray:
    """RSI mean-reversion positions; flat for the first ``n`` bars."""
    lo = inputs.real("lower", lower, low=0.0, high=100.0)
    hi = inputs.real("upper", upper, low=0.0, high=100.0)
    inputs.require_less("lower", lo, "upper", hi)
    flags = {"long_only": bool(long_only), "vol_gate": bool(vol_gate)}
    params = [inputs.period("n", n), lo, hi]
    return inputs.run(_jit.rsi_reversion, [inputs.price("close", close)], params, **flags)


def bollinger_breakout(
    close: inputs.ArrayLike,
    n: int = 20,
    k: inputs.FloatParam = 2.0,
    *,
    long_only: bool = False,
    vol_gate: bool = False,
) -> np.ndarray:
    """Bollinger breakout positions; flat for the first ``n - 1`` bars."""
    flags = {"n": inputs.window("n", n), "long_only": bool(long_only), "vol_gate": bool(vol_gate)}
    params = [inputs.positive_float("k", k)]
    return inputs.run(_jit.bollinger_breakout, [inputs.price("close", close)], params, **flags)


def regime_gate(
    position: inputs.ArrayLike, regime: inputs.ArrayLike, allowed: Iterable[int] = GATE_ALLOWED
) -> np.ndarray:
    """Gate any position series by any regime labels: flat wherever ``regime`` is not allowed."""
    pos, reg = np.asarray(position), np.asarray(regime)
    if pos.shape != reg.shape:
        raise InputDataError(f"position {pos.shape} and regime {reg.shape} differ in shape")
    return np.where(np.isin(reg, [int(c) for c in allowed]), pos, 0).astype(np.int8)
