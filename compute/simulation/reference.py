"""Slow, plain NumPy references of the simulation kernels (same draws, straightforward loops).

Each function materialises ``paths x horizon`` arrays and loops over time in Python: easy to
read and check by hand, and the tests require the JAX kernels to agree with them (integers
exactly, floats to rounding). They draw from the same counter-based streams
(:mod:`compute.simulation.prng`), so agreement is path by path, not only in distribution.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compute.simulation import prng
from compute.simulation.shocks import ShockSpec


def bootstrap_returns(
    returns: np.ndarray,
    block: float,
    n_paths: int,
    horizon: int,
    key: int,
    *,
    kind: str = "circular",
    scale: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(returns (P, H), source index (P, H))`` of the block bootstrap."""
    from compute.simulation.bootstrap import alias_table

    r = np.asarray(returns, np.float64)
    n = r.shape[0]
    streams = prng.path_streams_np(key, n_paths)
    accept, alias = (None, None) if weights is None else alias_table(weights)
    idx = np.zeros(n_paths, np.int64)
    sc = np.ones(n_paths)
    out = np.empty((n_paths, horizon))
    where = np.empty((n_paths, horizon), np.int64)
    for t in range(horizon):
        word = prng.draw_np(streams, t, 0)
        j, frac = prng.below_np(word, n)
        j = j.astype(np.int64)
        if accept is not None and alias is not None:
            j = np.where(frac < accept[j], j, alias[j])
        if kind == "circular":
            new = np.full(n_paths, t % int(block) == 0)
        else:
            p32 = np.uint64(np.floor(2.0**32 / block))
            new = ((word & np.uint64(0xFFFFFFFF)) < p32) | (t == 0)
        idx = np.where(new, j, (idx + 1) % n)
        if scale is not None:
            sc = np.where(new, scale[j], sc)
        where[:, t] = idx
        out[:, t] = np.maximum(r[idx] * sc, -1.0) if scale is not None else r[idx]
    return out, where


def regime_returns(
    mu: np.ndarray,
    sigma: np.ndarray,
    transmat: np.ndarray,
    start: np.ndarray,
    df: np.ndarray | None,
    alpha: float,
    beta: float,
    n_paths: int,
    horizon: int,
    key: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(returns (P, H), regimes (P, H))`` of the regime-switching generator."""
    streams = prng.path_streams_np(key, n_paths)
    cum_t = np.cumsum(transmat, axis=1)
    cum_s = np.cumsum(start)
    k = len(mu)
    state = np.full(n_paths, -1)
    g = np.ones(n_paths)
    z2 = np.ones(n_paths)
    out = np.empty((n_paths, horizon))
    regimes = np.empty((n_paths, horizon), np.int64)
    for t in range(horizon):
        u = prng.hi_uniform_np(prng.draw_np(streams, t, 1))
        for p in range(n_paths):
            row = cum_s if state[p] < 0 else cum_t[state[p]]
            state[p] = int(np.sum(u[p] > row[: k - 1]))
        g = (1 - alpha - beta) + alpha * z2 + beta * g
        word = prng.draw_np(streams, t, 0)
        # float32 innovations, as the kernel computes them
        u1 = prng.hi_uniform_np(word).astype(np.float32)
        u2 = prng.lo_uniform_np(word).astype(np.float32)
        c = np.cos(np.float32(2 * np.pi) * u2)
        if df is None:
            z = np.sqrt(np.float32(-2) * np.log(u1)) * c
        else:
            nu = np.asarray(df, np.float32)[state]
            z = np.sqrt(nu * np.expm1(np.float32(-2.0) / nu * np.log(u1))) * c
            z = z * np.sqrt((nu - np.float32(2)) / nu)
        z = z.astype(np.float64)
        x = np.asarray(mu)[state] + np.asarray(sigma)[state] * np.sqrt(g) * z
        out[:, t] = np.maximum(x, -1.0)
        regimes[:, t] = state
        z2 = z * z
    return out, regimes


def apply_shocks(r: np.ndarray, spec: ShockSpec, key: int) -> tuple[np.ndarray, np.ndarray]:
    """``(equity returns (P, H), liquidated (P,))``: the rules of
    :mod:`compute.simulation.shocks`."""
    n_paths, horizon = r.shape
    streams = prng.path_streams_np(key, n_paths)
    sched = spec.params(horizon)
    lev = spec.leverage
    spike_left = np.zeros(n_paths, np.int64)
    fund_left = np.zeros(n_paths, np.int64)
    liquidated = np.zeros(n_paths, bool)
    out = np.empty_like(r)
    for t in range(horizon):
        w2 = prng.draw_np(streams, t, 2)
        u_gap, u_spike = prng.hi_uniform_np(w2), prng.lo_uniform_np(w2)
        u_fund = prng.hi_uniform_np(prng.draw_np(streams, t, 3))
        x = r[:, t].copy()
        stressed = np.full(n_paths, bool(sched.stress_at[t]))
        if spec.spike_at or spec.spike_prob > 0:
            start = sched.spike_at[t] | (u_spike < spec.spike_prob)
            spike_left = np.where(start, spec.spike_len, spike_left)
            active = spike_left > 0
            x = np.where(active, x * spec.spike_mult, x)
            spike_left = np.maximum(spike_left - 1, 0)
            stressed |= active
        if spec.gap_at or spec.gap_prob > 0:
            gap = sched.gap_at[t] | (u_gap < spec.gap_prob)
            x = np.where(gap, (1 + x) * (1 + spec.gap_size) - 1, x)
            stressed |= gap
        cost = np.zeros(n_paths)
        if spec.funding_at or spec.funding_prob > 0:
            start = sched.funding_at[t] | (u_fund < spec.funding_prob)
            fund_left = np.where(start, spec.funding_len, fund_left)
            active = fund_left > 0
            cost = np.where(active, lev * spec.exposure * spec.funding_rate, 0.0)
            fund_left = np.maximum(fund_left - 1, 0)
            stressed |= active
        if spec.cost_per_turnover > 0 and spec.turnover > 0:
            cost = cost + np.where(stressed, lev * spec.turnover * spec.cost_per_turnover, 0.0)
        eq = lev * x - cost
        if spec.maintenance_margin > 0:
            hit = ~liquidated & (1 + eq < spec.maintenance_margin * lev * np.maximum(1 + x, 0))
            after = np.maximum(1 + eq, 0) * (1 - spec.liquidation_penalty) - 1
            eq = np.where(liquidated, 0.0, np.where(hit, after, eq))
            liquidated |= hit
        out[:, t] = np.maximum(eq, -1.0)
    return out, liquidated


def path_stats(eq_ret: np.ndarray, ruin_level: float, dtype: type = np.float32) -> dict[str, Any]:
    """Per-path statistics of equity returns ``(P, H)`` (equity starts at 1), compounded in
    ``dtype`` (the kernel compounds in float32; float64 for an exact-arithmetic check)."""
    equity: np.ndarray = np.cumprod(1.0 + eq_ret.astype(dtype), axis=1, dtype=dtype)
    peak = np.maximum.accumulate(np.maximum(equity, dtype(1.0)), axis=1)
    under = equity < peak
    longest = np.zeros(eq_ret.shape[0], np.int64)
    spell = np.zeros(eq_ret.shape[0], np.int64)
    for t in range(eq_ret.shape[1]):
        spell = np.where(under[:, t], spell + 1, 0)
        longest = np.maximum(longest, spell)
    return {
        "terminal": equity[:, -1].astype(np.float64) - 1.0,
        "max_drawdown": np.minimum((equity / peak - dtype(1.0)).min(axis=1), 0.0),
        "under_water": under.sum(axis=1),
        "longest": longest,
        "ruined": np.minimum(equity.min(axis=1), 1.0) < dtype(ruin_level),
        "equity": equity,
    }
