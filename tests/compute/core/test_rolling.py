"""Numerics of the building blocks: windowed moments at BTC-like magnitudes, exact zeros for
constant windows, the two-level window path, the batched recurrence vs lax.scan."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from compute.core.batching import fusion_groups, run_fused
from compute.core.jaxconf import jax, jnp
from compute.core.rolling import (
    EMA_FROM_SEED,
    SESSION_RATIO,
    seeded_ema,
    seeded_ema_args,
    session_ratio,
    session_ratio_args,
    window_moments,
    window_sums,
)
from compute.indicators import reference as ref


def exact_window_var(x: np.ndarray, w: int) -> np.ndarray:
    """Population variance of every window in exact rational arithmetic."""
    out = np.full(len(x), np.nan)
    values = [Fraction(v) for v in x]
    for t in range(w - 1, len(x)):
        win = values[t - w + 1 : t + 1]
        mean = sum(win) / w
        out[t] = float(sum((v - mean) ** 2 for v in win) / w)
    return out


@pytest.mark.parametrize("w", [2, 5, 20, 24, 25, 60])
def test_window_variance_at_60000_is_exact_to_1e12(w: int) -> None:
    # cent ticks on a ~60,000 price with tiny moves: the variance is ~1e-4..1e2 while x^2 is 3.6e9
    rng = np.random.default_rng(w)
    x = np.round(60_000 + np.cumsum(rng.normal(0, 0.05, 400)), 2)
    want = exact_window_var(x, w)
    mean, m2, dev = jax.jit(lambda s: window_moments(s, w))(jnp.asarray(x))
    got = np.asarray(m2) / w
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), ~ok)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(dev)[ok], (x - np.asarray(mean))[ok], atol=1e-9)
    if w == 20:
        # the trap the kernel avoids: E[x^2] - E[x]^2 from running sums loses ~6-9 digits here
        s1 = np.convolve(x, np.ones(w), "valid")
        s2 = np.convolve(x * x, np.ones(w), "valid")
        naive = s2 / w - (s1 / w) ** 2
        assert np.max(np.abs(naive - want[w - 1 :]) / want[w - 1 :]) > 1e-6


@pytest.mark.parametrize("w", [3, 20, 30])
def test_constant_windows_have_exactly_zero_variance(w: int) -> None:
    x = np.concatenate([np.linspace(1.1, 2.3, 40), np.full(50, 0.1), np.full(40, 61_234.57)])
    mean, m2, dev = (np.asarray(a) for a in jax.jit(lambda s: window_moments(s, w))(jnp.asarray(x)))
    flat = [t for t in range(w - 1, len(x)) if np.ptp(x[t - w + 1 : t + 1]) == 0]
    assert len(flat) >= 30
    assert (m2[flat] == 0).all() and (dev[flat] == 0).all() and (mean[flat] == x[flat]).all()


def test_window_sums_of_positive_data() -> None:
    x = np.random.default_rng(3).lognormal(0, 2, 500)
    for w in (1, 7, 24, 100):
        got = np.asarray(jax.jit(lambda s, w=w: window_sums(s, w))(jnp.asarray(x)))
        want = np.array([np.sum(x[t - w + 1 : t + 1]) for t in range(w - 1, len(x))])
        assert np.isnan(got[: w - 1]).all()
        np.testing.assert_allclose(got[w - 1 :], want, rtol=1e-13)


def test_batched_recurrence_matches_the_scan_bitwise() -> None:
    x = 60_000 * np.exp(np.cumsum(np.random.default_rng(4).normal(0, 0.01, (3, 200)), axis=1))
    single = [np.asarray(seeded_ema(jnp.asarray(row), 2 / 11, 10, 2)) for row in x]
    batched = np.asarray(jax.vmap(lambda r: seeded_ema(r, 2 / 11, 10, 2))(jnp.asarray(x)))
    np.testing.assert_array_equal(batched, np.stack(single))
    assert np.isnan(batched[:, :11]).all() and not np.isnan(batched[:, 11:]).any()


def test_long_windows_keep_their_barrier() -> None:
    # The piece sums of a long window are read q times; the fusion barrier must survive XLA,
    # or the pieces are recomputed per read (O(w) per bar again).
    text = jax.jit(lambda s: window_moments(s, 200)).lower(jnp.ones(1000)).compile().as_text()
    assert text.count(" while(") >= 1


def test_fused_recursions_equal_one_loop_each_bitwise() -> None:
    rng = np.random.default_rng(5)
    x = 60_000 * np.exp(np.cumsum(rng.normal(0, 0.01, (3, 300)), axis=1))
    v = rng.lognormal(0.0, 1.0, (3, 300))
    flags = (np.arange(300) % 24 == 0).astype(float)

    def separate(c: jax.Array, w: jax.Array) -> tuple[jax.Array, ...]:
        return (
            seeded_ema(c, 2 / 11, 10, 0),
            seeded_ema(w, 1 / 7, 7, 3),
            session_ratio(c * w, w, jnp.asarray(flags)),
        )

    def fused(c: jax.Array, w: jax.Array) -> tuple[jax.Array, ...]:
        (a,), (b,), (s,) = run_fused(
            [
                (EMA_FROM_SEED, seeded_ema_args(c, 2 / 11, 10, 0)),
                (EMA_FROM_SEED, seeded_ema_args(w, 1 / 7, 7, 3)),
                (SESSION_RATIO, session_ratio_args(c * w, w, jnp.asarray(flags))),
            ]
        )
        return a, b, s

    xs, vs = jnp.asarray(x), jnp.asarray(v)
    want = [np.asarray(o) for o in jax.jit(jax.vmap(separate))(xs, vs)]
    got = [np.asarray(o) for o in jax.jit(jax.vmap(fused))(xs, vs)]  # the time-major loop
    one = [np.asarray(o) for o in jax.jit(fused)(xs[1], vs[1])]  # the unbatched scan
    for w_, g_, o_ in zip(want, got, one, strict=True):
        np.testing.assert_array_equal(g_, w_)
        np.testing.assert_array_equal(o_, w_[1])
    # the reference: the 7-bar Wilder EMA of v seeded at bar 3 + 7 - 1
    np.testing.assert_allclose(want[1][0], ref.seeded_ema(v[0], 1 / 7, 7, 3), rtol=1e-12)


def test_fusion_groups_respect_the_budget() -> None:
    ema, session = EMA_FROM_SEED, SESSION_RATIO  # 2 and 4 values per series and step
    recs = [ema, ema, ema, session, ema, ema]
    assert fusion_groups(recs, series=2, budget=12) == [[0, 1, 2], [3, 4], [5]]
    assert fusion_groups(recs, series=1, budget=12) == [[0, 1, 2, 3, 4], [5]]
    # many series per call: every recursion fills a loop on its own
    assert fusion_groups(recs, series=64, budget=12) == [[i] for i in range(6)]
    assert fusion_groups([], series=2) == []


def test_a_fused_loop_within_the_budget_stays_one_compiled_function() -> None:
    # XLA:CPU runs a while loop with a small per-step state as one function ("small call");
    # past that, each step is a kernel launch per operation (~40x slower). fusion_groups'
    # budget keeps the pipeline's loops small: if an XLA upgrade moves the threshold, this
    # fails and the budget (batching.FUSED_VALUES_PER_STEP) must be measured again.
    recs = [EMA_FROM_SEED] * 3
    (group,) = fusion_groups(recs, series=2)
    assert len(group) == 3

    def small_calls(series: int, spans: tuple[int, ...]) -> tuple[int, int]:
        def fused(c: jax.Array) -> list[tuple[jax.Array, ...]]:
            return run_fused([(EMA_FROM_SEED, seeded_ema_args(c, 2 / (n + 1), n)) for n in spans])

        text = jax.jit(jax.vmap(fused)).lower(jnp.ones((series, 4096))).compile().as_text()
        return text.count(" while("), text.count("xla_cpu_small_call")

    # one loop per seed (n steps) and the fused loop: all of them small calls
    assert small_calls(2, (5, 9, 20)) == (4, 4)
    # the check can fail: 8 recursions of 2 series (twice the budget) is not a small call
    loops, small = small_calls(2, tuple(range(3, 11)))
    assert (loops, small) == (9, 8)
