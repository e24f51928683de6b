"""VaR/ES, moments, rolling VaR, drawdown, exposure and vol targeting against independent
references: hand-computed tiny cases, ``numpy.quantile(method="linear")``, ``scipy.stats``,
the loop references of ``compute.risk.reference``, and the real BTC daily file."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from compute.core.errors import InputDataError, SpecError
from compute.risk import reference as ref
from compute.risk import var as risk
from tests.compute.conftest import load_candles

PROFILE = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def numpy_var_es(x: np.ndarray, levels: list[float]) -> tuple[np.ndarray, np.ndarray]:
    q = np.quantile(x, [1 - c for c in levels], method="linear")
    return q, np.array([x[x <= v].mean() for v in q])


@pytest.fixture(scope="module")
def btc() -> np.ndarray:
    close = load_candles("btc_1d")["close"]
    return close[1:] / close[:-1] - 1.0


# ------------------------------------------------------------------------------ historical
def test_historical_hand_computed() -> None:
    r = [-0.05, 0.02, -0.01, 0.03, -0.02]  # sorted: -0.05 -0.02 -0.01 0.02 0.03
    var, es = risk.historical_var_es(r, [0.95, 0.75])
    # a=0.05: h = 4 * 0.05 = 0.2 -> -0.05 + 0.2 * (-0.02 + 0.05) = -0.044; ES: only -0.05
    # a=0.25: h = 1 -> -0.02 exactly; ES: mean(-0.05, -0.02)
    np.testing.assert_allclose(var, [-0.044, -0.02], rtol=0, atol=1e-15)
    np.testing.assert_allclose(es, [-0.05, -0.035], rtol=0, atol=1e-15)


@pytest.mark.parametrize("length", [7, 300, 20_000, 50_001])
def test_historical_equals_numpy_quantile(length: int) -> None:
    rng = np.random.default_rng(length)
    x = rng.standard_t(3, (4, length)) * 0.02
    x[1] = np.round(x[1], 3)  # many ties around the quantile
    x[2, : length // 2] = 0.0  # a mass of exact zeros
    levels = [0.9, 0.95, 0.99, 0.999]
    var, es = risk.historical_var_es(x, levels)
    for i in range(4):
        q, e = numpy_var_es(x[i], levels)
        np.testing.assert_allclose(var[i], q, rtol=0, atol=1e-15)
        np.testing.assert_allclose(es[i], e, rtol=1e-13, atol=1e-16)


def test_historical_on_real_btc(btc: np.ndarray) -> None:
    var, es = risk.historical_var_es(btc)
    for j, level in enumerate(risk.DEFAULT_LEVELS):
        q, e = ref.historical(btc.tolist(), level)
        assert var[j] == pytest.approx(q, abs=1e-15)
        assert es[j] == pytest.approx(e, rel=1e-13)
    assert -0.12 < var[1] < var[0] < -0.03  # BTC daily 2017-2026: 95% ~ -5.5%, 99% ~ -10%
    assert es[1] < var[1]


# ------------------------------------------------------------------------------ parametric
def test_moments_equal_scipy(btc: np.ndarray) -> None:
    m = risk.moments(btc)
    assert m.mean == pytest.approx(btc.mean(), rel=1e-12)
    assert m.std == pytest.approx(btc.std(ddof=1), rel=1e-12)
    assert m.skew == pytest.approx(stats.skew(btc, bias=True), rel=1e-10)
    assert m.kurt == pytest.approx(stats.kurtosis(btc, fisher=True, bias=True), rel=1e-10)


def test_normal_and_cornish_fisher_equal_reference(btc: np.ndarray) -> None:
    for method, fn in (("normal", ref.normal), ("cornish_fisher", ref.cornish_fisher)):
        var, es = risk.var_es(btc, [0.95, 0.99], method=method)
        for j, level in enumerate([0.95, 0.99]):
            v, e = fn(btc.tolist(), level)
            assert var[j] == pytest.approx(v, rel=1e-11), method
            assert es[j] == pytest.approx(e, rel=1e-7), method  # ref ES: trapezoid rule


def test_normal_hand_values() -> None:
    x = np.array([-0.02, 0.0, 0.02, 0.04])  # mean 0.01, sample std sqrt(0.002/3)
    var, es = risk.parametric_var_es(x, [0.975])
    sd = math.sqrt(0.002 / 3)
    assert var[0] == pytest.approx(0.01 - 1.959963984540054 * sd, rel=1e-12)
    assert es[0] == pytest.approx(0.01 - sd * 0.05844506980503538 / 0.025, rel=1e-12)


def test_cornish_fisher_reduces_to_normal_without_skew_or_kurtosis() -> None:
    z = np.array([-1.6448536269514722, -2.3263478740408408])
    np.testing.assert_allclose(risk.cornish_fisher_z(z, np.zeros(2), np.zeros(2)), z)
    tail = np.array([0.05, 0.01])
    phi = np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(
        risk.cornish_fisher_tail_mean(z, tail, np.zeros(2), np.zeros(2)), -phi / tail
    )


def test_fat_tails_make_cornish_fisher_worse_than_normal(btc: np.ndarray) -> None:
    normal = risk.var_es(btc, [0.99], method="normal")
    cf = risk.var_es(btc, [0.99], method="cornish_fisher")
    assert cf[0][0] < normal[0][0] and cf[1][0] < normal[1][0]


# --------------------------------------------------------------------------------- rolling
def test_rolling_historical_equals_window_loop(btc: np.ndarray) -> None:
    x = btc[:400]
    roll = risk.rolling_var_es(x, 60, 0.95)
    assert np.isnan(roll.var[:59]).all()
    for t in (59, 200, 399):
        q, e = numpy_var_es(x[t - 59 : t + 1], [0.95])
        assert roll.var[t] == pytest.approx(q[0], abs=1e-15)
        assert roll.es[t] == pytest.approx(e[0], rel=1e-13)
    breaches = sum(x[t] < roll.var[t - 1] for t in range(60, 400))
    assert (roll.breaches, roll.tested) == (breaches, 340)
    p = roll.kupiec_p_value()
    assert p is not None and 0.0 <= p <= 1.0


def test_rolling_normal_equals_window_loop(btc: np.ndarray) -> None:
    roll = risk.rolling_var_es(btc[:200], 30, 0.99, method="normal")
    v, e = ref.normal(btc[100:130].tolist(), 0.99)
    assert roll.var[129] == pytest.approx(v, rel=1e-11)
    assert roll.es[129] == pytest.approx(e, rel=1e-11)


def test_kupiec_hand_value() -> None:
    roll = risk.RollingVarEs(10, 0.99, "historical", np.zeros(1), np.zeros(1), 5, 100)
    # LR = -2 [100 ln .99 ... ] with p = 0.01, phat = 0.05
    lr = -2 * (95 * math.log(0.99) + 5 * math.log(0.01) - 95 * math.log(0.95) - 5 * math.log(0.05))
    assert roll.kupiec_p_value() == pytest.approx(stats.chi2.sf(lr, 1), rel=1e-12)


# --------------------------------------------------------------------- drawdown / exposure
def test_drawdown_hand_computed() -> None:
    dd = risk.drawdown([0.1, -0.5, 0.2, 1.0])  # equity 1.1, 0.55, 0.66, 1.32
    assert dd.max == pytest.approx(-0.5)
    assert (dd.peak, dd.trough, dd.recovery, dd.duration, dd.is_open) == (0, 1, 3, 3, False)
    np.testing.assert_allclose(dd.series, [0.0, -0.5, 0.66 / 1.1 - 1, 0.0])


def test_drawdown_loss_on_first_bar_counts_and_stays_open() -> None:
    dd = risk.drawdown([-0.1, 0.05])
    assert dd.max == pytest.approx(-0.1) and dd.peak == -1 and dd.trough == 0
    assert dd.is_open and dd.recovery is None and dd.duration == 2
    assert dd.current == pytest.approx(0.9 * 1.05 - 1)


def test_drawdown_equals_reference(btc: np.ndarray) -> None:
    dd = risk.drawdown(btc)
    worst, peak, trough, recovery = ref.drawdown(btc.tolist())
    assert dd.max == pytest.approx(worst, rel=1e-12)
    assert (dd.peak, dd.trough, dd.recovery) == (peak, trough, recovery)
    assert dd.max < -0.7  # BTC fell ~77-84% in 2018 and 2022


def test_exposure_hand_computed() -> None:
    out = risk.exposure([0.0, 1.0, 1.0, -0.5, 0.0])
    assert out["time_in_market"] == pytest.approx(0.6)
    assert out["long_fraction"] == pytest.approx(0.4)
    assert out["short_fraction"] == pytest.approx(0.2)
    assert out["max_gross"] == 1.0 and out["mean_net"] == pytest.approx(0.3)
    assert out["turnover_per_bar"] == pytest.approx((0 + 1 + 0 + 1.5 + 0.5) / 5)


# ------------------------------------------------------------------------ vol targeting
def test_vol_target_equals_reference_and_caps(btc: np.ndarray) -> None:
    x = btc[:300]
    out = risk.vol_target(x, target_vol=1.0, periods_per_year=365, lookback=20, max_leverage=1.5)
    expected = ref.vol_target_scale(x.tolist(), 1.0, 365, 20, 1.5)
    np.testing.assert_allclose(out.scale, expected, rtol=1e-10, equal_nan=True)
    assert np.isnan(out.scale[:20]).all() and np.nanmax(out.scale) <= 1.5
    assert out.next_scale == pytest.approx(ref.vol_target_scale([*x, 0.0], 1.0, 365, 20, 1.5)[-1])
    assert 0 < out.capped_fraction < 1
    np.testing.assert_allclose(out.scaled_returns[20:], out.scale[20:] * x[20:])


def test_vol_target_hits_the_target_without_a_cap() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 0.04, 20_000)  # 76% annualised
    out = risk.vol_target(x, target_vol=0.2, periods_per_year=365, lookback=60, max_leverage=10)
    assert out.scaled_vol == pytest.approx(0.2, rel=0.03)
    assert out.static_scale == pytest.approx(0.2 / (x.std(ddof=1) * math.sqrt(365)))


def test_vol_target_has_no_look_ahead() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0, 0.02, 200)
    y = x.copy()
    y[150:] *= 10  # change the future only
    kw = {"target_vol": 0.3, "periods_per_year": 365, "lookback": 30, "max_leverage": 5.0}
    a, b = risk.vol_target(x, **kw), risk.vol_target(y, **kw)
    np.testing.assert_array_equal(a.scale[:151], b.scale[:151])
    assert a.scale[151] != b.scale[151]


# ------------------------------------------------------------------- edge cases by property
@PROFILE
@given(
    length=st.integers(1, 60),
    where=st.floats(0, 1, exclude_max=True),
    bad=st.sampled_from([math.nan, math.inf, -math.inf]),
)
def test_non_finite_returns_raise(length: int, where: float, bad: float) -> None:
    x = np.linspace(-0.01, 0.01, length)
    x[int(where * length)] = bad
    for call in (
        lambda: risk.historical_var_es(x),
        lambda: risk.var_es(x, method="cornish_fisher"),
        lambda: risk.drawdown(x),
        lambda: risk.moments(x),
    ):
        with pytest.raises(InputDataError, match="returns"):
            call()


@PROFILE
@given(value=st.floats(-0.5, 0.5), length=st.integers(3, 80))
def test_constant_series_has_defined_results(value: float, length: int) -> None:
    x = np.full(length, value)
    for method in risk.METHODS:
        var, es = risk.var_es(x, method=method)
        np.testing.assert_allclose(var, value, atol=1e-15)
        np.testing.assert_allclose(es, value, atol=1e-15)
    assert risk.moments(x).std == 0.0


@PROFILE
@given(length=st.integers(0, 2), levels=st.lists(st.floats(0.51, 0.999), min_size=1))
def test_short_series_raise_insufficient_or_work(length: int, levels: list[float]) -> None:
    x = np.linspace(-0.01, 0.01, length)
    if length >= 1:
        var, es = risk.historical_var_es(x, levels)
        assert (var <= x.max()).all() and (es <= var + 1e-18).all()
    else:
        with pytest.raises(risk.InsufficientReturnsError) as err:
            risk.historical_var_es(x, levels)
        assert (err.value.needed, err.value.got) == (1, 0)
    with pytest.raises(risk.InsufficientReturnsError):
        risk.var_es(x, levels, method="normal")


@pytest.mark.parametrize("levels", [[0.5], [1.0], [95], [], [float("nan")]])
def test_bad_levels_say_what_is_valid(levels: list[float]) -> None:
    with pytest.raises(SpecError, match="levels"):
        risk.historical_var_es([0.01, 0.02], levels)


def test_historical_equals_pandas_quantile_mask_mean() -> None:
    rng = np.random.default_rng(9)
    frame = pd.DataFrame(rng.normal(0, 0.01, (10_000, 3)))
    var, es = risk.historical_var_es(frame.to_numpy().T, [0.99])
    q = frame.quantile(0.01)
    np.testing.assert_allclose(var[:, 0], q.to_numpy(), atol=1e-16)
    np.testing.assert_allclose(es[:, 0], frame[frame <= q].mean().to_numpy(), rtol=1e-13)
