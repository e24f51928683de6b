"""Batching: k series in one call equal k single-series calls; parameter sweeps; chunking;
one compilation per shape."""

from __future__ import annotations

import numpy as np

from compute.core.jaxconf import jnp
from compute.indicators import kernels as ind
from compute.indicators import regimes as reg
from compute.indicators import signals as sig
from compute.indicators.pipeline import _compiled, compute_indicators
from compute.indicators.registry import parse_indicator_spec
from tests.compute.conftest import COVERAGE_LENGTH, OHLCV, random_candles

# recursions, short and long windows, session VWAP, labels, gated and long-only signals
SPEC = (
    "sma:10,rsi:7,macd:5:10:4,atr:7,bb:30:2,vwap:10,svwap,rvol:10:365,vreg:5:20,"
    "trend:10:7:3:0.1,ema_cross:5:10:0:1,bb_break:10:2:1:0"
)
K, LENGTH = 3, COVERAGE_LENGTH


def batch() -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    parts = [
        random_candles(LENGTH, seed=s, start=10.0 ** (s % 4), vol=0.01 * (s + 1)) for s in range(K)
    ]
    stacked = {k: np.stack([p[k] for p in parts]) for k in OHLCV[:5]} | {"ts": parts[0]["ts"]}
    return stacked, parts


def test_pipeline_batch_equals_single_series_calls() -> None:
    stacked, parts = batch()
    together = compute_indicators(SPEC, **stacked)
    for i, part in enumerate(parts):
        alone = compute_indicators(SPEC, **{k: part[k] for k in OHLCV})
        for name, values in alone.items():
            np.testing.assert_array_equal(together[name][i], values, err_msg=f"{name} series {i}")


def test_chunking_and_threads_do_not_change_results() -> None:
    stacked, _ = batch()
    one_call = compute_indicators(SPEC, **stacked)
    # 1 per call (the single-series shape), 2 per call on 2 threads (the last chunk is filled
    # up with a repeated series)
    for options in ({"series_per_call": 1}, {"series_per_call": 2, "workers": 2}):
        chunked = compute_indicators(SPEC, **stacked, **options)
        for name, values in one_call.items():
            np.testing.assert_array_equal(chunked[name], values, err_msg=f"{name} {options}")


def test_public_kernels_batch_equals_single_calls() -> None:
    stacked, parts = batch()
    h, lo, c, v = (stacked[k] for k in ("high", "low", "close", "volume"))
    calls = {
        "ema": (lambda c, h, lo, v: ind.ema(c, 10)),
        "rsi": (lambda c, h, lo, v: ind.rsi(c, 7)),
        "atr": (lambda c, h, lo, v: ind.atr(h, lo, c, 7)),
        "zscore": (lambda c, h, lo, v: ind.zscore(c, 30)),  # 30 > 24: the two-level window path
        "vwap": (lambda c, h, lo, v: ind.vwap_rolling(h, lo, c, v, 30)),
        "rvol": (lambda c, h, lo, v: reg.realized_vol(c, 10)),
        "vreg": (lambda c, h, lo, v: reg.vol_regime(c, 5, 20)),
        "cross": (lambda c, h, lo, v: sig.ema_crossover(c, 5, 10, vol_gate=True)),
    }
    for name, fn in calls.items():
        together = fn(c, h, lo, v)
        for i, p in enumerate(parts):
            alone = fn(p["close"], p["high"], p["low"], p["volume"])
            if alone.dtype == np.int8:
                np.testing.assert_array_equal(together[i], alone, err_msg=name)
            else:  # equal up to the last bit or two (XLA may fuse a*b+c differently)
                np.testing.assert_array_equal(np.isnan(together[i]), np.isnan(alone))
                np.testing.assert_allclose(together[i], alone, rtol=1e-13, err_msg=name)


def test_parameter_sweeps_in_one_call() -> None:
    x = random_candles(LENGTH, seed=7)["close"]
    periods = np.array([3, 10, 25])
    swept = ind.ema(x, periods)
    assert swept.shape == (3, LENGTH)
    for row, n in zip(swept, periods, strict=True):
        np.testing.assert_array_equal(row, ind.ema(x, int(n)))
    lines, signals, _ = ind.macd(x, np.array([5, 8]), np.array([10, 21]), np.array([4, 5]))
    np.testing.assert_array_equal(lines[1], ind.macd(x, 8, 21, 5)[0])
    np.testing.assert_array_equal(signals[0], ind.macd(x, 5, 10, 4)[1])
    np.testing.assert_array_equal(
        ind.bollinger(x, 10, np.array([1.0, 2.0])).upper[1], ind.bollinger(x, 10, 2.0).upper
    )
    np.testing.assert_array_equal(
        sig.rsi_reversion(x, np.array([7, 14]), 25.0, 75.0)[1], sig.rsi_reversion(x, 14, 25.0, 75.0)
    )
    # per-series parameters for a batch: one period per row
    xs = np.stack([x, x * 2])
    np.testing.assert_array_equal(ind.rsi(xs, np.array([5, 9]))[1], ind.rsi(x * 2, 9))


def test_one_compilation_per_shape() -> None:
    x = random_candles(LENGTH, seed=8)["close"]
    jitted = ind._jit.ema
    ind.ema(x, 5)
    size = jitted._cache_size()
    for n in (6, 20, 50):  # periods are traced: no new compilation
        ind.ema(x, n)
    ind.ema(x[:-7], 9)  # a shorter series padded to the same bucket: no new compilation
    assert jitted._cache_size() == size
    fn = _compiled(parse_indicator_spec("sma:5,rsi:5"))
    compute_indicators("sma:5,rsi:5", close=x)
    before = fn._cache_size()
    compute_indicators("sma:5,rsi:5", close=x[:-3])
    assert fn._cache_size() == before


def test_x64_is_on() -> None:
    assert jnp.asarray(1.0).dtype == jnp.float64
    assert compute_indicators("ema:3", close=np.arange(1.0, 10))["ema_3"].dtype == np.float64


def test_pipeline_shared_loops_equal_the_single_kernels_bitwise() -> None:
    # The pipeline runs its recursions several to a loop (compute.core.batching.run_fused); each
    # public kernel runs its own. Same steps in the same order: the same bits.
    stacked, _ = batch()
    h, lo, c, v, ts = (stacked[k] for k in ("high", "low", "close", "volume", "ts"))
    spec = "ema:10,rsi:7,macd:5:10:4,atr:7,svwap,trend:10:7:3:0.1,vreg:5:20"
    out = compute_indicators(spec, **stacked)
    np.testing.assert_array_equal(out["ema_10"], ind.ema(c, 10))
    np.testing.assert_array_equal(out["rsi_7"], ind.rsi(c, 7))
    np.testing.assert_array_equal(out["atr_7"], ind.atr(h, lo, c, 7))
    np.testing.assert_array_equal(out["macd_signal_5_10_4"], ind.macd(c, 5, 10, 4)[1])
    np.testing.assert_array_equal(out["svwap"], ind.vwap_session(h, lo, c, v, ts))
    np.testing.assert_array_equal(out["vreg_5_20_0.6745"], reg.vol_regime(c, 5, 20))
