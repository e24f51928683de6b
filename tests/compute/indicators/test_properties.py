"""Edge cases by property: NaN / inf / empty / constant / one-candle inputs.

The contract (docs/indicators.md, *Inputs*): non-finite values, non-positive prices, negative
volumes, inconsistent OHLC and bad timestamps raise ``InputDataError`` (a ``ValueError``) naming
the array; empty and short inputs are valid and give empty / all-warm-up results; a constant
series has the well-defined values listed in ``CONSTANT``. Never a crash, never silent garbage.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute.core.errors import InputDataError, SpecError
from compute.core.labels import TrendRegime, VolRegime
from compute.indicators import kernels as ind
from compute.indicators import regimes as reg
from compute.indicators.pipeline import compute_indicators, compute_indicators_reference
from compute.indicators.registry import parse_indicator_spec
from tests.compute.conftest import OHLCV, call_kwargs, random_candles

# every item, windows short enough for series of a few dozen bars
SPEC = (
    "sma:3,ema:3,rsi:3,macd:2:4:2,atr:3,bb:4:2,zscore:4,vwap:3,svwap,ret,logret,rvol:3:365,"
    "vov:3:3:365,vreg:3:5,vreg_fixed:3:0.4:0.8:365,trend:3:3:2:0.1,ema_cross:2:4,rsi_mr:3:30:70,"
    "bb_break:4:2,ema_cross:2:4:1:1"
)
REQUESTS = parse_indicator_spec(SPEC)
PROFILE = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def candles_of(length: int, seed: int) -> dict[str, np.ndarray]:
    return random_candles(length, seed=seed, start=100.0, vol=0.05)


@PROFILE
@given(
    length=st.integers(1, 40),
    seed=st.integers(0, 10_000),
    column=st.sampled_from(["high", "low", "close", "volume"]),
    where=st.floats(0, 1, exclude_max=True),
    bad=st.sampled_from([math.nan, math.inf, -math.inf]),
)
def test_non_finite_input_raises_naming_the_array(
    length: int, seed: int, column: str, where: float, bad: float
) -> None:
    x = candles_of(length, seed)
    x[column][int(where * length)] = bad
    for fn in (compute_indicators, compute_indicators_reference):
        with pytest.raises(InputDataError, match=column):
            fn(SPEC, **call_kwargs(x))
    with pytest.raises(InputDataError, match="x"):
        ind.ema(np.where(np.arange(length) == int(where * length), bad, 1.0), 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x: x["close"].__setitem__(3, 0.0), "close: must be > 0"),
        (lambda x: x["low"].__setitem__(3, -1.0), "low: must be > 0"),
        (lambda x: x["volume"].__setitem__(3, -1.0), "volume: must be >= 0"),
        (lambda x: x["high"].__setitem__(3, x["low"][3] * 0.5), "above high"),
        (lambda x: x["ts"].__setitem__(3, x["ts"][2]), "ts: not strictly increasing"),
        (lambda x: x.__setitem__("ts", x["ts"] * 1000), "milliseconds"),
        (lambda x: x.__setitem__("close", x["close"][:-1]), "differ in shape"),
    ],
)
def test_contract_violations_raise(change: object, message: str) -> None:
    x = candles_of(10, 0)
    change(x)  # type: ignore[operator]
    with pytest.raises(InputDataError, match=message):
        compute_indicators(SPEC, **call_kwargs(x))


def test_missing_array_and_bad_call_options_raise() -> None:
    x = candles_of(10, 0)
    with pytest.raises(InputDataError, match="volume, ts required"):
        compute_indicators("svwap", high=x["high"], low=x["low"], close=x["close"])
    with pytest.raises(SpecError):
        compute_indicators("sma:3", close=x["close"], series_per_call=0)
    with pytest.raises(SpecError):
        ind.ema(x["close"], 2.5)  # type: ignore[arg-type]
    with pytest.raises(SpecError):
        ind.sma(x["close"], np.array([3, 4]))  # windows are static: one int
    with pytest.raises(SpecError):
        ind.macd(x["close"], 26, 12)
    assert issubclass(InputDataError, ValueError) and issubclass(SpecError, ValueError)


def expected_dtype(column: str) -> np.dtype:
    for r in REQUESTS:
        for o in r.spec.outputs:
            if r.column(o.name) == column:
                return np.dtype(o.dtype)
    raise KeyError(column)


@pytest.mark.parametrize("rows", [None, 3])
def test_empty_input_gives_empty_outputs(rows: int | None) -> None:
    shape = (0,) if rows is None else (rows, 0)
    x = {k: np.ones(shape) for k in OHLCV[:5]}
    out = compute_indicators(SPEC, **x, ts=np.zeros(0, dtype=np.int64))
    assert len(out) == sum(len(r.spec.outputs) for r in REQUESTS)
    for name, values in out.items():
        assert values.shape == shape and values.dtype == expected_dtype(name), name
    assert ind.ema(np.zeros(0), 3).shape == (0,)


def test_one_candle() -> None:
    x = {
        "open": np.array([10.0]),
        "high": np.array([12.0]),
        "low": np.array([9.0]),
        "close": np.array([11.0]),
        "volume": np.array([2.0]),
        "ts": np.array([1_700_000_000]),
    }
    out = compute_indicators(SPEC, **x)
    ref = compute_indicators_reference(SPEC, **x)
    for name, values in out.items():
        assert values.shape == (1,)
        if name == "svwap":  # defined from a session's first bar: its typical price
            assert values[0] == pytest.approx((12 + 9 + 11) / 3)
        elif values.dtype == np.int8:
            assert values[0] == (
                0 if name.startswith(("ema_cross", "rsi_mr", "bb_break")) else -1
            ), name
        else:
            assert np.isnan(values[0]), name
        np.testing.assert_array_equal(values, ref[name])


# After warm-up, a constant series (open = high = low = close = c, volume v > 0) gives:
CONSTANT = {
    "sma": "c",
    "ema": "c",
    "bb_mid": "c",
    "bb_upper": "c",
    "bb_lower": "c",
    "vwap": "c",
    "svwap": "c",
    "rsi": 50.0,  # no gains, no losses
    "atr": 0.0,
    "bb_width": 0.0,
    "ret": 0.0,
    "logret": 0.0,
    "rvol": 0.0,
    "vov": 0.0,
    "macd": 0.0,
    "macd_signal": 0.0,
    "macd_hist": 0.0,
    "bb_pctb": "nan",
    "zscore": "nan",
    "trend_score": "nan",  # std or ATR is 0: undefined
    "vreg": VolRegime.NORMAL,  # neither above nor below a zero-width band
    "vreg_fixed": VolRegime.LOW,  # 0 < 0.4
    "trend": TrendRegime.RANGE,  # no true range: no trend
    "ema_cross": 0,
    "rsi_mr": 0,
    "bb_break": 0,
}


@PROFILE
@given(c=st.floats(1e-3, 1e6), v=st.floats(0.1, 1e6), length=st.integers(1, 50))
def test_constant_series(c: float, v: float, length: int) -> None:
    x = {k: np.full(length, c) for k in ("open", "high", "low", "close")}
    x["volume"] = np.full(length, v)
    x["ts"] = 1_700_000_000 + 3_600 * np.arange(length)
    out = compute_indicators(SPEC, **x)
    ref = compute_indicators_reference(SPEC, **x)
    for r in REQUESTS:
        for o in r.spec.outputs:
            name = r.column(o.name)
            got, warm = out[name][o.warmup(r.params) :], o.warmup(r.params)
            want = CONSTANT[o.name]
            if want == "c":
                np.testing.assert_allclose(got, c, rtol=1e-14, err_msg=name)
            elif want == "nan":
                assert np.isnan(got).all(), name
            else:
                np.testing.assert_array_equal(got, want, err_msg=name)
            assert out[name][:warm].shape[0] == min(warm, length)
            np.testing.assert_array_equal(
                np.isnan(out[name]) if out[name].dtype != np.int8 else out[name],
                np.isnan(ref[name]) if ref[name].dtype != np.int8 else ref[name],
                err_msg=name,
            )
    # exact, not just close: the constant itself (a zero-width window, an SMA seed of equal values)
    assert (ind.ema(np.full(length, c), 3)[2:] == c).all() and (
        ind.sma(np.full(length, c), 3)[2:] == c
    ).all()


@PROFILE
@given(length=st.integers(2, 60), seed=st.integers(0, 10_000), rows=st.sampled_from([None, 2]))
def test_random_inputs_agree_with_reference_and_are_defined_after_warmup(
    length: int, seed: int, rows: int | None
) -> None:
    if rows:
        parts = [candles_of(length, seed + i) for i in range(rows)]
        x = {k: np.stack([p[k] for p in parts]) for k in OHLCV[:5]} | {"ts": parts[0]["ts"]}
    else:
        x = candles_of(length, seed)
    out = compute_indicators(SPEC, **x)
    ref = compute_indicators_reference(SPEC, **x)
    for r in REQUESTS:
        for o in r.spec.outputs:
            name = r.column(o.name)
            got, want = out[name], ref[name]
            if got.dtype == np.int8:
                np.testing.assert_array_equal(got, want, err_msg=name)
                continue
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=name)
            # random candles move and trade every bar: nothing is undefined after warm-up
            assert not np.isnan(got[..., o.warmup(r.params) :]).any(), name


def test_kernels_keep_float64_precision() -> None:
    # steps of 1e-7 on a 60,000 price: float32 (~7 digits) would erase them entirely
    x = 60_000.0 + 1e-7 * np.arange(50)
    y = ind.ema(x, 5)
    assert y.dtype == np.float64
    np.testing.assert_allclose(np.diff(y[4:]), 1e-7, rtol=1e-3)  # ulp(60,000) = 7e-12
    assert reg.realized_vol(x, 5).dtype == np.float64
