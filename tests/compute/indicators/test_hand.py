"""Hand-computed fixtures: tiny series with every value worked out in the test.

Each expected value is written as the arithmetic of the definition in docs/indicators.md, so a
reader can check the definition and the kernel against each other without running anything.
Both the JAX kernels and the NumPy references must reproduce them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from compute.core.labels import TrendRegime, VolRegime
from compute.indicators import kernels as ind
from compute.indicators import reference as ref
from compute.indicators import regimes as reg
from compute.indicators import signals as sig

NAN = math.nan


def close_to(actual: np.ndarray, expected: list[float]) -> None:
    np.testing.assert_allclose(
        np.asarray(actual, dtype=float), np.array(expected), rtol=1e-12, atol=1e-12
    )


def test_ema3_seeded_with_sma() -> None:
    x = np.array([1.0, 2, 3, 4, 5, 6])
    # seed at t=2: SMA(1, 2, 3) = 2; alpha = 2 / (3 + 1) = 0.5
    # t=3: 2 + 0.5 (4 - 2) = 3;  t=4: 3 + 0.5 (5 - 3) = 4;  t=5: 4 + 0.5 (6 - 4) = 5
    expected = [NAN, NAN, 2.0, 3.0, 4.0, 5.0]
    close_to(ind.ema(x, 3), expected)
    close_to(ref.ema(x, 3), expected)
    y = np.array([2.0, 4, 6, 8, 3])
    # seed SMA(2, 4, 6) = 4; t=3: 4 + 0.5 (8 - 4) = 6; t=4: 6 + 0.5 (3 - 6) = 4.5
    close_to(ind.ema(y, 3), [NAN, NAN, 4.0, 6.0, 4.5])


def test_sma3() -> None:
    x = np.array([1.0, 2, 3, 5])
    # (1 + 2 + 3) / 3 = 2;  (2 + 3 + 5) / 3 = 10 / 3
    close_to(ind.sma(x, 3), [NAN, NAN, 2.0, 10 / 3])


def test_rsi2_wilder() -> None:
    close = np.array([10.0, 11, 10.5, 12, 11])
    # changes from bar 1: +1, -0.5, +1.5, -1 -> gains 1, 0, 1.5, 0; losses 0, 0.5, 0, 1
    # seed at t=2 (n=2, from bar 1): G = (1 + 0) / 2 = 0.5, L = (0 + 0.5) / 2 = 0.25
    #   RSI = 100 G / (G + L) = 100 * 0.5 / 0.75
    # t=3: G = 0.5 + (1.5 - 0.5) / 2 = 1.0,  L = 0.25 + (0 - 0.25) / 2 = 0.125 -> 100 / 1.125
    # t=4: G = 1.0 + (0 - 1.0) / 2 = 0.5,    L = 0.125 + (1 - 0.125) / 2 = 0.5625
    expected = [NAN, NAN, 100 * 0.5 / 0.75, 100 / 1.125, 100 * 0.5 / 1.0625]
    close_to(ind.rsi(close, 2), expected)
    close_to(ref.rsi(close, 2), expected)


def test_rsi_of_a_flat_market_is_50() -> None:
    # no gains and no losses: G + L = 0, defined as 50 (neither overbought nor oversold)
    close_to(ind.rsi(np.full(6, 7.0), 2), [NAN, NAN, 50, 50, 50, 50])
    # only gains: 100; only losses: 0
    close_to(ind.rsi(np.array([1.0, 2, 3, 4]), 2), [NAN, NAN, 100, 100])
    close_to(ind.rsi(np.array([4.0, 3, 2, 1]), 2), [NAN, NAN, 0, 0])


def test_atr2_wilder() -> None:
    high = np.array([10.0, 11, 12, 11.5])
    low = np.array([8.0, 9, 9, 10])
    close = np.array([9.0, 10, 11, 10.5])
    # TR1 = max(11 - 9, |11 - 9|, |9 - 9|) = 2;  TR2 = max(12 - 9, |12 - 10|, |9 - 10|) = 3
    # TR3 = max(11.5 - 10, |11.5 - 11|, |10 - 11|) = 1.5
    # seed at t=2: (2 + 3) / 2 = 2.5;  t=3: 2.5 + (1.5 - 2.5) / 2 = 2.0
    expected = [NAN, NAN, 2.5, 2.0]
    close_to(ind.atr(high, low, close, 2), expected)
    close_to(ref.atr(high, low, close, 2), expected)


def test_bollinger3_population_std() -> None:
    x = np.array([1.0, 2, 3, 5])
    # t=2: mean 2, population variance ((1-2)^2 + 0 + (3-2)^2) / 3 = 2/3
    # t=3: mean 10/3, deviations -4/3, -1/3, 5/3 -> variance (16 + 1 + 25) / 9 / 3 = 14/9
    sd2, sd3 = math.sqrt(2 / 3), math.sqrt(14 / 9)
    bands = ind.bollinger(x, 3, 2.0)
    close_to(bands.mid, [NAN, NAN, 2, 10 / 3])
    close_to(bands.upper, [NAN, NAN, 2 + 2 * sd2, 10 / 3 + 2 * sd3])
    close_to(bands.lower, [NAN, NAN, 2 - 2 * sd2, 10 / 3 - 2 * sd3])
    # %b = (close - lower) / (upper - lower): t=2 (3 - 2 + 2 sd) / (4 sd)
    close_to(bands.pct_b, [NAN, NAN, (1 + 2 * sd2) / (4 * sd2), (5 / 3 + 2 * sd3) / (4 * sd3)])
    close_to(bands.width, [NAN, NAN, 4 * sd2 / 2, 4 * sd3 / (10 / 3)])
    _, ref_up, *_ = ref.bollinger(x, 3, 2.0)
    close_to(ref_up, [NAN, NAN, 2 + 2 * sd2, 10 / 3 + 2 * sd3])


def test_macd_small() -> None:
    close = np.array([1.0, 3, 2, 5, 4, 6])
    # EMA(2), alpha 2/3: seed (1 + 3) / 2 = 2 at t=1; t=2: 2 + 2/3 (2 - 2) = 2;
    #   t=3: 2 + 2/3 (5 - 2) = 4; t=4: 4 + 2/3 (4 - 4) = 4; t=5: 4 + 2/3 (6 - 4) = 16/3
    # EMA(3), alpha 1/2: seed (1 + 3 + 2) / 3 = 2 at t=2; t=3: 3.5; t=4: 3.75; t=5: 4.875
    # line = EMA2 - EMA3 from t=2: 0, 0.5, 0.25, 16/3 - 4.875 = 11/24
    # signal EMA(2) of the line from t=2: seed (0 + 0.5) / 2 = 0.25 at t=3;
    #   t=4: 0.25 + 2/3 (0.25 - 0.25) = 0.25; t=5: 0.25 + 2/3 (11/24 - 0.25) = 0.25 + 5/36
    line, signal, hist = ind.macd(close, 2, 3, 2)
    close_to(line, [NAN, NAN, 0.0, 0.5, 0.25, 11 / 24])
    close_to(signal, [NAN, NAN, NAN, 0.25, 0.25, 0.25 + 5 / 36])
    close_to(hist, [NAN, NAN, NAN, 0.25, 0.0, 11 / 24 - 0.25 - 5 / 36])
    for got, want in zip(ref.macd(close, 2, 3, 2), (line, signal, hist), strict=True):
        close_to(got, list(want))


def test_zscore3_and_constant_window() -> None:
    x = np.array([1.0, 2, 3, 5, 5, 5])
    # t=2: (3 - 2) / sqrt(2/3); t=3: (5 - 10/3) / sqrt(14/9); t=4: window 3, 5, 5: mean 13/3,
    #   variance ((4/3)^2 + (2/3)^2 * 2) / 3 = 24/27 -> (5 - 13/3) / sqrt(8/9);
    # t=5: window 5, 5, 5 has std 0 -> z-score undefined: NaN
    expected = [
        NAN,
        NAN,
        1 / math.sqrt(2 / 3),
        (5 / 3) / math.sqrt(14 / 9),
        (2 / 3) / math.sqrt(8 / 9),
        NAN,
    ]
    close_to(ind.zscore(x, 3), expected)
    close_to(ref.zscore(x, 3), expected)


def test_vwap_session_resets_at_utc_midnight() -> None:
    day = 19_700 * 86_400  # some UTC midnight
    ts = np.array([day - 2 * 3600, day - 3600, day, day + 3600])  # 22:00, 23:00 | 00:00, 01:00
    price = np.array([10.0, 20, 30, 40])  # high = low = close: typical price = close
    volume = np.array([1.0, 3, 2, 2])
    # day 1: 10;  (10*1 + 20*3) / (1 + 3) = 17.5;   day 2 restarts: 30;  (30*2 + 40*2) / 4 = 35
    expected = [10.0, 17.5, 30.0, 35.0]
    close_to(ind.vwap_session(price, price, price, volume, ts), expected)
    close_to(ref.vwap_session(price, price, price, volume, ts), expected)
    # datetime64 timestamps give the same sessions
    close_to(ind.vwap_session(price, price, price, volume, ts.astype("datetime64[s]")), expected)


def test_vwap_typical_price_and_rolling_window() -> None:
    high, low, close = np.array([12.0, 22, 33]), np.array([6.0, 17, 27]), np.array([9.0, 21, 30])
    volume = np.array([1.0, 3, 0])
    tp = [(12 + 6 + 9) / 3, (22 + 17 + 21) / 3, (33 + 27 + 30) / 3]  # 9, 20, 30
    # window 2: t=1 (9*1 + 20*3) / 4 = 17.25; t=2 (20*3 + 30*0) / 3 = 20
    close_to(ind.vwap_rolling(high, low, close, volume, 2), [NAN, (tp[0] + 3 * tp[1]) / 4, tp[1]])
    # no volume traded in the window: VWAP undefined, NaN
    close_to(ind.vwap_rolling(high, low, close, np.array([1.0, 0, 0]), 2), [NAN, 9.0, NAN])


def test_returns_and_realized_vol() -> None:
    close = np.array([100.0, 110, 99, 99])
    close_to(ind.simple_returns(close), [NAN, 0.1, 99 / 110 - 1, 0.0])
    r1, r2, r3 = math.log(1.1), math.log(0.9), 0.0
    close_to(ind.log_returns(close), [NAN, r1, r2, r3])

    # realized vol(2), 365 periods a year: sample std of two log returns * sqrt(365)
    def sd(a: float, b: float) -> float:
        return abs(a - b) / math.sqrt(2)  # sqrt(((a - m)^2 + (b - m)^2) / (2 - 1))

    close_to(
        reg.realized_vol(close, 2, 365),
        [NAN, NAN, sd(r1, r2) * math.sqrt(365), sd(r2, r3) * math.sqrt(365)],
    )


def test_signals_by_hand() -> None:
    up = np.array([1.0, 2, 3, 4, 5, 6])
    # EMA(2) > EMA(3) on a rising series once both exist (t >= 2): long; flat before
    np.testing.assert_array_equal(sig.ema_crossover(up, 2, 3), [0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(sig.ema_crossover(up[::-1].copy(), 2, 3), [0, 0, -1, -1, -1, -1])
    np.testing.assert_array_equal(sig.ema_crossover(up[::-1].copy(), 2, 3, long_only=True), [0] * 6)
    # RSI(2) is 100 on a rising series: overbought -> short; falling: 0 -> long
    np.testing.assert_array_equal(sig.rsi_reversion(up, 2), [0, 0, -1, -1, -1, -1])
    np.testing.assert_array_equal(sig.rsi_reversion(up[::-1].copy(), 2), [0, 0, 1, 1, 1, 1])
    # Bollinger(3, k=1): window 1, 2, 3 has upper 2 + sqrt(2/3) = 2.82 < 3 -> long breakout
    np.testing.assert_array_equal(sig.bollinger_breakout(np.array([1.0, 2, 3]), 3, 1.0), [0, 0, 1])
    np.testing.assert_array_equal(sig.bollinger_breakout(np.array([3.0, 2, 1]), 3, 1.0), [0, 0, -1])
    np.testing.assert_array_equal(
        sig.bollinger_breakout(np.array([3.0, 2, 1]), 3, 1.0, long_only=True), [0, 0, 0]
    )


def test_regime_gate() -> None:
    pos = np.array([1, -1, 1, -1, 1], dtype=np.int8)
    regime = np.array(
        [VolRegime.MISSING, VolRegime.LOW, VolRegime.NORMAL, VolRegime.HIGH, VolRegime.NORMAL]
    )
    np.testing.assert_array_equal(sig.regime_gate(pos, regime), [0, -1, 1, 0, 1])
    np.testing.assert_array_equal(
        sig.regime_gate(pos, regime, allowed=[VolRegime.HIGH]), [0, 0, 0, -1, 0]
    )


def test_trend_regime_by_hand() -> None:
    # a straight line up by 1 per bar with a constant true range of 2 (high = c + 1, low = c - 1)
    close = np.arange(10.0, 40.0)
    high, low = close + 1, close - 1
    # EMA(3) of a line lags it by a constant, so it also rises 1 per bar; TR = max(2, 2, 0) = 2,
    # ATR(3) = 2. Score over slope 2: (EMA[t] - EMA[t-2]) / (2 * 2) = 2 / 4 = 0.5 > 0.1: UP.
    # Defined from t = max(3 - 1 + 2, 3) = 4.
    score, label = reg.trend(high, low, close, n=3, atr_n=3, slope=2, threshold=0.1)
    close_to(score[4:], [0.5] * (len(close) - 4))
    assert np.isnan(score[:4]).all()
    assert (label[:4] == TrendRegime.MISSING).all() and (label[4:] == TrendRegime.UP).all()
    _, down = reg.trend(
        high[::-1].copy(), low[::-1].copy(), close[::-1].copy(), n=3, atr_n=3, slope=2
    )
    assert (down[4:] == TrendRegime.DOWN).all()
    _, flat = reg.trend(high, low, close, n=3, atr_n=3, slope=2, threshold=0.6)
    assert (flat[4:] == TrendRegime.RANGE).all()


@pytest.mark.parametrize("z", [0.0, 0.6745])
def test_vol_regime_on_a_volatility_step(z: float) -> None:
    # calm returns of +-0.1%, then +-5%: once the baseline has formed on the calm part, the jump
    # in realized vol is HIGH; before n + lookback bars the label is missing.
    signs = np.where(np.arange(200) % 2 == 0, 1.0, -1.0)
    steps = np.concatenate([0.001 * signs[:120], 0.05 * signs[120:]])
    close = 100 * np.exp(np.cumsum(steps))
    labels = reg.vol_regime(close, n=5, lookback=20, z=z)
    assert (labels[:25] == VolRegime.MISSING).all()
    assert labels[125] == VolRegime.HIGH
    np.testing.assert_array_equal(labels, ref.vol_regime(close, 5, 20, z))
