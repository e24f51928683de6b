"""The strategy catalogue: validation messages, warm-ups, and positions from the signals."""

from __future__ import annotations

import numpy as np
import pytest

from compute.backtest.engine import BacktestConfig, run_backtest
from compute.backtest.strategies import STRATEGIES, positions, required_bars, validate_strategy
from compute.core.errors import InputDataError, SpecError
from compute.indicators import signals
from tests.compute.conftest import random_candles


def test_defaults_are_filled_in() -> None:
    assert validate_strategy("ema_cross", {"fast": 5}) == {
        "fast": 5,
        "slow": 26,
        "long_only": 0,
        "vol_gate": 0,
    }
    assert validate_strategy("buy_and_hold") == {}
    assert validate_strategy("rsi_mr", {"n": 14.0})["n"] == 14


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("macd_magic", {}, "(?s)unknown strategy 'macd_magic'.*ema_cross"),
        ("ema_cross", {"fats": 5}, r"unknown parameter\(s\) \['fats'\].*fast=12"),
        ("ema_cross", {"fast": 30, "slow": 20}, "fast must be smaller than slow"),
        ("ema_cross", {"fast": 0}, r"fast must be in \[1, 100000\]"),
        ("ema_cross", {"fast": 2.5}, "fast must be an integer"),
        ("bb_break", {"k": "wide"}, "k must be a number"),
    ],
)
def test_invalid_requests_say_what_is_valid(name: str, params: dict, message: str) -> None:
    with pytest.raises(InputDataError, match=message) as info:
        validate_strategy(name, params)
    assert isinstance(info.value, SpecError)


def test_describe_is_json_ready() -> None:
    d = STRATEGIES["ema_cross"].describe()
    assert d["name"] == "ema_cross" and [p["name"] for p in d["params"]][:2] == ["fast", "slow"]


def test_positions_are_the_signals() -> None:
    c = random_candles(200, seed=1)["close"]
    got = positions("ema_cross", {"fast": 5, "slow": 20, "long_only": 1}, c, c, c, c)
    assert np.array_equal(got, signals.ema_crossover(c, 5, 20, long_only=True).astype(float))
    assert np.array_equal(positions("buy_and_hold", {}, c, c, c, c), np.ones(200))


def test_required_bars_is_the_first_traded_bar() -> None:
    need = required_bars("ema_cross", {"fast": 5, "slow": 20})
    assert need == 19 + 2
    d = random_candles(need, seed=2)
    pos = positions(
        "ema_cross", {"fast": 5, "slow": 20}, d["open"], d["high"], d["low"], d["close"]
    )
    assert (pos[:19] == 0).all() and pos[19] != 0
    flat = {"vol": np.zeros(need, np.int8), "trend": np.zeros(need, np.int8)}
    res = run_backtest(
        d["ts"], d["open"], d["high"], d["low"], d["close"], pos, BacktestConfig(), regimes=flat
    )
    assert res.metrics["exposure"] > 0 and res.metrics["trades"] == 1
    shorter = run_backtest(
        *(d[k][:-1] for k in ("ts", "open", "high", "low", "close")),
        pos[:-1],
        BacktestConfig(),
        regimes={k: v[:-1] for k, v in flat.items()},
    )
    assert shorter.metrics["trades"] == 0
    assert required_bars("ema_cross", {"vol_gate": 1}) == 270 + 2
