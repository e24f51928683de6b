"""Grid sweeps of a spec: the fused segmented kernel equals run_backtest of each set's
positions (and the built-in EMA sweep), the per-set path covers the rest."""

from __future__ import annotations

import numpy as np
import pytest

from compute.backtest.engine import BacktestConfig, run_backtest
from compute.backtest.sweep import ema_grid, sweep
from compute.core.errors import SpecError
from compute.strategy.compiler import spec_positions
from compute.strategy.grid import expand, sweep_spec
from compute.strategy.rules import RuleError
from compute.strategy.spec import parse_spec
from tests.compute.conftest import random_candles

KEYS = ("total_return", "cagr", "sharpe", "sortino", "annual_volatility", "max_drawdown",
        "calmar", "exposure")  # fmt: skip

SPECS = {
    "ema": ({"long_entry": "ema:{fast} > ema:{slow}", "long_exit": "ema:{fast} <= ema:{slow}"},
            {"fast": [3, 5, 8], "slow": [10, 20, 50]}),
    "stops": ({"long_entry": "ema:{fast} crosses_above ema:{slow} and rsi:14 < {hi}",
               "long_exit": "close < bb_lower:20:2 or close[2] > close * 1.01",
               "stop_loss": {"pct": "{sl}"}, "trailing_stop": {"atr": 2},
               "take_profit": {"pct": 0.02}, "params": {"hi": 70}},
              {"fast": [3, 8], "slow": [10, 30], "sl": [0.004, 0.02], "hi": [60, 80]}),
    "no_exit": ({"long_entry": "zscore:{n} < -1", "trailing_stop": {"pct": "{tr}"}},
                {"n": [10, 30], "tr": [0.003, 0.01]}),
}  # fmt: skip


def per_set_metrics(spec: object, sets: list, d: dict, cfg: BacktestConfig) -> list[dict]:
    flat = {"vol": np.zeros(d["close"].size, np.int8), "trend": np.zeros(d["close"].size, np.int8)}
    out = []
    for b in sets:
        pos = spec_positions(b, d).positions
        out.append(run_backtest(d["ts"], d["open"], d["high"], d["low"], d["close"], pos, cfg,
                                regimes=flat).metrics)  # fmt: skip
    return out


# (64, 700): segments of 11 bars, shorter than the trades, so the entry states need many passes
@pytest.mark.parametrize(("segments", "length"), [(7, 1500), (1, 400), (64, 700)])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_fused_sweep_equals_run_backtest(name: str, segments: int, length: int) -> None:
    raw, grid = SPECS[name]
    spec = parse_spec(raw)
    d = random_candles(length, seed=9, vol=0.003)
    out = sweep_spec(spec, grid, d, fee_bps=10, slippage_bps=2, periods_per_year=8760,
                     segments=segments)  # fmt: skip
    assert out["path"] == "fused"
    sets, _ = expand(spec, grid)
    cfg = BacktestConfig(fee_bps=10, slippage_bps=2, periods_per_year=8760)
    for i, m in enumerate(per_set_metrics(spec, sets, d, cfg)):
        assert out["trades"][i] == m["trades"], i
        assert out["params"][i] == sets[i].values
        for key in KEYS:
            want = np.nan if m[key] is None else m[key]
            assert out[key][i] == pytest.approx(want, rel=1e-9, abs=1e-12, nan_ok=True), (key, i)
    assert out["trades"].max() > 3  # the grid trades


def test_an_ema_spec_sweeps_like_the_builtin_kernel() -> None:
    d = random_candles(5000, seed=2, vol=0.004)
    spec = parse_spec(SPECS["ema"][0])
    fasts, slows = [3, 5, 8, 13], [21, 34, 55]
    mine = sweep_spec(spec, {"fast": fasts, "slow": slows}, d, fee_bps=5)
    fast, slow = ema_grid(fasts, slows)
    theirs = sweep(d["open"], d["close"], fast, slow, fee_bps=5)
    np.testing.assert_array_equal(mine["trades"], theirs["trades"])
    for key in KEYS:
        np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-12, atol=1e-15)


def test_specs_outside_the_fused_kernel_take_the_per_set_path() -> None:
    d = random_candles(600, seed=4, vol=0.01)
    raw = {"long_entry": "rsi:{n} < 30", "short_entry": "rsi:{n} > 70", "long_weight": 0.5}
    spec = parse_spec(raw)
    out = sweep_spec(spec, {"n": [7, 14]}, d, fee_bps=3)
    assert out["path"] == "per_set"
    sets, _ = expand(spec, {"n": [7, 14]})
    m = per_set_metrics(spec, sets, d, BacktestConfig(fee_bps=3))
    assert out["total_return"].tolist() == [x["total_return"] for x in m]


def test_grids_are_validated_set_by_set() -> None:
    spec = parse_spec({"long_entry": "macd:{f}:{s}:9 > 0"})
    with pytest.raises(RuleError, match="fast must be smaller than slow"):
        expand(spec, {"f": [5, 30], "s": [20]})
    sets, rejected = expand(spec, {"f": [5, 30], "s": [20]}, skip_invalid=True)
    assert [b.values for b in sets] == [{"f": 5.0, "s": 20.0}]
    assert rejected[0]["params"] == {"f": 30, "s": 20} and rejected[0]["error"]["token"]
    with pytest.raises(RuleError) as info:
        expand(spec, {"g": [1]})
    assert info.value.field == "grid" and info.value.valid == ["f", "s"]
    with pytest.raises(SpecError, match="1 to 10000"):
        expand(spec, {"f": list(range(1, 200)), "s": list(range(200, 300))})
