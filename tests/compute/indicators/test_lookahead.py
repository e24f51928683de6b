"""No look-ahead: a value at bar t depends on bars <= t only, for every output of every item.

Two forms of the same property:

* perturb the future: replace every bar after t by different (valid) candles, keep the length
  (so nothing recompiles) and require bars 0..t to be bitwise unchanged;
* truncate: compute on the first t + 1 bars and require the same values at 0..t.
"""

from __future__ import annotations

import numpy as np
import pytest

from compute.core.inputs import bucket
from compute.indicators import kernels as ind
from compute.indicators import regimes as reg
from compute.indicators import signals as sig
from compute.indicators.pipeline import compute_indicators
from compute.indicators.registry import REGISTRY, parse_indicator_spec
from tests.compute.conftest import (
    COVERAGE_LENGTH,
    COVERAGE_SPEC,
    OHLCV,
    call_kwargs,
    random_candles,
)

LENGTH = COVERAGE_LENGTH
SPEC = COVERAGE_SPEC


def test_spec_covers_the_registry() -> None:
    assert {r.spec.name for r in parse_indicator_spec(SPEC)} == set(REGISTRY)


def perturbed_after(candles: dict[str, np.ndarray], t: int, seed: int) -> dict[str, np.ndarray]:
    other = random_candles(LENGTH, seed=seed, start=float(candles["close"][t]) * 1.3, vol=0.05)
    out = {k: v.copy() for k, v in candles.items()}
    for k in ("open", "high", "low", "close", "volume"):
        out[k][t + 1 :] = other[k][t + 1 :]
    return out


def test_pipeline_outputs_ignore_the_future() -> None:
    base = random_candles(LENGTH, seed=1, vol=0.02)
    full = compute_indicators(SPEC, **call_kwargs(base))
    rng = np.random.default_rng(2)
    for t in [0, 1, 25, 150, LENGTH - 2, *rng.integers(0, LENGTH - 1, 5)]:
        changed = compute_indicators(
            SPEC, **call_kwargs(perturbed_after(base, int(t), seed=int(t) + 10))
        )
        for name, values in full.items():
            np.testing.assert_array_equal(
                changed[name][: t + 1], values[: t + 1], err_msg=f"{name} at t={t}"
            )
        # and the future really was different (the test would be vacuous otherwise)
        assert t == LENGTH - 2 or not np.array_equal(changed["ema_20"], full["ema_20"])


def test_pipeline_outputs_on_truncated_input() -> None:
    base = random_candles(LENGTH, seed=3, vol=0.02)
    full = compute_indicators(SPEC, **call_kwargs(base))
    # lengths that share the compiled (bucketed) length of the full series: no recompilation
    same_bucket = [t for t in range(LENGTH - 1) if bucket(t + 1) == bucket(LENGTH)]
    for pick in np.random.default_rng(4).choice(same_bucket, 4, replace=False):
        t = int(pick)
        cut = compute_indicators(SPEC, **{k: base[k][: t + 1] for k in OHLCV})
        for name, values in full.items():
            np.testing.assert_array_equal(
                cut[name], values[: t + 1], err_msg=f"{name} truncated at t={t}"
            )


PUBLIC = {
    "sma": lambda x: ind.sma(x["close"], 20),
    "ema": lambda x: ind.ema(x["close"], 20),
    "rsi": lambda x: ind.rsi(x["close"], 14),
    "macd": lambda x: np.stack(ind.macd(x["close"])),
    "atr": lambda x: ind.atr(x["high"], x["low"], x["close"], 14),
    "bollinger": lambda x: np.stack(ind.bollinger(x["close"])),
    "zscore": lambda x: ind.zscore(x["close"], 20),
    "vwap_rolling": lambda x: ind.vwap_rolling(x["high"], x["low"], x["close"], x["volume"], 20),
    "vwap_session": lambda x: ind.vwap_session(
        x["high"], x["low"], x["close"], x["volume"], x["ts"]
    ),
    "returns": lambda x: np.stack([ind.simple_returns(x["close"]), ind.log_returns(x["close"])]),
    "realized_vol": lambda x: reg.realized_vol(x["close"], 20),
    "vol_of_vol": lambda x: reg.vol_of_vol(x["close"], 10, 10),
    "vol_regime": lambda x: reg.vol_regime(x["close"], 20, 100),
    "vol_regime_fixed": lambda x: reg.vol_regime_fixed(x["close"], 10, 0.4, 0.8, 8760),
    "trend": lambda x: np.stack(reg.trend(x["high"], x["low"], x["close"])),
    "ema_crossover": lambda x: sig.ema_crossover(x["close"], vol_gate=True),
    "rsi_reversion": lambda x: sig.rsi_reversion(x["close"], long_only=True),
    "bollinger_breakout": lambda x: sig.bollinger_breakout(x["close"], vol_gate=True),
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_kernels_ignore_the_future(name: str) -> None:
    base = random_candles(LENGTH, seed=5, vol=0.02)
    full = PUBLIC[name](base)
    for t in (0, 137, 250, LENGTH - 2):
        changed = PUBLIC[name](perturbed_after(base, t, seed=t + 20))
        np.testing.assert_array_equal(
            changed[..., : t + 1], full[..., : t + 1], err_msg=f"{name} at t={t}"
        )
