"""The backtest engine against hand-computed ledgers, the plain-Python reference, textbook
metrics on the real daily files, and its own accounting identities (trades and regimes sum up).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from compute.backtest import reference as ref
from compute.backtest.engine import BacktestConfig, periods_per_year, run_backtest
from compute.core.errors import ComputeError, InputDataError, SpecError
from tests.compute.conftest import data_dir, random_candles

FLAT = {"vol": np.ones(4, np.int8), "trend": np.ones(4, np.int8)}


def tiny(
    target: list[float], config: BacktestConfig, funding: list[float] | None = None
) -> tuple[dict[str, np.ndarray], object]:
    """Four daily bars: 100 -> 110 intrabar, a gap to 120, then flat."""
    c = {
        "ts": 1_700_000_000 + 86_400 * np.arange(4),
        "open": np.array([100.0, 100.0, 120.0, 120.0]),
        "high": np.array([105.0, 110.0, 120.0, 120.0]),
        "low": np.array([95.0, 100.0, 120.0, 120.0]),
        "close": np.array([100.0, 110.0, 120.0, 120.0]),
    }
    res = run_backtest(
        c["ts"],
        c["open"],
        c["high"],
        c["low"],
        c["close"],
        np.array(target),
        config,
        funding_rate=None if funding is None else np.array(funding),
        regimes=FLAT,
    )
    return c, res


# --- timing --------------------------------------------------------------------------------


def test_signal_on_last_bar_opens_nothing() -> None:
    _, res = tiny([0, 0, 0, 1], BacktestConfig(fee_bps=10))
    assert res.trades == []
    assert np.array_equal(res.equity["equity"], np.ones(4))
    assert res.metrics["trades"] == 0 and res.metrics["fees_paid"] == 0.0
    assert res.metrics["exposure"] == 0.0


def test_signal_executes_at_next_open_not_at_signal_close() -> None:
    c, res = tiny([0, 1, 0, 0], BacktestConfig())
    assert res.equity["position"].tolist() == [0.0, 0.0, 1.0, 0.0]
    (trade,) = res.trades
    assert trade["entry_ts"] == c["ts"][2] and trade["entry_price"] == 120.0
    assert trade["exit_ts"] == c["ts"][3] and trade["exit_price"] == 120.0
    # bought at bar 2's open (120), not bar 1's close (110): nothing gained
    assert res.equity["equity"][-1] == pytest.approx(1.0, abs=1e-15)


def test_future_prices_do_not_change_the_past() -> None:
    """Perturb every bar after k: equity, positions and vol-target weights up to k are equal."""
    d = random_candles(400, seed=5)
    target = np.sign(np.sin(np.arange(400) / 9.0))
    cfg = BacktestConfig(
        sizing="vol_target",
        target_vol=0.3,
        vol_lookback=20,
        max_leverage=2.0,
        fee_bps=5,
        periods_per_year=8760,
    )
    k = 250
    bumped = {key: v.copy() for key, v in d.items()}
    for key in ("open", "high", "low", "close"):
        bumped[key][k + 1 :] *= 1.3
    runs = [
        run_backtest(
            x["ts"],
            x["open"],
            x["high"],
            x["low"],
            x["close"],
            target,
            cfg,
            regimes={"vol": np.zeros(400, np.int8), "trend": np.zeros(400, np.int8)},
        )
        for x in (d, bumped)
    ]
    a, b = (r.equity for r in runs)
    assert np.array_equal(a["equity"][: k + 1], b["equity"][: k + 1])
    assert np.array_equal(a["position"][: k + 2], b["position"][: k + 2])


# --- costs and funding by hand --------------------------------------------------------------


def test_fees_by_hand() -> None:
    _, res = tiny([1, 1, 0, 0], BacktestConfig(fee_bps=10))
    # buy with all equity at 100: pay 0.1% on the bought notional b, b + 0.001 b = 1
    bought = 1 / 1.001
    # hold through 110 and the gap to 120; sell everything at 120, pay 0.1%
    final = bought * 1.2 * 0.999
    assert res.equity["equity"].tolist() == pytest.approx(
        [1.0, bought * 1.1, bought * 1.2, final], rel=1e-14
    )
    assert res.metrics["fees_paid"] == pytest.approx(
        0.001 * bought + 0.001 * bought * 1.2, rel=1e-13
    )
    (trade,) = res.trades
    assert trade["pnl"] == pytest.approx(final - 1.0, rel=1e-12)
    assert trade["fees"] == pytest.approx(res.metrics["fees_paid"], rel=1e-13)
    assert trade["bars_held"] == 2 and not trade["open"]
    assert res.metrics["turnover"] == pytest.approx(bought + 1.0, rel=1e-13)


def test_slippage_bps_and_range_by_hand() -> None:
    # 10 bps fee + 20 bps fixed + 10% of bar 0's range (105 - 95) / 100 = 1% on the entry
    cfg = BacktestConfig(fee_bps=10, slippage_bps=20, slippage_range_frac=0.1)
    _, res = tiny([1, 1, 0, 0], cfg)
    entry_rate = 0.001 + 0.002 + 0.01
    bought = 1 / (1 + entry_rate)
    exit_rate = 0.001 + 0.002 + 0.1 * (120 - 120) / 120  # the exit's signal bar 2 has no range
    final = bought * 1.2 * (1 - exit_rate)
    assert res.equity["equity"][-1] == pytest.approx(final, rel=1e-14)
    assert res.metrics["slippage_paid"] == pytest.approx(
        0.012 * bought + 0.002 * bought * 1.2, rel=1e-13
    )
    assert res.metrics["fees_paid"] == pytest.approx(0.001 * bought * (1 + 1.2), rel=1e-13)


def test_funding_long_pays_short_receives() -> None:
    rate = [0.0, 0.0, 0.0001, 0.0]  # settles at bar 2's close, on a 1.2 position
    _, long_ = tiny([1, 1, 0, 0], BacktestConfig(), funding=rate)
    assert long_.metrics["funding_paid"] == pytest.approx(0.0001 * 1.2, rel=1e-13)
    assert long_.equity["equity"][-1] == pytest.approx(1.2 - 0.00012, rel=1e-14)
    _, short = tiny([-1, -1, 0, 0], BacktestConfig(), funding=rate)
    # short 1 unit-of-equity at 100, price to 120: equity 1 - 0.2, plus 0.0001 x 1.2 received
    assert short.metrics["funding_paid"] == pytest.approx(-0.0001 * 1.2, rel=1e-13)
    assert short.equity["equity"][-1] == pytest.approx(0.8 + 0.00012, rel=1e-13)
    assert short.trades[0]["side"] == "short"
    assert short.trades[0]["funding"] == pytest.approx(-0.00012, rel=1e-13)


def test_fixed_fraction_keeps_units_until_the_target_changes() -> None:
    _, res = tiny([0.5, 0.5, 0, 0], BacktestConfig(fraction=1.0))
    # half the equity in at 100: 0.005 units; 0.5 cash
    assert res.equity["equity"].tolist() == pytest.approx([1.0, 1.05, 1.1, 1.1], rel=1e-14)
    assert res.metrics["turnover"] == pytest.approx(0.5 + 0.6 / 1.1, rel=1e-13)


# --- against the plain-Python reference ------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [
        BacktestConfig(
            fee_bps=7.5, slippage_bps=3, slippage_range_frac=0.05, periods_per_year=8760
        ),
        BacktestConfig(
            fee_bps=4,
            sizing="vol_target",
            target_vol=0.4,
            vol_lookback=24,
            max_leverage=3.0,
            periods_per_year=8760,
        ),
        BacktestConfig(fee_bps=10, fraction=0.7, max_leverage=2.0, periods_per_year=8760),
    ],
)
def test_kernel_equals_reference_ledger(cfg: BacktestConfig) -> None:
    d = random_candles(300, seed=11)
    rng = np.random.default_rng(2)
    target = np.repeat(rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], 30), 10)
    funding = np.where(np.arange(300) % 8 == 7, rng.normal(1e-4, 2e-4, 300), 0.0)
    regimes = {"vol": np.full(300, 1, np.int8), "trend": np.full(300, 2, np.int8)}
    res = run_backtest(
        d["ts"],
        d["open"],
        d["high"],
        d["low"],
        d["close"],
        target,
        cfg,
        funding_rate=funding,
        regimes=regimes,
    )
    w = ref.weights(
        target,
        d["close"],
        sizing=cfg.sizing,
        fraction=cfg.fraction,
        target_vol=cfg.target_vol,
        vol_lookback=cfg.vol_lookback,
        max_leverage=cfg.max_leverage,
        ppy=cfg.periods_per_year,
    )
    led = ref.simulate(
        d["open"],
        d["high"],
        d["low"],
        d["close"],
        w,
        fee_bps=cfg.fee_bps,
        slippage_bps=cfg.slippage_bps,
        slippage_range_frac=cfg.slippage_range_frac,
        funding=funding,
    )
    np.testing.assert_allclose(res.equity["equity"], led["equity"], rtol=1e-12)
    np.testing.assert_allclose(res.bars["units"], led["units"], rtol=1e-12, atol=1e-20)
    for key, metric in (
        ("fees", "fees_paid"),
        ("slippage", "slippage_paid"),
        ("funding", "funding_paid"),
    ):
        assert res.metrics[metric] == pytest.approx(sum(led[key]), rel=1e-11, abs=1e-15)
    # every trade's pnl is booked somewhere: they add up to the equity's change
    assert sum(t["pnl"] for t in res.trades) == pytest.approx(
        res.equity["equity"][-1] - 1.0, abs=1e-12
    )
    assert sum(t["costs"] for t in res.trades) == pytest.approx(
        res.metrics["fees_paid"] + res.metrics["slippage_paid"], rel=1e-12
    )
    sides = np.sign(led["units"])
    runs = int(((sides != 0) & (sides != np.concatenate([[0.0], sides[:-1]]))).sum())
    assert res.metrics["trades"] == len(res.trades) == runs


def test_regime_stats_sum_to_totals() -> None:
    d = random_candles(600, seed=4)
    target = np.sign(np.sin(np.arange(600) / 15.0))
    res = run_backtest(
        d["ts"],
        d["open"],
        d["high"],
        d["low"],
        d["close"],
        target,
        BacktestConfig(fee_bps=5, periods_per_year=8760),
    )  # default regimes
    m = res.metrics
    for kind in ("vol", "trend"):
        rows = [r for r in res.regime_stats if r["kind"] == kind]
        assert sum(r["bars"] for r in rows) == m["returns"] == 599
        assert sum(r["trades"] for r in rows) == m["trades"]
        assert sum(r["pnl"] for r in rows) == pytest.approx(m["final_equity"] - 1.0, abs=1e-12)
        assert math.prod(1 + r["return"] for r in rows) == pytest.approx(
            1 + m["total_return"], rel=1e-12
        )
        assert sum(r["bars_in_market"] for r in rows) == round(m["exposure"] * 599)
        for r in rows:
            assert r["sufficient"] == (r["bars"] >= 30 and r["trades"] >= 5)
    assert {r["regime"] for r in res.regime_stats if r["kind"] == "vol"} >= {
        "LOW",
        "NORMAL",
        "HIGH",
    }


# --- buy-and-hold on the real daily files vs a textbook computation --------------------------


def _textbook(r: pd.Series, ppy: float) -> dict[str, float]:
    """Close-to-close metrics as a textbook (or a spreadsheet) computes them."""
    eq = pd.concat([pd.Series([1.0]), (1 + r).cumprod()], ignore_index=True)
    dd = eq / eq.cummax() - 1
    n = len(r)
    cagr = eq.iloc[-1] ** (ppy / n) - 1
    return {
        "total_return": eq.iloc[-1] - 1,
        "cagr": cagr,
        "annual_volatility": r.std(ddof=1) * math.sqrt(ppy),
        "sharpe": r.mean() / r.std(ddof=1) * math.sqrt(ppy),
        "sortino": r.mean() / math.sqrt((r.clip(upper=0) ** 2).mean()) * math.sqrt(ppy),
        "max_drawdown": dd.min(),
        "calmar": cagr / abs(dd.min()),
        "time_under_water": float((dd.iloc[1:] < 0).mean()),
    }


@pytest.mark.parametrize(
    "name",
    [
        "binance_spot_BTCUSDT_1d_2017-2026.csv",
        "binance_spot_ETHUSDT_1d_2017-2026.csv",
        "binance_spot_SOLUSDT_1d_2020-2026.csv",
    ],
)
def test_zero_cost_buy_and_hold_reproduces_textbook_metrics(name: str) -> None:
    folder = data_dir()
    if folder is None:
        pytest.skip("real-data folder ../shared/data is absent")
    frame = pd.read_csv(folder / name).iloc[:-1]  # the last bar is still open (SOURCES.md)
    ts = pd.to_datetime(frame["timestamp"], utc=True).dt.as_unit("s").astype("int64")
    o, h, lo, c = (frame[k].to_numpy(float) for k in ("open", "high", "low", "close"))
    n = len(frame)
    res = run_backtest(
        ts.to_numpy(),
        o,
        h,
        lo,
        c,
        np.ones(n),
        BacktestConfig(periods_per_year=365),
        regimes={"vol": np.zeros(n, np.int8), "trend": np.zeros(n, np.int8)},
        hold_from_start=True,
    )
    # held from the first close: every bar after it earns exactly close-to-close
    close_to_close = frame["close"].pct_change().iloc[1:].reset_index(drop=True)
    strat = pd.Series(res.equity["returns"][1:])
    np.testing.assert_allclose(strat, close_to_close, rtol=1e-12, atol=1e-15)
    for key, value in _textbook(close_to_close, 365).items():
        assert res.metrics[key] == pytest.approx(value, rel=1e-9), key
    assert res.metrics["exposure"] == 1.0 and res.metrics["trades"] == 1
    assert res.metrics["open_trades"] == 1 and res.metrics["win_rate"] is None
    assert res.trades[0]["entry_price"] == c[0] and res.trades[0]["entry_ts"] == ts.iloc[0]
    assert res.trades[0]["pnl"] == pytest.approx(c[-1] / c[0] - 1, rel=1e-10)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fee_bps": -1},
        {"slippage_bps": float("nan")},
        {"sizing": "kelly"},
        {"fraction": 2.0},
        {"vol_lookback": 1},
        {"periods_per_year": 0},
        {"max_leverage": 50},
    ],
)
def test_bad_config_is_a_spec_error(kwargs: dict) -> None:
    with pytest.raises(SpecError):
        BacktestConfig(**kwargs)


def test_bad_series_are_input_errors() -> None:
    d = random_candles(10)
    args = (d["ts"], d["open"], d["high"], d["low"], d["close"])
    with pytest.raises(InputDataError, match="target_position"):
        run_backtest(*args, np.ones(9), BacktestConfig())
    with pytest.raises(InputDataError, match="target_position: non-finite"):
        run_backtest(*args, np.full(10, np.nan), BacktestConfig())
    with pytest.raises(InputDataError, match="percent"):
        run_backtest(*args, np.ones(10), BacktestConfig(), funding_rate=np.full(10, 0.5))
    with pytest.raises(InputDataError, match="at least 2"):
        run_backtest(*(a[:1] for a in args), np.ones(1), BacktestConfig())
    with pytest.raises(ComputeError):
        run_backtest(d["ts"][::-1], *args[1:], np.ones(10), BacktestConfig())


def test_periods_per_year() -> None:
    assert periods_per_year(86_400) == 365 and periods_per_year(3_600) == 8_760
    assert periods_per_year(60) == 525_600
