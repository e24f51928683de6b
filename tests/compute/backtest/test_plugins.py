"""The plugin interface: the built-ins as plugins give the strategies' positions unchanged; a
function plugin is validated like a built-in; a spec is a plugin too."""

from __future__ import annotations

import numpy as np
import pytest

from compute.backtest.plugins import BUILTINS, Plugin, StrategyPlugin, frame, strategy
from compute.backtest.strategies import STRATEGIES, StrategyError, positions, required_bars
from compute.indicators.registry import Param
from compute.strategy.plugin import spec_plugin
from tests.compute.conftest import random_candles

PARAMS = {
    "buy_and_hold": {},
    "ema_cross": {"fast": 5, "slow": 20, "long_only": 1},
    "rsi_mr": {"n": 10, "lower": 25, "upper": 75},
    "bb_break": {"n": 15, "k": 1.5, "vol_gate": 1},
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_builtins_are_plugins_with_unchanged_results(name: str) -> None:
    d = random_candles(600, seed=11, vol=0.02)
    plugin = BUILTINS[name]
    assert isinstance(plugin, StrategyPlugin)
    got = plugin.positions(d, PARAMS[name])
    want = positions(name, PARAMS[name], d["open"], d["high"], d["low"], d["close"])
    assert np.array_equal(got, want)
    assert plugin.required_bars(PARAMS[name]) == required_bars(name, PARAMS[name])
    assert plugin.held_from_start == (name == "buy_and_hold")
    assert plugin.describe()["params"] == STRATEGIES[name].describe()["params"]


@strategy(
    name="sma_trend",
    version="1.0",
    params=(Param("n", int, 50, 2, 1000, "SMA window"),),
    warmup=lambda v: int(v["n"]) - 1,
)
def sma_trend(f: dict, p: dict) -> np.ndarray:
    """Long while the close is above its simple moving average."""
    c, n = f["close"], p["n"]
    sma = np.convolve(c, np.ones(n) / n)[: c.size]
    return np.where(np.arange(c.size) >= n - 1, (c > sma) * 1.0, 0.0)


def test_a_function_plugin_is_validated_like_a_builtin() -> None:
    d = random_candles(300, seed=2)
    assert isinstance(sma_trend, Plugin) and sma_trend.summary.startswith("Long while")
    pos = sma_trend.positions(d, {"n": 20})
    sma = np.array([d["close"][t - 19 : t + 1].mean() for t in range(19, 300)])
    assert np.array_equal(pos[19:], (d["close"][19:] > sma) * 1.0) and (pos[:19] == 0).all()
    assert sma_trend.validate() == {"n": 50} and sma_trend.required_bars({"n": 20}) == 21
    with pytest.raises(StrategyError, match=r"unknown parameter\(s\) \['m'\]"):
        sma_trend.positions(d, {"m": 3})
    with pytest.raises(StrategyError, match=r"n must be in \[2, 1000\]"):
        sma_trend.positions(d, {"n": 1})


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda c: c[:-1] * 0, r"shape \(299,\), expected \(300,\)"),
        (lambda c: np.where(c > c[0], np.nan, 0.0), "not a finite weight"),
        (lambda c: c * 0 + 11, r"not a finite weight in \[-10, 10\]"),
        (lambda c: ["long"] * c.size, "non-numeric"),
        (lambda c: 1 / 0, "failed: ZeroDivisionError"),
    ],
)
def test_bad_plugin_output_is_reported_with_the_plugins_name(output: object, message: str) -> None:
    bad = Plugin("broken", lambda f, p: output(f["close"]))  # type: ignore[operator]
    with pytest.raises(StrategyError, match=f"'broken'.*{message}|{message}"):
        bad.positions(random_candles(300, seed=1), {})


def test_a_spec_is_a_plugin() -> None:
    plugin = spec_plugin({"name": "x", "long_entry": "ema:{fast} > ema:{slow}",
                          "long_exit": "ema:{fast} <= ema:{slow}",
                          "stop_loss": {"pct": "{sl}"},
                          "params": {"fast": 12, "slow": 26, "sl": 0.05}})  # fmt: skip
    assert isinstance(plugin, StrategyPlugin) and plugin.name == "x"
    described = {p["name"]: p for p in plugin.describe()["params"]}
    assert described["fast"]["type"] == "int" and described["fast"]["min"] == 1
    assert described["sl"]["type"] == "float" and described["sl"]["max"] == 0.999
    assert plugin.validate({"fast": 5.0}) == {"fast": 5, "slow": 26, "sl": 0.05}
    assert plugin.warmup() == 25 and plugin.required_bars({"slow": 40}) == 41
    d = random_candles(400, seed=5)
    ema = BUILTINS["ema_cross"].positions(d, {"long_only": 1})
    no_stop = spec_plugin({"long_entry": "ema:12 > ema:26", "long_exit": "ema:12 <= ema:26"})
    assert np.array_equal(no_stop.positions(d), ema)
    assert plugin.version.startswith("spec-") and plugin.version != no_stop.version


def test_frame_validates_one_series() -> None:
    d = random_candles(10)
    f = frame(d["open"], d["high"], d["low"], d["close"], d["volume"], d["ts"])
    assert set(f) == {"open", "high", "low", "close", "volume", "ts"}
    with pytest.raises(ValueError, match="close above high"):
        frame(d["open"], d["high"], d["low"], d["high"] * 2)


def test_walk_forward_takes_plugins_and_specs() -> None:
    """A fold evaluated with a spec equal to ema_cross (long-only) and with the built-in's name
    chooses the same parameters and gets the same out-of-sample returns."""
    from compute.backtest.engine import BacktestConfig
    from compute.backtest.walkforward import evaluate_fold, make_folds

    d = random_candles(900, seed=3, vol=0.01)
    fold = make_folds(900, 400, 200, 200, purge=5)[0]
    cfg = BacktestConfig(fee_bps=5)
    grid = [{"fast": 5, "slow": 20}, {"fast": 10, "slow": 40}]
    builtin = evaluate_fold(fold, d, "ema_cross", [{**g, "long_only": 1} for g in grid], cfg)
    spec = spec_plugin({"long_entry": "ema:{fast} > ema:{slow}",
                        "long_exit": "ema:{fast} <= ema:{slow}"})  # fmt: skip
    mine = evaluate_fold(fold, d, spec, grid, cfg)
    assert mine["params"] == {k: builtin["params"][k] for k in ("fast", "slow")}
    assert np.array_equal(mine["oos_returns"], builtin["oos_returns"])
    assert mine["is_scores"] == builtin["is_scores"]
    plugin = evaluate_fold(fold, d, sma_trend, [{"n": 10}, {"n": 30}], cfg)
    assert plugin["params"]["n"] in (10, 30) and plugin["oos_returns"].size == 199


def test_plugins_and_specs_pickle_for_workers() -> None:
    import pickle

    d = random_candles(300, seed=6)
    spec = spec_plugin({"long_entry": "rsi:{n} < 30", "long_exit": "rsi:{n} > 50",
                        "stop_loss": {"pct": 0.03}, "params": {"n": 10}})  # fmt: skip
    for plugin, params in ((spec, {"n": 7}), (BUILTINS["rsi_mr"], {}), (sma_trend, {"n": 9})):
        again = pickle.loads(pickle.dumps(plugin))
        assert np.array_equal(again.positions(d, params), plugin.positions(d, params))
    assert pickle.loads(pickle.dumps(BUILTINS["ema_cross"])) is BUILTINS["ema_cross"]
    assert pickle.loads(pickle.dumps(sma_trend)) is sma_trend  # by reference to its module
