"""Vectorised metrics vs the loop reference and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compute.backtest import metrics, metrics_reference


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if value is None or b[key] is None or isinstance(value, bool):
            assert value == b[key], key
        else:
            assert value == pytest.approx(b[key], rel=1e-10, abs=1e-14), key


@pytest.mark.parametrize("seed", range(6))
def test_return_metrics_equal_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    r = rng.normal(rng.normal(0, 2e-3), 0.02, n)
    if seed % 2:
        r[rng.random(n) < 0.4] = 0.0  # flat bars: ties at the peak
    _same(metrics.return_metrics(r, 365.0, 0.02), metrics_reference.return_metrics(r, 365.0, 0.02))


@pytest.mark.parametrize(
    "r",
    [[], [0.1], [-0.1], [0.0, 0.0, 0.0], [0.1, 0.2], [-0.5, 1.0, -0.1], [0.1, -0.1, 0.5, -0.2]],
)
def test_edge_cases_equal_reference(r: list[float]) -> None:
    _same(metrics.return_metrics(r, 252.0), metrics_reference.return_metrics(r, 252.0))


def test_hand_computed_drawdown() -> None:
    # equity 1 -> 1.1 -> 0.99 -> 0.891 -> 1.2 -> 1.08: peak 1.1 at 1, trough 0.891 at 3, back at 4
    m = metrics.return_metrics([0.1, -0.1, -0.1, 1.2 / 0.891 - 1, -0.1], 365)
    assert m["max_drawdown"] == pytest.approx(0.891 / 1.1 - 1, rel=1e-12)
    assert m["max_drawdown_peak"] == 1 and m["max_drawdown_trough"] == 3
    assert m["max_drawdown_recovery"] == 4 and m["max_drawdown_duration"] == 3
    assert not m["max_drawdown_open"] and m["drawdown_open"]
    assert m["current_drawdown"] == pytest.approx(-0.1, rel=1e-12)
    assert m["time_under_water"] == pytest.approx(3 / 5)
    assert m["longest_drawdown"] == 3


def test_first_bar_loss_is_a_drawdown_and_open_at_the_end() -> None:
    m = metrics.return_metrics([-0.2, 0.1], 365)
    assert m["max_drawdown"] == pytest.approx(-0.2)
    assert m["max_drawdown_peak"] == 0 and m["max_drawdown_open"]
    assert m["max_drawdown_duration"] == 2


def test_hand_computed_ratios() -> None:
    r = np.array([0.01, -0.02, 0.03, 0.0])
    m = metrics.return_metrics(r, 365)
    mean, sd = 0.005, math.sqrt(((0.005) ** 2 + 0.025**2 + 0.025**2 + 0.005**2) / 3)
    assert m["sharpe"] == pytest.approx(mean / sd * math.sqrt(365), rel=1e-12)
    assert m["sortino"] == pytest.approx(mean / math.sqrt(0.02**2 / 4) * math.sqrt(365), rel=1e-12)
    growth = 1.01 * 0.98 * 1.03
    assert m["cagr"] == pytest.approx(growth ** (365 / 4) - 1, rel=1e-12)


def test_trade_metrics_over_closed_trades() -> None:
    t = metrics.trade_metrics([0.2, -0.1, 0.05, 0.3], [0.2, -0.1, 0.05, 0.3], [1, 1, 1, 0])
    assert t["trades"] == 4 and t["closed_trades"] == 3 and t["open_trades"] == 1
    assert t["win_rate"] == pytest.approx(2 / 3)
    assert t["profit_factor"] == pytest.approx(0.25 / 0.1)
    assert t["avg_trade_pnl"] == pytest.approx(0.15 / 3)
    none = metrics.trade_metrics([0.1], [0.1], [1])
    assert none["profit_factor"] is None


def test_from_sums_matches_return_metrics() -> None:
    r = np.random.default_rng(3).normal(2e-4, 0.01, 5000)
    eq = np.concatenate([[0.0], np.cumsum(np.log1p(r))])
    s = metrics.from_sums(
        len(r),
        np.log1p(r).sum(),
        r.sum(),
        (r * r).sum(),
        (np.minimum(r, 0) ** 2).sum(),
        (eq - np.maximum.accumulate(eq)).min(),
        365,
    )
    ref = metrics.return_metrics(r, 365)
    for key, value in s.items():
        assert float(value) == pytest.approx(ref[key], rel=1e-9), key


@pytest.mark.parametrize("seed", range(6))
def test_objective_value_is_return_metrics_bit_for_bit(seed: int) -> None:
    from compute.backtest.metrics import objective_value

    rng = np.random.default_rng(seed)
    series = [
        rng.normal(0.001, 0.03, 500),
        rng.normal(-0.002, 0.02, 50),
        np.zeros(30),
        np.array([0.01]),
        np.array([]),
        np.array([-1.0, 0.5]),
        rng.normal(0.0, 0.01, 200).clip(0.0),
    ]
    for r in series:
        for ppy, rf in ((365.0, 0.0), (8760.0, 0.03)):
            full = metrics.return_metrics(r, ppy, rf)
            for objective in ("total_return", "sharpe", "sortino", "calmar"):
                got = objective_value(r, objective, ppy, rf)
                want = full[objective]
                assert (got is None and want is None) or np.array_equal(
                    np.float64(got), np.float64(want), equal_nan=True
                ), (objective, got, want)
