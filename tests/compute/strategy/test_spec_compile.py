"""Compiled specs: equal to the built-ins bit for bit, to the plain-Python reference, and to
hand-computed stop-loss / take-profit / trailing-stop ledgers."""

from __future__ import annotations

import numpy as np
import pytest

from compute.backtest.engine import BacktestConfig, run_backtest
from compute.backtest.strategies import positions
from compute.strategy.compiler import spec_positions
from compute.strategy.machine import REVERSE, RULE, STOP_LOSS, TAKE_PROFIT, TRAILING
from compute.strategy.reference import spec_positions_reference
from compute.strategy.spec import parse_spec
from tests.compute.conftest import load_candles, random_candles

EMA_CROSS = {
    "long_entry": "ema:12 > ema:26",
    "long_exit": "ema:12 <= ema:26",
    "short_entry": "ema:12 < ema:26",
    "short_exit": "ema:12 >= ema:26",
}
RSI_MR = {
    "long_entry": "rsi:14 < 30",
    "long_exit": "rsi:14 >= 30",
    "short_entry": "rsi:14 > 70",
    "short_exit": "rsi:14 <= 70",
}


def backtest(d: dict[str, np.ndarray], pos: np.ndarray, cfg: BacktestConfig) -> object:
    return run_backtest(d["ts"], d["open"], d["high"], d["low"], d["close"], pos, cfg)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["btc_1d", "eth_4h"])
def test_spec_equal_to_ema_cross_is_bit_identical(name: str) -> None:
    d = load_candles(name)
    cfg = BacktestConfig(fee_bps=10, slippage_bps=2, periods_per_year=365)
    for spec, builtin in (
        (EMA_CROSS, {}),
        ({"long_entry": "ema:12 > ema:26", "long_exit": "ema:12 <= ema:26"}, {"long_only": 1}),
        (RSI_MR, "rsi_mr"),
    ):
        strategy = "rsi_mr" if builtin == "rsi_mr" else "ema_cross"
        params = builtin if isinstance(builtin, dict) else {}
        mine = spec_positions(parse_spec(spec), d).positions
        theirs = positions(strategy, params, d["open"], d["high"], d["low"], d["close"])
        assert np.array_equal(mine, theirs), strategy
        assert (mine != 0).sum() > 100  # not vacuous
        a, b = backtest(d, mine, cfg), backtest(d, theirs, cfg)
        assert np.array_equal(a.equity["equity"], b.equity["equity"])  # type: ignore[attr-defined]
        assert a.metrics == b.metrics  # type: ignore[attr-defined]


SPECS = [
    {**EMA_CROSS, "stop_loss": {"pct": 0.02}, "take_profit": {"pct": 0.05}},
    {"long_entry": "ema:5 > ema:20 and rsi:14 < 70", "long_exit": "close < bb_lower:20:2",
     "stop_loss": {"pct": 0.02}, "trailing_stop": {"atr": 3}},
    {"long_entry": "rsi:7 crosses_above 30", "short_entry": "rsi:7 crosses_below 70",
     "take_profit": {"pct": 0.03}, "stop_loss": {"atr": 1.5, "n": 10}, "long_weight": 0.5,
     "short_weight": 0.25},
    {"short_entry": "zscore:20 > 1.5 or close > close[3] * 1.05",
     "short_exit": "not (zscore:20 > 0)", "trailing_stop": {"pct": 0.04}},
    {"long_entry": "macd:12:26:9.hist > 0 and vreg:20:100 < 2",
     "long_exit": "macd_hist:12:26:9 < -abs(atr:14) / 100",
     "short_entry": "min(ema:3, sma:5) < max(ema:10, sma:10) - 0.1",
     "take_profit": {"atr": 2}, "trailing_stop": {"atr": 1, "n": 5}},
    {"long_entry": "trend:20:14:5:0.1 == 2 and vwap:10 < close", "long_exit": "trend == 0",
     "short_entry": "trend == 0 and svwap > close", "short_exit": "trend != 0",
     "stop_loss": {"pct": 0.01}, "take_profit": {"pct": 0.01}},
    {"long_entry": "(ret > 0)[1] and (ret > 0)[2] or rvol:10:8760 > 2",
     "long_exit": "ret < 0", "trailing_stop": {"pct": 0.005}, "long_weight": 2.5},
]  # fmt: skip


@pytest.mark.parametrize("raw", SPECS, ids=range(len(SPECS)))
def test_compiled_equals_reference(raw: dict) -> None:
    d = random_candles(700, seed=3, vol=0.02)
    spec = parse_spec(raw)
    run = spec_positions(spec, d)
    target, reason = spec_positions_reference(spec.bind(), d)
    np.testing.assert_array_equal(run.positions, target)
    np.testing.assert_array_equal(run.reasons, reason)
    assert (run.positions[: run.warmup] == 0).all()
    assert len(np.unique(run.positions)) > 1  # each spec trades on this series


@pytest.mark.realdata
def test_compiled_equals_reference_on_real_hourly_data() -> None:
    d = {k: v[:3000] for k, v in load_candles("sol_1h").items()}
    for raw in SPECS[:3]:
        spec = parse_spec(raw)
        target, reason = spec_positions_reference(spec.bind(), d)
        run = spec_positions(spec, d)
        np.testing.assert_array_equal(run.positions, target)
        np.testing.assert_array_equal(run.reasons, reason)


# --- hand-computed stops ------------------------------------------------------------------


def candles(rows: list[tuple[float, float, float, float]]) -> dict[str, np.ndarray]:
    o, h, lo, c = (np.array(col, dtype=float) for col in zip(*rows, strict=True))
    ts = 1_700_000_000 + 86_400 * np.arange(len(rows))
    return {"ts": ts, "open": o, "high": h, "low": lo, "close": c, "volume": np.ones(len(rows))}


FLAT5 = {"vol": np.ones(5, np.int8), "trend": np.ones(5, np.int8)}


def test_stop_loss_by_hand() -> None:
    """Long from the first close; the 5 % stop (95) is hit by bar 2's low 94; it fills at bar 3's
    open 93 (a gap through the stop fills at the open, not at 95); bar 3 re-enters."""
    d = candles([(100, 100, 100, 100), (100, 102, 97, 98), (97, 98, 94, 96),
                 (93, 95, 92, 94), (94, 96, 93, 95)])  # fmt: skip
    run = spec_positions(parse_spec({"long_entry": "close > 0", "stop_loss": {"pct": 0.05}}), d)
    assert run.positions.tolist() == [1, 1, 0, 1, 1]
    assert run.reasons.tolist() == [0, 0, STOP_LOSS, 0, 0]
    res = run_backtest(d["ts"], d["open"], d["high"], d["low"], d["close"], run.positions,
                       BacktestConfig(), regimes=FLAT5)  # fmt: skip
    expected = [1.0, 0.98, 0.96, 0.93, 0.93 * 95 / 94]
    np.testing.assert_allclose(res.equity["equity"], expected, rtol=1e-15)


def test_stop_loss_does_not_trigger_above_its_level() -> None:
    d = candles([(100, 100, 100, 100), (100, 102, 95.01, 98), (97, 98, 95.0, 96),
                 (93, 95, 92, 94), (94, 96, 93, 95)])  # fmt: skip
    run = spec_positions(parse_spec({"long_entry": "close > 0", "stop_loss": {"pct": 0.05}}), d)
    # bar 1's low 95.01 is above 95; bar 2's low touches 95 exactly: a stop at the level fires
    assert run.reasons.tolist() == [0, 0, STOP_LOSS, 0, 0]


def test_take_profit_of_a_short_by_hand() -> None:
    """Short filled at 100; the 10 % target (90) is reached by bar 2's low 89."""
    d = candles([(100, 100, 100, 100), (100, 101, 95, 96), (96, 97, 89, 91),
                 (91, 92, 90, 91), (91, 92, 90, 91)])  # fmt: skip
    spec = parse_spec({"short_entry": "close > 0", "take_profit": {"pct": 0.1},
                       "short_weight": 0.5})  # fmt: skip
    run = spec_positions(spec, d)
    assert run.positions.tolist() == [-0.5, -0.5, 0, -0.5, -0.5]
    assert run.reasons.tolist() == [0, 0, TAKE_PROFIT, 0, 0]
    res = run_backtest(d["ts"], d["open"], d["high"], d["low"], d["close"], run.positions,
                       BacktestConfig(), regimes=FLAT5)  # fmt: skip
    # half the equity short from 100 (units -0.005): +0.04 by bar 1, +0.09 by the exit at 91
    np.testing.assert_allclose(res.equity["equity"][:4], [1.0, 1.02, 1.045, 1.045], rtol=1e-14)


def test_trailing_stop_uses_the_peak_before_the_bar() -> None:
    """10 % trailing from the fill at 100: peaks 105, 112, then bar 3 (high 120, low 101) does
    not trigger - its own high may have come after its low, so the level is 112 x 0.9 = 100.8 -
    and bar 4's low 107 breaks 120 x 0.9 = 108."""
    d = candles([(100, 100, 100, 100), (100, 105, 99, 104), (104, 112, 103, 110),
                 (110, 120, 101, 118), (118, 119, 107, 108), (108, 109, 107, 108)])  # fmt: skip
    spec = parse_spec({"long_entry": "close > 0", "trailing_stop": {"pct": 0.1}})
    run = spec_positions(spec, d)
    assert run.positions.tolist() == [1, 1, 1, 1, 0, 1]
    assert run.reasons.tolist() == [0, 0, 0, 0, TRAILING, 0]


def test_atr_stop_is_fixed_at_the_entry_decision() -> None:
    """ATR(2) = (TR1 + TR2) / 2 = (4 + 3) / 2 = 3.5 at bar 2, where the warm-up ends and the long
    is decided; the fill at 104 puts the stop at 100.5, hit by bar 4's low 100.4. (With the ATR
    of bar 3, 3.75, the stop would be 100.25 and would not be hit.)"""
    d = candles([(100, 101, 99, 100), (100, 103, 99, 102), (102, 104, 101, 103),
                 (104, 105, 101, 102), (102, 103, 100.4, 101)])  # fmt: skip
    spec = parse_spec({"long_entry": "close > 0", "stop_loss": {"atr": 1.0, "n": 2}})
    run = spec_positions(spec, d)
    assert spec.bind().warmup == 2
    assert run.positions.tolist() == [0, 0, 1, 1, 0]
    assert run.reasons.tolist() == [0, 0, 0, 0, STOP_LOSS]


def test_stop_loss_wins_when_both_stops_trigger_on_one_bar() -> None:
    d = candles([(100, 100, 100, 100), (100, 100, 100, 100), (100, 120, 80, 100),
                 (100, 100, 100, 100)])  # fmt: skip
    spec = parse_spec({"long_entry": "close > 0", "stop_loss": {"pct": 0.1},
                       "take_profit": {"pct": 0.1}})  # fmt: skip
    run = spec_positions(spec, d)
    assert run.positions.tolist() == [1, 1, 0, 1]
    assert run.reasons.tolist() == [0, 0, STOP_LOSS, 0]


def test_exits_reversals_and_conflicts() -> None:
    """Rule exit, an opposite entry reversing, and long + short entries cancelling."""
    close = [10, 11, 12, 9, 8, 10, 10, 10]
    d = candles([(c, c + 1, c - 1, c) for c in close])
    spec = parse_spec({"long_entry": "close > 10.5", "long_exit": "close < 11.5",
                       "short_entry": "close < 9.5 or close == 10",
                       "short_exit": "close > 9.5 and close < 10"})  # fmt: skip
    run = spec_positions(spec, d)
    # t0 close 10: short entry; t1 11: long entry while short -> opposite: reverse to long;
    # t2 12 holds; t3 9: long exit (rule), short entry -> reversal; t4 8 holds; t5 10: short_exit
    # false (not < 10), still short; t6, t7 hold
    assert run.positions.tolist() == [-1, 1, 1, -1, -1, -1, -1, -1]
    assert run.reasons.tolist() == [0, REVERSE, 0, RULE, 0, 0, 0, 0]
    both = parse_spec({"long_entry": "close > 0", "short_entry": "close > 0"})
    assert (spec_positions(both, d).positions == 0).all()


def test_fractional_weights_and_required_bars() -> None:
    """``ema:5 > 0`` holds from the EMA's first value (bar 4): required_bars = 4 + 2 candles
    give exactly one traded bar at the weight 0.3, one candle fewer gives none."""
    spec = parse_spec({"long_entry": "ema:5 > 0", "long_weight": 0.3})
    need = spec.bind().required_bars
    assert need == 6
    d = random_candles(need, seed=2)
    run = spec_positions(spec, d)
    assert run.positions.tolist() == [0, 0, 0, 0, 0.3, 0.3]
    flat = {"vol": np.zeros(need, np.int8), "trend": np.zeros(need, np.int8)}
    res = run_backtest(d["ts"], d["open"], d["high"], d["low"], d["close"], run.positions,
                       BacktestConfig(), regimes=flat)  # fmt: skip
    assert res.metrics["trades"] == 1 and res.equity["position"].tolist()[-1] == 0.3
    short = {k: v[:-1] for k, v in d.items()}
    pos = spec_positions(spec, short).positions
    cut = {k: v[:-1] for k, v in flat.items()}
    res = run_backtest(short["ts"], short["open"], short["high"], short["low"], short["close"],
                       pos, BacktestConfig(), regimes=cut)  # fmt: skip
    assert res.metrics["trades"] == 0
