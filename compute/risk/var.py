"""Risk measures of return series: VaR and ES (historical, normal, Cornish-Fisher), rolling
VaR/ES with breach counts, drawdown and exposure, and causal volatility targeting.

Conventions (DESIGN.md, *Metric definitions*; ``docs/risk.md``):

* a *level* is a confidence level ``c`` in (0.5, 1), e.g. 0.95 / 0.99; the tail probability is
  ``a = 1 - c``;
* historical VaR is the ``a``-quantile of the returns with linear interpolation (NumPy's
  ``method="linear"``: ``h = (n - 1) a``, ``x[floor h] + (h - floor h)(x[floor h + 1] -
  x[floor h])`` on the sorted returns), reported as a return (negative for a loss); ES is the
  mean of the returns at or below it;
* normal: ``VaR = mu + sigma z_a``, ``ES = mu - sigma phi(z_a) / a`` with the sample std
  (ddof=1);
* Cornish-Fisher: ``z_cf = z + (z^2-1) S/6 + (z^3-3z) K/24 - (2z^3-5z) S^2/36`` with the
  population skewness ``S`` and excess kurtosis ``K`` (biased moment ratios, as
  ``scipy.stats.skew/kurtosis`` with ``bias=True``); its ES is the exact mean of the
  Cornish-Fisher transformed normal below ``z_a`` (a closed form of normal partial moments).

Layout: series are ``(T,)`` or ``(K, T)`` (K series, time last), float64 and finite; results
for ``(K, T)`` have a leading K axis, for ``(T,)`` not.

Why historical VaR/ES are NumPy and not XLA: a quantile needs order statistics, and XLA:CPU
sorts slowly (a full ``jnp.sort`` of 50 x 100,000 float64 took 1.1 s here; ``lax.top_k`` on
float64 2.2 s, on float32 0.13 s for the 5% tail). The selection below reads the data twice
(a strided sample brackets the tail, then one pass keeps only values inside the bracket) and
partitions a few thousand values per series: ~10x faster than pandas (``quantile`` + masked
mean), exact, and with ties handled. Moments are a masked JAX reduction (one compile per
padded length), rolling volatility reuses :func:`compute.core.rolling.window_moments`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

from compute.core import inputs
from compute.core.errors import InputDataError, SpecError
from compute.core.jaxconf import F64, jax, jnp
from compute.core.rolling import window_moments

Method = Literal["historical", "normal", "cornish_fisher"]
METHODS: tuple[Method, ...] = ("historical", "normal", "cornish_fisher")
DEFAULT_LEVELS = (0.95, 0.99)
MIN_PARAMETRIC = 3  # returns needed for a sample std and moment ratios
_SAMPLE_TARGET = 4096  # sample size per series that brackets the tail
_SELECT_MIN = 4096  # below this many returns a plain partition is as fast
_ROLL_CHUNK = 4_000_000  # window values materialised at once by rolling VaR/ES
_NORMAL = NormalDist()


class InsufficientReturnsError(InputDataError):
    """Too few returns for the statistic asked; ``needed`` and ``got`` say how many."""

    def __init__(self, what: str, needed: int, got: int) -> None:
        super().__init__(f"{what} needs at least {needed} returns, got {got}")
        self.needed = needed
        self.got = got


# ---------------------------------------------------------------------------- validation
def as_returns(name: str, values: npt.ArrayLike) -> tuple[np.ndarray, bool]:
    """``values`` as a finite float64 ``(K, T)`` array and whether it was 1-D."""
    arr = inputs.series(name, values, minimum=None, strict=False)
    if arr.ndim == 1:
        return arr[None, :], True
    return arr, False


def check_levels(levels: npt.ArrayLike) -> np.ndarray:
    """Confidence levels as a 1-D float64 array, each strictly inside (0.5, 1)."""
    arr = np.atleast_1d(np.asarray(levels, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all():
        raise SpecError(f"levels must be a non-empty list of numbers, got {levels!r}")
    if ((arr <= 0.5) | (arr >= 1.0)).any():
        raise SpecError(
            f"levels are confidence levels strictly between 0.5 and 1 (e.g. 0.95, 0.99), "
            f"got {arr.tolist()}"
        )
    return arr


def _squeeze(arr: np.ndarray, squeeze: bool) -> np.ndarray:
    return arr[0] if squeeze else arr


# ---------------------------------------------------------------------- historical VaR/ES
def _positions(n: int, tails: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower order-statistic index and interpolation weight of each tail probability."""
    h = (n - 1) * tails
    lo = np.floor(h).astype(np.int64)
    return lo, h - lo


def _from_smallest(
    values: np.ndarray, lo: np.ndarray, frac: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """VaR and ES of one series from ``values``: every return at or below the largest needed
    order statistic (any order), which must hold at least ``max(lo) + 2`` values (or all)."""
    hi = np.minimum(lo + 1, values.size - 1)
    part = np.partition(values, np.unique(np.concatenate([lo, hi])))
    q = part[lo] + frac * (part[hi] - part[lo])
    q = np.where(frac == 0.0, part[lo], q)  # exact order statistic, no 0 * inf
    below = values[None, :] <= q[:, None]
    es = (below * values[None, :]).sum(axis=1) / below.sum(axis=1)
    return q, es


def historical_var_es(
    returns: npt.ArrayLike, levels: npt.ArrayLike = DEFAULT_LEVELS
) -> tuple[np.ndarray, np.ndarray]:
    """Historical VaR and ES, shape ``(L,)`` or ``(K, L)``: quantile with linear interpolation
    and the mean of the returns at or below it. One return is enough (VaR = ES = it)."""
    x, squeeze = as_returns("returns", returns)
    tails = 1.0 - check_levels(levels)
    k, n = x.shape
    if n < 1:
        raise InsufficientReturnsError("historical VaR", 1, n)
    lo, frac = _positions(n, tails)
    need = int(lo.max()) + 2  # the smallest `need` values hold every order statistic used
    var = np.empty((k, tails.size))
    es = np.empty((k, tails.size))
    rows = list(range(k))
    if n >= _SELECT_MIN and need * 4 <= n:
        rows = _select_tails(x, need, lo, frac, var, es)
    for i in rows:  # small series, wide tails, or a bracket the sample missed
        var[i], es[i] = _from_smallest(x[i], lo, frac)
    return _squeeze(var, squeeze), _squeeze(es, squeeze)


def _select_tails(
    x: np.ndarray, need: int, lo: np.ndarray, frac: np.ndarray, var: np.ndarray, es: np.ndarray
) -> list[int]:
    """Fill ``var``/``es`` for rows whose ``need`` smallest values a sampled bracket captures;
    return the rows it missed (rare: the bracket is ~4 binomial std above the target rank)."""
    k, n = x.shape
    stride = max(1, n // _SAMPLE_TARGET)
    sample = x[:, ::stride]
    m = sample.shape[1]
    expected = need * m / n
    rank = min(m - 1, math.ceil(expected + 4.0 * math.sqrt(expected) + 8))
    bound = np.partition(sample, rank, axis=1)[:, rank]
    keep = x <= bound[:, None]
    counts = keep.sum(axis=1)
    missed = []
    for i in range(k):
        if counts[i] < need:
            missed.append(i)
            continue
        var[i], es[i] = _from_smallest(x[i][keep[i]], lo, frac)
    return missed


# ---------------------------------------------------------------------------- moments
def _moments_kernel(x: jax.Array, count: jax.Array) -> tuple[jax.Array, ...]:
    """Mean, sample std, population skewness and excess kurtosis of each row's first
    ``count`` values (the rest is padding), two passes on values shifted by the row's first
    value (so a constant row has exactly zero deviations)."""
    t = jnp.arange(x.shape[1])[None, :]
    w = (t < count[:, None]).astype(F64)
    n = count.astype(F64)
    shifted = x - x[:, :1]  # exact for a constant row, which then has zero spread
    shift_mean = (w * shifted).sum(axis=1) / n
    mean = x[:, 0] + shift_mean
    d = (shifted - shift_mean[:, None]) * w
    d2 = d * d
    m2 = d2.sum(axis=1) / n
    m3 = (d2 * d).sum(axis=1) / n
    m4 = (d2 * d2).sum(axis=1) / n
    flat = m2 <= 0.0
    safe = jnp.where(flat, 1.0, m2)
    skew = jnp.where(flat, 0.0, m3 / safe**1.5)
    kurt = jnp.where(flat, 0.0, m4 / (safe * safe) - 3.0)
    std = jnp.sqrt(m2 * n / jnp.maximum(n - 1.0, 1.0))
    return mean, std, skew, kurt


_moments_jit = jax.jit(_moments_kernel)


@dataclass(frozen=True)
class Moments:
    """Per-series moments: mean, sample std (ddof=1), population skewness, excess kurtosis.

    A constant series has std 0 and, by convention here, skewness and kurtosis 0 (undefined
    ratios): its Cornish-Fisher quantiles collapse to the normal ones, i.e. to the constant.
    """

    n: int
    mean: np.ndarray
    std: np.ndarray
    skew: np.ndarray
    kurt: np.ndarray


def moments(returns: npt.ArrayLike) -> Moments:
    """:class:`Moments` of ``(T,)`` (0-d fields) or ``(K, T)`` returns (``(K,)`` fields)."""
    x, squeeze = as_returns("returns", returns)
    k, n = x.shape
    if n < MIN_PARAMETRIC:
        raise InsufficientReturnsError("moments (std, skewness, kurtosis)", MIN_PARAMETRIC, n)
    padded = inputs.pad_time(x, inputs.bucket(n))
    out = _moments_jit(padded, np.full(k, n, dtype=np.int64))
    arrays = [np.asarray(a) for a in out]
    if squeeze:
        arrays = [a[0] for a in arrays]
    return Moments(n, *arrays)


# ---------------------------------------------------------------------- parametric VaR/ES
def cornish_fisher_z(z: np.ndarray, skew: np.ndarray, kurt: np.ndarray) -> np.ndarray:
    """The Cornish-Fisher quantile of a standardised variable with skewness ``skew`` and
    excess kurtosis ``kurt`` at the standard-normal quantile ``z``."""
    return (
        z
        + (z**2 - 1.0) * skew / 6.0
        + (z**3 - 3.0 * z) * kurt / 24.0
        - (2.0 * z**3 - 5.0 * z) * skew**2 / 36.0
    )


def cornish_fisher_tail_mean(
    z: np.ndarray, tail: np.ndarray, skew: np.ndarray, kurt: np.ndarray
) -> np.ndarray:
    """``E[cf(Z) | Z <= z]`` for standard normal ``Z``: the standardised Cornish-Fisher ES.

    ``cf(z) = a0 + a1 z + a2 z^2 + a3 z^3`` and the partial moments
    ``int_{-inf}^{z} u^j phi(u) du`` are ``Phi``, ``-phi``, ``Phi - z phi``,
    ``-(z^2 + 2) phi``.
    """
    a0 = -skew / 6.0
    a1 = 1.0 - kurt / 8.0 + 5.0 * skew**2 / 36.0
    a2 = skew / 6.0
    a3 = kurt / 24.0 - skew**2 / 18.0
    phi = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    partial = a0 * tail - a1 * phi + a2 * (tail - z * phi) - a3 * (z * z + 2.0) * phi
    return np.asarray(partial / tail)


def parametric_var_es(
    returns: npt.ArrayLike,
    levels: npt.ArrayLike = DEFAULT_LEVELS,
    *,
    method: Literal["normal", "cornish_fisher"] = "normal",
    stats: Moments | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normal or Cornish-Fisher VaR and ES (as returns), shape ``(L,)`` or ``(K, L)``."""
    if method not in ("normal", "cornish_fisher"):
        raise SpecError(f"method must be 'normal' or 'cornish_fisher', got {method!r}")
    tails = 1.0 - check_levels(levels)
    mom = stats if stats is not None else moments(returns)
    mean, std = np.atleast_1d(mom.mean)[:, None], np.atleast_1d(mom.std)[:, None]
    z = np.array([_NORMAL.inv_cdf(float(a)) for a in tails])[None, :]
    if method == "normal":
        var = mean + std * z
        phi = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        es = mean - std * phi / tails[None, :]
    else:
        skew, kurt = np.atleast_1d(mom.skew)[:, None], np.atleast_1d(mom.kurt)[:, None]
        var = mean + std * cornish_fisher_z(z, skew, kurt)
        es = mean + std * cornish_fisher_tail_mean(z, tails[None, :], skew, kurt)
    squeeze = np.ndim(mom.mean) == 0
    return _squeeze(var, squeeze), _squeeze(es, squeeze)


def var_es(
    returns: npt.ArrayLike, levels: npt.ArrayLike = DEFAULT_LEVELS, *, method: Method
) -> tuple[np.ndarray, np.ndarray]:
    """VaR and ES by the named method (``historical``, ``normal``, ``cornish_fisher``)."""
    if method == "historical":
        return historical_var_es(returns, levels)
    if method in ("normal", "cornish_fisher"):
        return parametric_var_es(returns, levels, method=method)
    raise SpecError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


# ------------------------------------------------------------------------- rolling VaR/ES
@dataclass(frozen=True)
class RollingVarEs:
    """VaR and ES of each trailing window, and how often the next return breached the VaR.

    ``var[t]``/``es[t]`` use returns ``t - window + 1 .. t`` (NaN before ``window - 1``); a
    breach at ``t`` is ``returns[t] < var[t - 1]``: the forecast made at the close of
    ``t - 1``, tested on the next bar (no look-ahead).
    """

    window: int
    level: float
    method: Method
    var: np.ndarray
    es: np.ndarray
    breaches: int
    tested: int

    @property
    def breach_rate(self) -> float | None:
        return None if self.tested == 0 else self.breaches / self.tested

    def kupiec_p_value(self) -> float | None:
        """Kupiec's proportion-of-failures test of ``breach_rate == 1 - level`` (chi2, 1 df)."""
        n, x, p = self.tested, self.breaches, 1.0 - self.level
        if n == 0:
            return None
        phat = x / n

        def loglik(prob: float) -> float:
            out = 0.0
            if x:
                out += x * math.log(prob) if prob > 0 else -math.inf
            if n - x:
                out += (n - x) * math.log1p(-prob) if prob < 1 else -math.inf
            return out

        lr = max(0.0, -2.0 * (loglik(p) - loglik(phat)))
        return math.erfc(math.sqrt(lr / 2.0))


def rolling_var_es(
    returns: npt.ArrayLike, window: int, level: float = 0.99, *, method: Method = "historical"
) -> RollingVarEs:
    """:class:`RollingVarEs` of one series (windows are materialised in bounded chunks)."""
    x, squeeze = as_returns("returns", returns)
    if not squeeze:
        raise InputDataError(f"returns: rolling VaR takes one series (T,), got {x.shape}")
    w = inputs.window("window", window, minimum=MIN_PARAMETRIC)
    lev = float(check_levels([level])[0])
    series = x[0]
    n = series.size
    if n < w:
        raise InsufficientReturnsError(f"rolling VaR with window {w}", w, n)
    views = np.lib.stride_tricks.sliding_window_view(series, w)
    var = np.full(n, np.nan)
    es = np.full(n, np.nan)
    chunk = max(1, _ROLL_CHUNK // w)
    for s in range(0, views.shape[0], chunk):
        block = np.ascontiguousarray(views[s : s + chunk])
        v, e = var_es(block, [lev], method=method)
        var[w - 1 + s : w - 1 + s + block.shape[0]] = v[:, 0]
        es[w - 1 + s : w - 1 + s + block.shape[0]] = e[:, 0]
    forecast = var[w - 1 : -1]
    realised = series[w:]
    return RollingVarEs(
        w, lev, method, var, es, int((realised < forecast).sum()), int(forecast.size)
    )


# ------------------------------------------------------------------ drawdown and exposure
@dataclass(frozen=True)
class Drawdown:
    """Drawdown of the equity ``prod(1 + r)`` anchored at 1 before the first return.

    Indices are return indices (``-1`` is the anchor before the first return). ``max`` is a
    negative fraction (0 when equity never fell); ``recovery`` is the first index at or
    above the previous peak after the trough, ``None`` while the drawdown is still open.
    ``duration`` counts bars from the peak to the recovery (or to the last bar if open).
    """

    series: np.ndarray
    max: float
    peak: int
    trough: int
    recovery: int | None
    duration: int
    is_open: bool
    current: float
    longest_under_water: int


def drawdown(returns: npt.ArrayLike) -> Drawdown:
    """:class:`Drawdown` of one returns series (returns must be > -1)."""
    x, squeeze = as_returns("returns", returns)
    if not squeeze:
        raise InputDataError(f"returns: drawdown takes one series (T,), got {x.shape}")
    r = x[0]
    if r.size == 0:
        raise InsufficientReturnsError("drawdown", 1, 0)
    if (bad := r <= -1.0).any():
        raise InputDataError(
            f"returns: a return <= -1 (total loss) at {int(np.argmax(bad))}; equity must stay > 0"
        )
    equity = np.concatenate([[1.0], np.cumprod(1.0 + r)])
    peak_equity = np.maximum.accumulate(equity)
    dd = equity / peak_equity - 1.0
    trough = int(np.argmin(dd))
    peak = int(np.argmax(equity[: trough + 1]))
    after = np.flatnonzero(equity[trough:] >= peak_equity[trough])
    recovery = None if dd[trough] == 0.0 or after.size == 0 else trough + int(after[0])
    end = recovery if recovery is not None else equity.size - 1
    under = dd < 0.0
    longest = run = 0
    for flag in under.tolist():
        run = run + 1 if flag else 0
        longest = max(longest, run)
    return Drawdown(
        series=dd[1:],
        max=float(dd[trough]),
        peak=peak - 1,
        trough=trough - 1,
        recovery=None if recovery is None else recovery - 1,
        duration=0 if dd[trough] == 0.0 else end - peak,
        is_open=bool(dd[trough] < 0.0 and recovery is None),
        current=float(dd[-1]),
        longest_under_water=longest,
    )


def exposure(position: npt.ArrayLike) -> dict[str, float]:
    """Exposure of a position series (signed fraction of equity per bar): time in market,
    long/short shares of bars, mean and max gross exposure, mean net exposure, turnover."""
    p, squeeze = as_returns("position", position)
    if not squeeze:
        raise InputDataError(f"position: exposure takes one series (T,), got {p.shape}")
    pos = p[0]
    if pos.size == 0:
        raise InsufficientReturnsError("exposure", 1, 0)
    gross = np.abs(pos)
    change = np.abs(np.diff(pos, prepend=0.0))
    return {
        "time_in_market": float((gross > 0).mean()),
        "long_fraction": float((pos > 0).mean()),
        "short_fraction": float((pos < 0).mean()),
        "mean_gross": float(gross.mean()),
        "max_gross": float(gross.max()),
        "mean_net": float(pos.mean()),
        "turnover_per_bar": float(change.mean()),
    }


# -------------------------------------------------------------------- volatility targeting
def annualised_vol(returns: npt.ArrayLike, periods_per_year: float) -> np.ndarray:
    """Sample std (ddof=1) x sqrt(periods per year), per series."""
    ppy = float(inputs.positive_float("periods_per_year", periods_per_year))
    return np.asarray(moments(returns).std) * math.sqrt(ppy)


def _trailing_m2(x: jax.Array, w: int) -> jax.Array:
    """Squared-deviation sums of each row's trailing ``w``-windows (NaN in the warm-up)."""
    return jax.vmap(lambda row: window_moments(row, w)[1])(x)


_trailing_m2_jit = jax.jit(_trailing_m2, static_argnames="w")


@dataclass(frozen=True)
class VolTarget:
    """Causal volatility targeting of one series.

    ``scale[t] = min(max_leverage, target / vol_hat[t-1])`` where ``vol_hat[t-1]`` is the
    annualised sample std of returns ``t - lookback .. t - 1``: decided at the close of
    ``t - 1`` and applied to ``returns[t]``; NaN for the first ``lookback`` bars (and a zero
    estimate gives the cap). ``next_scale`` is the scale for the bar after the data.
    ``static_scale`` is the full-sample ratio ``min(cap, target / vol)``: it uses the whole
    history, so it describes the series, it is not a tradable rule.
    """

    target_vol: float
    max_leverage: float
    lookback: int
    scale: np.ndarray
    scaled_returns: np.ndarray
    next_scale: float
    static_scale: float
    realised_vol: float
    scaled_vol: float | None
    capped_fraction: float


def vol_target(
    returns: npt.ArrayLike,
    *,
    target_vol: float,
    periods_per_year: float,
    lookback: int,
    max_leverage: float,
) -> VolTarget:
    """:class:`VolTarget` of one series (``lookback`` returns estimate the vol)."""
    x, squeeze = as_returns("returns", returns)
    if not squeeze:
        raise InputDataError(f"returns: vol targeting takes one series (T,), got {x.shape}")
    target = float(inputs.positive_float("target_vol", target_vol))
    cap = float(inputs.positive_float("max_leverage", max_leverage))
    ppy = float(inputs.positive_float("periods_per_year", periods_per_year))
    w = inputs.window("lookback", lookback, minimum=2)
    n = x.shape[1]
    if n < w + 1:
        raise InsufficientReturnsError(f"vol targeting with lookback {w}", w + 1, n)
    padded = inputs.pad_time(x, inputs.bucket(n))
    m2 = np.asarray(_trailing_m2_jit(padded, w=w))[0, :n]
    vol_hat = np.sqrt(np.maximum(m2, 0.0) / (w - 1) * ppy)  # estimate at the close of t
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(np.isnan(vol_hat), np.nan, np.where(vol_hat > 0, target / vol_hat, np.inf))
    decided = np.minimum(raw, cap)  # decided at t, applied to t + 1
    scale = np.full(n, np.nan)
    scale[1:] = decided[:-1]
    scaled = scale * x[0]
    full_vol = float(annualised_vol(x[0], ppy))
    live = scaled[w:]
    return VolTarget(
        target_vol=target,
        max_leverage=cap,
        lookback=w,
        scale=scale,
        scaled_returns=scaled,
        next_scale=float(decided[-1]),
        static_scale=float(min(cap, target / full_vol) if full_vol > 0 else cap),
        realised_vol=full_vol,
        scaled_vol=float(annualised_vol(live, ppy)) if live.size >= MIN_PARAMETRIC else None,
        capped_fraction=float((raw[w - 1 : -1] >= cap).mean()),
    )
