"""Walk-forward splits, selection on train, stitching and the decay rule."""

from __future__ import annotations

import numpy as np
import pytest

from compute.backtest.engine import BacktestConfig
from compute.backtest.walkforward import decay_report, evaluate_fold, make_folds, stitch
from compute.core.errors import InputDataError, SpecError
from tests.compute.conftest import random_candles


@pytest.mark.parametrize("anchored", [False, True])
@pytest.mark.parametrize(
    ("n", "train", "test", "step", "purge"),
    [(500, 100, 50, 50, 5), (300, 60, 40, 17, 0), (1000, 200, 100, 30, 24)],
)
def test_folds_never_overlap_and_respect_the_purge(n, train, test, step, purge, anchored) -> None:
    folds = make_folds(n, train, test, step, purge, anchored)
    assert len(folds) == (n - train - purge - test) // step + 1
    for k, f in enumerate(folds):
        train_bars = set(range(f.train_start, f.train_end))
        test_bars = set(range(f.test_start, f.test_end))
        assert not train_bars & test_bars
        assert f.test_start - f.train_end == purge  # the purge gap, exactly
        assert max(train_bars) + purge < min(test_bars)
        assert f.test_end - f.test_start == test and f.test_end <= n
        assert f.train_start == (0 if anchored else k * step)
        assert f.train_end == train + k * step


def test_fold_errors_say_what_to_fix() -> None:
    with pytest.raises(
        InputDataError, match="needs train \\+ purge \\+ test = 100 \\+ 10 \\+ 50 = 160"
    ):
        make_folds(150, 100, 50, 10, 10)
    with pytest.raises(InputDataError, match="raise step"):
        make_folds(100_000, 100, 50, 1)
    with pytest.raises(SpecError, match="step"):
        make_folds(500, 100, 50, 0)


def test_evaluate_fold_picks_the_train_best_and_checks_regimes() -> None:
    d = random_candles(700, seed=8, vol=0.004)
    n = 700
    regimes = {"vol": np.tile(np.int8([0, 1, 2]), 234)[:n], "trend": np.ones(n, np.int8)}
    fold = make_folds(n, 400, 200, 100, 10)[0]
    grid = [{"fast": f, "slow": s, "long_only": 1} for f, s in ((3, 10), (5, 30), (10, 50))]
    cfg = BacktestConfig(fee_bps=5, periods_per_year=8760)
    res = evaluate_fold(fold, d, "ema_cross", grid, cfg, "total_return", regimes=regimes)
    scores = res["is_scores"]
    assert res["params"] == {**grid[int(np.argmax(scores))], "vol_gate": 0}
    assert res["is_metrics"]["total_return"] == pytest.approx(max(scores))
    assert len(res["oos_returns"]) == 199 and res["oos_ts"][0] == d["ts"][fold.test_start + 1]
    vol = [c for c in res["regime_checks"] if c["kind"] == "vol"]
    assert sum(c["bars"] for c in vol) == 199
    assert all(c["insufficient"] == (c["bars"] < 30 or c["trades"] < 5) for c in vol)
    with pytest.raises(SpecError, match="objective"):
        evaluate_fold(fold, d, "ema_cross", grid, cfg, "alpha")


def test_stitch_chains_returns_and_skips_overlap() -> None:
    a = {"oos_ts": np.array([1, 2, 3]), "oos_returns": np.array([0.1, -0.1, 0.2])}
    b = {"oos_ts": np.array([3, 4]), "oos_returns": np.array([0.5, 0.1])}
    out = stitch([a, b], 365)
    assert out["ts"].tolist() == [1, 2, 3, 4]
    assert out["equity"][-1] == pytest.approx(1.1 * 0.9 * 1.2 * 1.1)
    assert out["metrics"]["total_return"] == pytest.approx(1.1 * 0.9 * 1.2 * 1.1 - 1)


def _fold(is_v: float, oos_v: float) -> dict:
    return {"is_metrics": {"sharpe": is_v}, "oos_metrics": {"sharpe": oos_v}}


def test_decay_rule() -> None:
    steady = decay_report([_fold(2.0, 1.6), _fold(2.0, 1.5), _fold(2.0, 1.7), _fold(2.0, 1.6)])
    assert steady["oos_is_ratio"] == pytest.approx([0.8, 0.75, 0.85, 0.8])
    assert not steady["fading"]
    low = decay_report([_fold(2.0, 0.5), _fold(2.0, 0.6), _fold(2.0, 0.4)])
    assert low["median_ratio"] == pytest.approx(0.25) and low["fading"]
    falling = decay_report(
        [_fold(2.0, 2.0), _fold(2.0, 1.9), _fold(2.0, 1.5), _fold(2.0, 1.3), _fold(2.0, 1.1)]
    )
    assert falling["oos_slope"] == pytest.approx(-0.24) and falling["oos_slope_t"] < -2
    assert falling["fading"]
    assert decay_report([_fold(-1.0, 0.5), _fold(None, 0.1)])["oos_is_ratio"] == [None, None]


@pytest.mark.parametrize(
    ("anchored", "purge", "objective", "funded"),
    [(False, 0, "sharpe", False), (True, 3, "calmar", True), (False, 7, "sortino", True)],
)
def test_batched_folds_equal_fold_by_fold_bit_for_bit(
    anchored: bool, purge: int, objective: str, funded: bool
) -> None:
    """evaluate_folds (one batched scan for every train window, one for every test window)
    gives exactly evaluate_fold's answers: chosen parameters, scores, metrics, OOS returns,
    trades and regime checks, on real daily BTC."""
    import json

    from compute.backtest.strategies import validate_strategy
    from compute.backtest.walkforward import evaluate_folds
    from compute.indicators import regimes
    from tests.compute.conftest import load_candles

    c = load_candles("btc_1d")
    candles = {k: c[k] for k in ("ts", "open", "high", "low", "close")}
    config = BacktestConfig(fee_bps=10, slippage_bps=2, periods_per_year=365)
    labels = {
        "vol": regimes.vol_regime(c["close"]),
        "trend": regimes.trend(c["high"], c["low"], c["close"])[1],
    }
    funding = None
    if funded:
        funding = np.where(np.arange(len(c["close"])) % 3 == 0, 1e-4, 0.0)
    grid = [
        validate_strategy("ema_cross", {"fast": f, "slow": s}) for f in (5, 12) for s in (40, 90)
    ]
    folds = make_folds(len(c["close"]), 600, 150, 150, purge, anchored)
    one = [
        evaluate_fold(f, candles, "ema_cross", grid, config, objective, regimes=labels,
                      funding_rate=funding)
        for f in folds
    ]  # fmt: skip
    many = evaluate_folds(
        folds, candles, "ema_cross", grid, config, objective, regimes=labels, funding_rate=funding
    )

    def text(x: object) -> str:
        return json.dumps(x, sort_keys=True, default=lambda a: np.asarray(a).tolist())

    assert len(many) == len(one) > 10
    assert [text(m) for m in many] == [text(o) for o in one]
    assert len({text(m["params"]) for m in many}) > 1  # the choice really varies by fold
