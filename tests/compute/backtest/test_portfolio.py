"""Portfolio backtests: a hand-computed ledger with a missing bar, equality with the slow
NumPy ledger on real BTC/ETH/SOL daily candles (1e-12), contributions that sum to the return,
and a one-coin portfolio equal to the single-coin engine."""

from __future__ import annotations

import numpy as np
import pytest

from compute.backtest import portfolio_reference as ref
from compute.backtest.engine import BacktestConfig, run_backtest
from compute.backtest.plugins import BUILTINS
from compute.backtest.portfolio import (
    PortfolioConfig,
    Schedule,
    align,
    decision_bars,
    momentum_targets,
    run_portfolio,
    strategy_targets,
)
from compute.core.errors import InputDataError, SpecError
from compute.indicators import regimes as reg
from tests.compute.conftest import data_dir, random_candles

DAY = 86_400
T0 = 1_700_006_400  # a midnight UTC


def two_coins() -> dict[str, dict[str, np.ndarray]]:
    """A on four days; B misses day 2."""
    a = {"ts": T0 + DAY * np.arange(4), "open": [100.0, 100, 110, 121],
         "close": [100.0, 110, 121, 121]}  # fmt: skip
    b = {"ts": T0 + DAY * np.array([0, 1, 3]), "open": [50.0, 50, 45], "close": [50.0, 40, 45]}
    for c in (a, b):
        c["high"] = np.maximum(c["open"], c["close"])
        c["low"] = np.minimum(c["open"], c["close"])
    return {"A": a, "B": b}


def test_a_missing_bar_by_hand() -> None:
    """Half in each from day 0's close. Day 2: B has no bar, so only A is rebalanced (B's units
    carry, marked at 40); day 3 B returns at 45 and both are reset to half of 1.0475."""
    aligned = align(two_coins())
    assert aligned.present.tolist() == [[True] * 4, [True, True, False, True]]
    res = run_portfolio(aligned, np.full((2, 4), 0.5), Schedule(), PortfolioConfig())
    np.testing.assert_allclose(res.equity["equity"], [1.0, 0.95, 0.9975, 1.0475], rtol=1e-15)
    units = res.bars["units"]
    np.testing.assert_allclose(units[:, 1], [0.005, 0.01], rtol=1e-15)
    np.testing.assert_allclose(units[:, 2], [0.475 / 110, 0.01], rtol=1e-15)  # B did not trade
    np.testing.assert_allclose(units[:, 3], [0.52375 / 121, 0.52375 / 45], rtol=1e-14)
    np.testing.assert_allclose(res.contributions[:, 1], [0.05, -0.1], rtol=1e-14)
    np.testing.assert_allclose(res.contributions[:, 2], [0.05, 0.0], atol=1e-16)
    np.testing.assert_allclose(res.contributions[:, 3], [0.0, 0.05 / 0.9975], atol=1e-16)
    assert res.assets[1]["bars_present"] == 3
    assert aligned.frame(1)["close"].tolist() == [50.0, 40, 45] and "volume" not in aligned.frame(1)
    inter = align(two_coins(), how="intersection")
    assert inter.ts.tolist() == [T0, T0 + DAY, T0 + 3 * DAY] and inter.present.all()


def test_costs_are_solved_exactly_for_all_legs() -> None:
    """With costs, each traded leg is exactly its weight of the post-cost equity."""
    aligned = align(two_coins())
    cfg = PortfolioConfig(fee_bps={"A": 10, "B": 30}, slippage_bps=5)
    res = run_portfolio(aligned, np.array([[0.7] * 4, [-0.3] * 4]), Schedule(), cfg)
    b = res.bars
    for t in (1, 3):  # both legs traded
        e_net = b["equity_open"][t] - b["costs"][:, t].sum()
        value = b["units"][:, t] * b["p_open"][:, t]
        np.testing.assert_allclose(value, [0.7 * e_net, -0.3 * e_net], rtol=1e-14)
    np.testing.assert_allclose(b["costs"][:, 1], np.abs(b["orders"][:, 1]) * [15e-4, 35e-4])


def load_daily(*coins: str) -> dict[str, dict[str, np.ndarray]]:
    import pandas as pd

    folder = data_dir()
    if folder is None:
        pytest.skip("real-data folder ../shared/data is absent")
    out = {}
    for coin in coins:
        path = next(folder.glob(f"binance_spot_{coin}USDT_1d_*.csv"), None)
        if path is None:
            pytest.skip(f"no daily file for {coin}")
        frame = pd.read_csv(path).iloc[:-1]  # the last bar is still open (SOURCES.md)
        ts = pd.to_datetime(frame["timestamp"], utc=True).dt.as_unit("s").astype("int64")
        out[coin] = {k: frame[k].to_numpy(np.float64) for k in ("open", "high", "low", "close")}
        out[coin]["ts"] = ts.to_numpy(np.int64)
    return out


@pytest.fixture(scope="module")
def daily() -> dict[str, dict[str, np.ndarray]]:
    return load_daily("BTC", "ETH", "SOL")


def assert_equal_to_reference(res: object, expected: dict, coins: list[str]) -> None:
    eq = np.asarray(expected["equity"])
    np.testing.assert_allclose(res.equity["equity"], eq, rtol=1e-12, atol=0)  # type: ignore[attr-defined]
    contrib = np.array([expected["contributions"][c] for c in coins])
    np.testing.assert_allclose(res.contributions, contrib, rtol=0, atol=1e-12)  # type: ignore[attr-defined]


@pytest.mark.realdata
def test_momentum_top2_monthly_equals_the_reference_on_real_data(daily: dict) -> None:
    coins = list(daily)
    aligned = align(daily)
    assert aligned.present[2, 0] == np.False_ and aligned.present[2, -1]  # SOL lists in 2020
    targets = momentum_targets(aligned, lookback=30, top_k=2)
    want = ref.momentum_targets(daily, 30, 2)
    np.testing.assert_array_equal(targets, np.array([want[c] for c in coins]))
    fees = {"BTC": 10.0, "ETH": 12.0, "SOL": 20.0}
    cfg = PortfolioConfig(fee_bps=fees, slippage_bps=2.0)
    res = run_portfolio(aligned, targets, Schedule("monthly"), cfg)
    expected = ref.run_portfolio_reference(daily, want, schedule="monthly", fee_bps=fees,
                                           slippage_bps=2.0)  # fmt: skip
    assert_equal_to_reference(res, expected, coins)
    assert 90 <= res.metrics["rebalances"] <= 101  # one per month since 2017-08
    assert res.metrics["total_return"] != 0 and res.metrics["costs_paid"] > 0
    assert all(a["pnl"] != 0 for a in res.assets)


@pytest.mark.realdata
def test_per_coin_strategies_weekly_long_short_with_funding(daily: dict) -> None:
    coins = list(daily)
    aligned = align(daily)
    own = {c: BUILTINS["ema_cross"].positions(aligned.frame(i), {"fast": 10, "slow": 30})
           for i, c in enumerate(coins)}  # fmt: skip
    targets = strategy_targets(aligned, [own[c] for c in coins])
    want = ref.strategy_targets(daily, own)
    np.testing.assert_array_equal(targets, np.array([want[c] for c in coins]))
    rng = np.random.default_rng(0)
    funding = np.where(np.arange(aligned.ts.size) % 3 == 0, rng.normal(1e-4, 2e-4, (3, 1)), 0.0)
    cfg = PortfolioConfig(fee_bps=5.0, max_gross=1.5, resize=False)
    res = run_portfolio(aligned, targets, Schedule("weekly"), cfg, funding_rate=funding)
    expected = ref.run_portfolio_reference(
        daily, want, schedule="weekly", fee_bps=dict.fromkeys(coins, 5.0), max_gross=1.5,
        resize=False, funding={c: funding[i] * aligned.present[i] for i, c in enumerate(coins)},
    )  # fmt: skip
    assert_equal_to_reference(res, expected, coins)
    assert res.metrics["net_exposure_avg"] < res.metrics["gross_exposure_avg"]  # shorts held
    assert res.metrics["funding_paid"] != 0


@pytest.mark.realdata
def test_every_n_bars_long_short_momentum(daily: dict) -> None:
    coins = list(daily)
    aligned = align(daily)
    targets = momentum_targets(aligned, lookback=14, top_k=1, short_k=1)
    want = ref.momentum_targets(daily, 14, 1, 1)
    np.testing.assert_array_equal(targets, np.array([want[c] for c in coins]))
    res = run_portfolio(aligned, targets, Schedule("bars", 5), PortfolioConfig(max_gross=2.0))
    expected = ref.run_portfolio_reference(daily, want, every=5, max_gross=2.0)
    assert_equal_to_reference(res, expected, coins)
    np.testing.assert_allclose(res.contributions.sum(axis=0), res.equity["returns"], atol=1e-14)
    labels = {"vol": reg.vol_regime(aligned.mark[0]), "trend": reg.trend(
        aligned.high[0], aligned.low[0], aligned.close[0])[1]}  # fmt: skip
    res = run_portfolio(aligned, targets, Schedule("bars", 5), PortfolioConfig(max_gross=2.0),
                        regimes=labels)  # fmt: skip
    for kind in ("vol", "trend"):
        rows = [r for r in res.regime_stats if r["kind"] == kind]
        assert sum(r["bars"] for r in rows) == aligned.ts.size - 1
        total = sum(r["log_return"] for r in rows)
        assert total == pytest.approx(np.log1p(res.metrics["total_return"]), abs=1e-9)


def test_a_one_coin_portfolio_is_the_single_coin_engine() -> None:
    d = random_candles(800, seed=4, vol=0.02)
    pos = BUILTINS["ema_cross"].positions(d, {"fast": 5, "slow": 20})
    aligned = align({"X": d})
    cfg = PortfolioConfig(fee_bps=10, slippage_bps=3, resize=False, max_gross=1.0)
    res = run_portfolio(aligned, pos[None, :], Schedule(), cfg)
    single = run_backtest(d["ts"], d["open"], d["high"], d["low"], d["close"], pos,
                          BacktestConfig(fee_bps=10, slippage_bps=3))  # fmt: skip
    np.testing.assert_allclose(res.equity["equity"], single.equity["equity"], rtol=1e-12)
    assert res.metrics["turnover"] == pytest.approx(single.metrics["turnover"], rel=1e-12)


def test_windows_start_flat_with_fresh_capital() -> None:
    d = random_candles(300, seed=5)
    aligned = align({"X": d})
    pos = np.ones((1, 300))
    res = run_portfolio(aligned, pos, Schedule(), PortfolioConfig(), window=(100, 200))
    assert res.equity["ts"][0] == d["ts"][100] and res.equity["equity"].size == 100
    assert res.bars["units"][0, 0] == 0.0 and res.bars["units"][0, 1] > 0
    np.testing.assert_allclose(res.equity["equity"][-1], d["close"][199] / d["open"][101])


def test_schedules() -> None:
    days = ("2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02", "2024-02-29", "2024-03-01")
    ts = np.array([np.datetime64(s, "s").astype(np.int64) for s in days])
    assert decision_bars(ts, Schedule("monthly")).tolist() == [0, 1, 0, 0, 1, 0]
    # Tue 01-30 ... Fri 02-02 are one week; Thu 02-29 and Fri 03-01 another
    assert decision_bars(ts, Schedule("weekly")).tolist() == [0, 0, 0, 1, 0, 0]
    assert decision_bars(ts, Schedule("bars", 2)).tolist() == [1, 0, 1, 0, 1, 0]
    with pytest.raises(SpecError, match="schedule must be one of"):
        Schedule("daily")


def test_bad_inputs_say_what_is_wrong() -> None:
    aligned = align(two_coins())
    with pytest.raises(InputDataError, match=r"expected shape \(2, 4\)"):
        run_portfolio(aligned, np.zeros((3, 4)), Schedule(), PortfolioConfig())
    with pytest.raises(InputDataError, match="for B at bar 2"):
        run_portfolio(aligned, np.array([[0.0] * 4, [0, 0, np.nan, 0]]), Schedule(),
                      PortfolioConfig())  # fmt: skip
    with pytest.raises(SpecError, match="unknown coin"):
        run_portfolio(aligned, np.zeros((2, 4)), Schedule(), PortfolioConfig(fee_bps={"C": 1}))
    with pytest.raises(SpecError, match="max_gross"):
        PortfolioConfig(max_gross=20)
    with pytest.raises(InputDataError, match="B: close above high"):
        bad = two_coins()
        bad["B"]["close"] = [60.0, 40, 45]
        align(bad)
