"""The sweep kernel equals run_backtest of the same signals, pair by pair."""

from __future__ import annotations

import numpy as np
import pytest

from compute.backtest.engine import BacktestConfig, run_backtest
from compute.backtest.sweep import ema_grid, sweep
from compute.core.errors import SpecError
from compute.indicators.signals import ema_crossover
from tests.compute.conftest import random_candles


# (64, 700): segments of 11 bars, shorter than the slow spans, so the segment EMA entry states
# need many fixed-point passes; threads=2 splits the grid into two kernel calls
@pytest.mark.parametrize(
    ("segments", "length", "threads"), [(7, 1500, 1), (1, 333, 1), (64, 700, 2)]
)
def test_sweep_equals_run_backtest(segments: int, length: int, threads: int) -> None:
    d = random_candles(length, seed=9, vol=0.003)
    fast, slow = ema_grid([3, 5, 8], [10, 20, 50])
    out = sweep(d["open"], d["close"], fast, slow, fee_bps=10, slippage_bps=2,
                periods_per_year=8760, segments=segments, threads=threads)  # fmt: skip
    flat = {"vol": np.zeros(length, np.int8), "trend": np.zeros(length, np.int8)}
    cfg = BacktestConfig(fee_bps=10, slippage_bps=2, periods_per_year=8760)
    for i in range(fast.size):
        pos = ema_crossover(d["close"], int(fast[i]), int(slow[i]), long_only=True)
        m = run_backtest(d["ts"], d["open"], d["high"], d["low"], d["close"], pos.astype(float),
                         cfg, regimes=flat).metrics  # fmt: skip
        for key in (
            "total_return",
            "cagr",
            "sharpe",
            "sortino",
            "annual_volatility",
            "max_drawdown",
            "calmar",
            "exposure",
        ):
            assert out[key][i] == pytest.approx(m[key], rel=1e-9, abs=1e-12), (key, i)
        assert out["trades"][i] == m["trades"]


def test_sweep_rejects_bad_grids() -> None:
    c = random_candles(50)["close"]
    with pytest.raises(SpecError, match="empty"):
        ema_grid([30], [10])
    with pytest.raises(SpecError, match="smaller"):
        sweep(c, c, np.array([20]), np.array([10]))
    with pytest.raises(SpecError, match="at most"):
        sweep(c, c, np.ones(10_001, int), np.full(10_001, 2))
