"""Look-ahead and recursion checks catch strategies that read the future or remember where
the history starts, and pass the built-ins and ordinary specs (real daily data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from compute.backtest.lookahead import (
    check_plugin,
    check_strategy,
    default_cuts,
    default_offsets,
    same_compiled_lengths,
)
from compute.backtest.plugins import BUILTINS, strategy
from compute.core.inputs import bucket
from compute.strategy.plugin import spec_plugin
from compute.strategy.spec import parse_spec
from tests.compute.conftest import load_candles, random_candles


@pytest.fixture(scope="module")
def btc() -> dict[str, np.ndarray]:
    return load_candles("btc_1d")


@strategy(name="centred_mean", warmup=lambda v: 10)
def centred_mean(f: dict, p: dict) -> np.ndarray:
    """Long above a centred 21-bar mean: reads 10 bars of the future."""
    m = pd.Series(f["close"]).rolling(21, center=True, min_periods=1).mean().to_numpy()
    return np.where(np.arange(m.size) >= 10, (f["close"] > m) * 1.0, 0.0)


@strategy(name="next_close")
def next_close(f: dict, p: dict) -> np.ndarray:
    """Long when the next bar closes higher (np.roll reads bar t + 1)."""
    c = f["close"]
    return (np.roll(c, -1) > c) * 1.0


@strategy(name="near_high")
def near_high(f: dict, p: dict) -> np.ndarray:
    """Long within 20 % of the highest close since the first bar: remembers the start."""
    c = f["close"]
    return (c >= 0.8 * np.maximum.accumulate(c)) * 1.0


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtins_pass(btc: dict, name: str) -> None:
    report = check_plugin(BUILTINS[name], btc)
    assert report.passed, report
    assert report.recursion.checked and report.recursion.compared_bars > 1000


@pytest.mark.realdata
def test_a_centred_rolling_mean_is_caught(btc: dict) -> None:
    report = check_plugin(centred_mean, btc)
    assert not report.passed and report.lookahead.flagged
    # the last 10 bars before a cut see a shorter window than with the future present
    assert report.lookahead.cut is not None
    assert report.lookahead.cut - 10 <= report.lookahead.first_bar < report.lookahead.cut
    assert report.as_dict()["lookahead"]["flagged"] is True


@pytest.mark.realdata
def test_the_next_bars_close_is_caught(btc: dict) -> None:
    report = check_plugin(next_close, btc)
    assert not report.passed and report.lookahead.flagged
    assert report.lookahead.first_bar == report.lookahead.cut - 1  # the bar before the cut


@pytest.mark.realdata
def test_a_spec_reading_the_next_bar_is_caught(btc: dict) -> None:
    """The rule language rejects negative lags; parsed with allow_future, the dynamic check
    catches the same look-ahead."""
    raw = {"long_entry": "close[-1] > close", "long_exit": "close[-1] <= close"}
    with pytest.raises(ValueError, match="future"):
        parse_spec(raw)
    plugin = spec_plugin(parse_spec(raw, allow_future=True))
    report = check_plugin(plugin, btc)
    assert report.lookahead.flagged and report.lookahead.first_bar == report.lookahead.cut - 1


@pytest.mark.realdata
def test_memory_of_the_start_is_caught_and_ordinary_specs_pass(btc: dict) -> None:
    report = check_plugin(near_high, btc)
    assert not report.lookahead.flagged  # it is causal...
    assert report.recursion.flagged and report.recursion.share > 0.01  # ...but not recursive-safe
    spec = spec_plugin({"long_entry": "ema:12 > ema:26 and rsi:14 < 70",
                        "long_exit": "close < bb_lower:20:2", "trailing_stop": {"atr": 3},
                        "short_entry": "macd:12:26:9.hist < 0 and trend == 0"})  # fmt: skip
    report = check_plugin(spec, btc)
    assert report.passed, report


def test_cuts_share_compiled_lengths_and_pass_the_warmup() -> None:
    for length, warm in ((3064, 25), (1000, 269), (100_000, 30), (40, 30)):
        cuts = default_cuts(length, warm)
        assert cuts[-1] == length - 1 and all(c >= min(warm + 2, length - 1) for c in cuts)
        assert len({bucket(c) for c in cuts}) <= 2
        offsets = default_offsets(length)
        assert len({bucket(length - s) for s in offsets}) <= 1
        lo, hi = same_compiled_lengths(length)
        assert bucket(lo) == bucket(hi) == bucket(length) != bucket(hi + 1)
        assert lo == 1 or bucket(lo - 1) < bucket(length)


def test_a_short_history_skips_the_recursion_check() -> None:
    d = random_candles(60, seed=1)
    report = check_strategy(lambda f: (f["close"] > 0) * 1.0, d, warmup=20)
    assert report.passed and not report.recursion.checked and report.notes
