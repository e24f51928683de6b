"""Slow, obviously correct references for ``compute.risk.var`` and ``compute.risk.correlation``.

Plain Python loops over lists (``math.fsum`` for sums, ``sorted`` for order statistics), one
series or one pair at a time, written straight from the definitions in ``docs/risk.md`` and
the papers; nothing is shared with the fast kernels (no NumPy reductions, no pandas), so an
equality test between the two checks the kernels, not a common helper. The Cornish-Fisher ES
here is a numerical integral of the Cornish-Fisher quantile, not the kernel's closed form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

_NORMAL = NormalDist()


def quantile_linear(xs: Sequence[float], a: float) -> float:
    """The ``a``-quantile with linear interpolation between order statistics."""
    s = sorted(float(v) for v in xs)
    h = (len(s) - 1) * a
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


def historical(xs: Sequence[float], level: float) -> tuple[float, float]:
    """(VaR, ES) at confidence ``level``: the (1 - level)-quantile and the mean at or below."""
    q = quantile_linear(xs, 1.0 - level)
    tail = [float(v) for v in xs if v <= q]
    return q, math.fsum(tail) / len(tail)


def moments(xs: Sequence[float]) -> tuple[float, float, float, float]:
    """(mean, sample std, population skewness, population excess kurtosis)."""
    n = len(xs)
    mean = math.fsum(xs) / n
    dev = [float(v) - mean for v in xs]
    m2 = math.fsum(d * d for d in dev) / n
    m3 = math.fsum(d**3 for d in dev) / n
    m4 = math.fsum(d**4 for d in dev) / n
    std = math.sqrt(m2 * n / (n - 1))
    if m2 == 0:
        return mean, std, 0.0, 0.0
    return mean, std, m3 / m2**1.5, m4 / m2**2 - 3.0


def normal(xs: Sequence[float], level: float) -> tuple[float, float]:
    mean, std, _, _ = moments(xs)
    a = 1.0 - level
    z = _NORMAL.inv_cdf(a)
    return mean + std * z, mean - std * _NORMAL.pdf(z) / a


def _cf(z: float, s: float, k: float) -> float:
    return z + (z * z - 1) * s / 6 + (z**3 - 3 * z) * k / 24 - (2 * z**3 - 5 * z) * s * s / 36


def cornish_fisher(xs: Sequence[float], level: float, steps: int = 200_000) -> tuple[float, float]:
    """CF VaR, and ES as ``(1/a) int_{-inf}^{z_a} cf(z) phi(z) dz`` by the trapezoid rule."""
    mean, std, s, k = moments(xs)
    a = 1.0 - level
    za = _NORMAL.inv_cdf(a)
    lo = -14.0
    h = (za - lo) / steps
    total = 0.0
    for i in range(steps + 1):
        z = lo + i * h
        weight = 0.5 if i in (0, steps) else 1.0
        total += weight * _cf(z, s, k) * _NORMAL.pdf(z)
    return mean + std * _cf(za, s, k), mean + std * (total * h) / a


def drawdown(rets: Sequence[float]) -> tuple[float, int, int, int | None]:
    """(max drawdown, peak index, trough index, recovery index) with equity anchored at 1
    before the first return (index -1)."""
    equity, peak, peak_i = 1.0, 1.0, -1
    worst, worst_peak, worst_trough = 0.0, -1, -1
    for i, r in enumerate(rets):
        equity *= 1.0 + r
        if equity > peak:
            peak, peak_i = equity, i
        dd = equity / peak - 1.0
        if dd < worst:
            worst, worst_peak, worst_trough = dd, peak_i, i
    if worst == 0.0:
        return 0.0, worst_peak, worst_trough, None
    equity = 1.0
    level = None
    for i, r in enumerate(rets):
        equity *= 1.0 + r
        if i == worst_peak:
            level = equity
        if i > worst_trough and equity >= (level if level is not None else 1.0):
            return worst, worst_peak, worst_trough, i
    return worst, worst_peak, worst_trough, None


def vol_target_scale(
    rets: Sequence[float], target: float, ppy: float, lookback: int, cap: float
) -> list[float]:
    """``scale[t] = min(cap, target / (std(rets[t-lookback:t]) sqrt(ppy)))``; NaN before."""
    out = []
    for t in range(len(rets)):
        if t < lookback:
            out.append(math.nan)
            continue
        _, std, _, _ = moments(rets[t - lookback : t])
        vol = std * math.sqrt(ppy)
        out.append(cap if vol == 0 else min(cap, target / vol))
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    mx, my = math.fsum(x) / n, math.fsum(y) / n
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = math.fsum((a - mx) ** 2 for a in x)
    syy = math.fsum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def average_ranks(xs: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for m in range(i, j + 1):
            ranks[order[m]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _centred(rows: Sequence[Sequence[float]]) -> list[list[float]]:
    return [[v - math.fsum(r) / len(r) for v in r] for r in rows]


def ledoit_wolf_constant_correlation(rows: Sequence[Sequence[float]]) -> float:
    """Shrinkage intensity of Ledoit & Wolf (2004, "Honey, I shrunk ..."), term by term:
    ``pi_ij``, ``theta_ii,ij``, ``rho``, ``gamma``, ``kappa = (pi - rho) / gamma``."""
    y = _centred(rows)
    p, n = len(y), len(y[0])
    s = [[math.fsum(y[i][t] * y[j][t] for t in range(n)) / n for j in range(p)] for i in range(p)]
    r = [[s[i][j] / math.sqrt(s[i][i] * s[j][j]) for j in range(p)] for i in range(p)]
    rbar = math.fsum(r[i][j] for i in range(p) for j in range(p) if i != j) / (p * (p - 1))
    f = [
        [s[i][i] if i == j else rbar * math.sqrt(s[i][i] * s[j][j]) for j in range(p)]
        for i in range(p)
    ]

    def pi(i: int, j: int) -> float:
        return math.fsum((y[i][t] * y[j][t] - s[i][j]) ** 2 for t in range(n)) / n

    def theta(k: int, i: int, j: int) -> float:  # theta_kk,ij
        return (
            math.fsum((y[k][t] ** 2 - s[k][k]) * (y[i][t] * y[j][t] - s[i][j]) for t in range(n))
            / n
        )

    pi_hat = math.fsum(pi(i, j) for i in range(p) for j in range(p))
    rho_hat = math.fsum(pi(i, i) for i in range(p)) + math.fsum(
        rbar
        / 2
        * (
            math.sqrt(s[j][j] / s[i][i]) * theta(i, i, j)
            + math.sqrt(s[i][i] / s[j][j]) * theta(j, i, j)
        )
        for i in range(p)
        for j in range(p)
        if i != j
    )
    gamma_hat = math.fsum((f[i][j] - s[i][j]) ** 2 for i in range(p) for j in range(p))
    kappa = (pi_hat - rho_hat) / gamma_hat
    return max(0.0, min(1.0, kappa / n))


def ledoit_wolf_identity(rows: Sequence[Sequence[float]]) -> float:
    """Shrinkage intensity of Ledoit & Wolf (2004, "A well-conditioned estimator ..."):
    ``m = tr(S)/p``, ``d^2 = |S - m I|^2``, ``b^2 = min(d^2, (1/n^2) sum_t |y_t y_t' - S|^2)``."""
    y = _centred(rows)
    p, n = len(y), len(y[0])
    s = [[math.fsum(y[i][t] * y[j][t] for t in range(n)) / n for j in range(p)] for i in range(p)]
    m = math.fsum(s[i][i] for i in range(p)) / p
    d2 = math.fsum((s[i][j] - (m if i == j else 0.0)) ** 2 for i in range(p) for j in range(p))
    b2_bar = (
        math.fsum(
            (y[i][t] * y[j][t] - s[i][j]) ** 2 for t in range(n) for i in range(p) for j in range(p)
        )
        / n**2
    )
    return min(b2_bar, d2) / d2
