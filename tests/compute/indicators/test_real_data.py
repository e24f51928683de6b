"""JAX kernels vs the NumPy references (and pandas where definitions coincide) on real candles.

Full series: BTC daily (3,064 bars), ETH 4h (18,370, with the 2018 outage gaps), SOL 1h (47,359).
Past warm-up every float output must agree to ``rtol=1e-9``; in warm-up both must be NaN at
the same bars. Outputs that cross zero (MACD, z-score, %b, returns, trend score) are also
given an absolute floor of 1e-12 x their natural scale (the price for MACD, 1 for the
dimensionless ones): a relative test is meaningless at an exact zero crossing. Labels and
signals must be identical.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from compute.indicators import kernels as ind
from compute.indicators import reference as ref
from compute.indicators import regimes as reg
from compute.indicators.pipeline import compute_indicators, compute_indicators_reference
from compute.indicators.registry import parse_indicator_spec
from tests.compute.conftest import call_kwargs, load_candles

pytestmark = pytest.mark.realdata

# every item with its defaults (all three files) ...
SPEC = (
    "sma,ema,rsi,macd,atr,bb,zscore,vwap,svwap,ret,logret,rvol,vov,vreg,vreg_fixed,trend,"
    "ema_cross,rsi_mr,bb_break"
)
# ... and on BTC daily also long windows (two-level path), other periods, gates, long-only
EXTRA = (
    "sma:200,ema:50,rsi:2,bb:50:2.5,zscore:100,vwap:1440,rvol:30:8760,trend:50:20:10:0.05,"
    "ema_cross:5:20:1:1,rsi_mr:2:10:90:0:1,bb_break:20:2:1:1"
)
ZERO_CROSSING = ("macd", "zscore", "bb_pctb", "ret", "logret", "trend_score")


def assert_same(name: str, got: np.ndarray, want: np.ndarray, price: float) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, name
    if got.dtype == np.int8:
        np.testing.assert_array_equal(got, want, err_msg=name)
        return
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{name}: NaN pattern")
    atol = 0.0
    if name.startswith(ZERO_CROSSING):
        atol = 1e-12 * (price if name.startswith("macd") else 1.0)
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-9, atol=atol, err_msg=name)


def spec_for(name: str) -> str:
    return f"{SPEC},{EXTRA}" if name == "btc_1d" else SPEC


@pytest.fixture(scope="module")
def both(real_candles: tuple[str, dict[str, np.ndarray]]) -> tuple[dict, dict, dict, str]:
    name, candles = real_candles
    kwargs, spec = call_kwargs(candles), spec_for(name)
    got, want = compute_indicators(spec, **kwargs), compute_indicators_reference(spec, **kwargs)
    return got, want, candles, spec


def test_pipeline_matches_reference_on_full_series(both: tuple) -> None:
    got, want, candles, _ = both
    assert set(got) == set(want)
    price = float(np.median(candles["close"]))
    for name in want:
        assert_same(name, got[name], want[name], price)


def test_warmups_are_nan_and_match_the_registry(both: tuple) -> None:
    got, _, _, spec = both
    for request in parse_indicator_spec(spec):
        for output in request.spec.outputs:
            values = got[request.column(output.name)]
            warm = output.warmup(request.params)
            if request.spec.kind == "signal":
                assert (values[:warm] == 0).all(), request.text()
            elif values.dtype == np.int8:
                assert (values[:warm] == -1).all() and values[warm] != -1, request.text()
            else:
                assert np.isnan(values[:warm]).all() and not np.isnan(values[warm]), request.text()


def test_public_kernels_match_reference_on_btc_daily() -> None:
    x = load_candles("btc_1d")
    h, lo, c, v, ts = x["high"], x["low"], x["close"], x["volume"], x["ts"]
    price = float(np.median(c))
    pairs = {
        "ema": (ind.ema(c, 20), ref.ema(c, 20)),
        "rsi": (ind.rsi(c, 14), ref.rsi(c, 14)),
        "atr": (ind.atr(h, lo, c, 14), ref.atr(h, lo, c, 14)),
        "zscore": (ind.zscore(c, 20), ref.zscore(c, 20)),
        "svwap": (ind.vwap_session(h, lo, c, v, ts), ref.vwap_session(h, lo, c, v, ts)),
        "vwap": (ind.vwap_rolling(h, lo, c, v, 20), ref.vwap_rolling(h, lo, c, v, 20)),
        "rvol": (reg.realized_vol(c, 20), ref.realized_vol(c, 20, 365.0)),
        "vov": (reg.vol_of_vol(c, 20, 20), ref.vol_of_vol(c, 20, 20, 365.0)),
        "vreg": (reg.vol_regime(c), ref.vol_regime(c, 20, 250, 0.6745)),
    }
    for name, (got, want) in pairs.items():
        assert_same(name, got, want, price)
    for name, got, want in zip(
        ("macd", "macd_signal", "macd_hist"), ind.macd(c), ref.macd(c, 12, 26, 9), strict=True
    ):
        assert_same(name, got, want, price)
    for name, got, want in zip(
        ("bb_mid", "bb_upper", "bb_lower", "bb_pctb", "bb_width"),
        ind.bollinger(c),
        ref.bollinger(c, 20, 2.0),
        strict=True,
    ):
        assert_same(name, got, want, price)


def _seeded_ewm(s: pd.Series, alpha: float, n: int, start: int = 0) -> pd.Series:
    seeded = s.copy()
    seeded.iloc[: start + n - 1] = np.nan
    seeded.iloc[start + n - 1] = s.iloc[start : start + n].mean()
    return seeded.ewm(alpha=alpha, adjust=False).mean()


def test_against_pandas_where_definitions_coincide(both: tuple) -> None:
    got, _, candles, _ = both
    c, h, lo, v = (pd.Series(candles[k]) for k in ("close", "high", "low", "volume"))

    def check(name: str, want: pd.Series, rtol: float = 1e-9) -> None:
        w = want.to_numpy(dtype=float)
        np.testing.assert_array_equal(np.isnan(got[name]), np.isnan(w), err_msg=name)
        ok = ~np.isnan(w)
        np.testing.assert_allclose(got[name][ok], w[ok], rtol=rtol, err_msg=name)

    check("sma_20", c.rolling(20).mean())
    check("ema_20", _seeded_ewm(c, 2 / 21, 20))
    delta = c.diff()
    gain, loss = (
        _seeded_ewm(delta.clip(lower=0), 1 / 14, 14, 1),
        _seeded_ewm(-delta.clip(upper=0), 1 / 14, 14, 1),
    )
    check("rsi_14", 100 * gain / (gain + loss))
    prev = c.shift(1)
    tr = pd.concat([h - lo, (h - prev).abs(), (lo - prev).abs()], axis=1).max(axis=1, skipna=False)
    check("atr_14", _seeded_ewm(tr, 1 / 14, 14, 1))
    # pandas' rolling std keeps running sums of squares: at these prices it is good to ~1e-7
    # only (that loss of digits is why the kernels don't), so compare the band width loosely.
    check("bb_upper_20_2", c.rolling(20).mean() + 2 * c.rolling(20).std(ddof=0), rtol=1e-7)
    tp = (h + lo + c) / 3
    check("vwap_20", (tp * v).rolling(20).sum() / v.rolling(20).sum())
    day = pd.Series(candles["ts"] // 86_400)
    check("svwap", (tp * v).groupby(day).cumsum() / v.groupby(day).cumsum())
    check("ret", c.pct_change())
    check("rvol_20_365", np.log(c / c.shift(1)).rolling(20).std() * math.sqrt(365), rtol=1e-7)
    if "sma_200" in got:
        check("sma_200", c.rolling(200).mean())
