"""The spec parser and catalogue: names, defaults, columns, warm-ups, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from compute.core.errors import SpecError
from compute.indicators.pipeline import compute_indicators
from compute.indicators.registry import (
    REGISTRY,
    parse_indicator_spec,
    required_candles,
    required_inputs,
)
from tests.compute.conftest import COVERAGE_LENGTH, COVERAGE_SPEC, call_kwargs, random_candles


def test_parse_the_api_example() -> None:
    reqs = parse_indicator_spec("ema:20,rsi:14,atr:14,macd:12:26:9,bb:20:2")
    assert [r.text() for r in reqs] == ["ema:20", "rsi:14", "atr:14", "macd:12:26:9", "bb:20:2"]
    assert [r.warmup for r in reqs] == [19, 14, 14, 26 + 9 - 2, 19]
    assert (
        required_candles(reqs)
        == 34
        == required_candles("ema:20,rsi:14,atr:14,macd:12:26:9,bb:20:2")
    )
    assert reqs[3].columns == {
        "macd": "macd_12_26_9",
        "macd_signal": "macd_signal_12_26_9",
        "macd_hist": "macd_hist_12_26_9",
    }
    assert reqs[4].columns["bb_pctb"] == "bb_pctb_20_2"
    assert required_inputs(reqs) == ("high", "low", "close")


def test_defaults_case_whitespace_and_duplicates() -> None:
    reqs = parse_indicator_spec(" MACD , bb:20 , bb:20:2.0, ret, svwap ,ema_cross:12:26:0:1")
    assert [r.text() for r in reqs] == [
        "macd:12:26:9",
        "bb:20:2",
        "ret",
        "svwap",
        "ema_cross:12:26:0:1",
    ]
    assert reqs[2].columns == {"ret": "ret"}
    assert reqs[4].warmup == 270  # the vol gate's regime needs 20 + 250 bars
    assert required_inputs(reqs) == ("high", "low", "close", "volume", "ts")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("foo:3", "unknown indicator 'foo'"),
        ("ema:2.5", "n must be int"),
        ("ema:0", r"n must be in \[1"),
        ("bb:20:0", r"k must be in"),
        ("ema:20:3", "at most 1 parameters"),
        ("macd:26:12:9", "fast must be smaller than slow"),
        ("rsi_mr:14:70:30", "lower must be smaller than upper"),
        ("ema_cross:12:26:2", r"long_only must be in \[0, 1\]"),
        ("", "empty indicator spec"),
        ("ema:20,,rsi", "empty item"),
        ("sma:200000", "n must be in"),
        (",".join(["ema:5"] * 65), "at most 64 items"),
    ],
)
def test_bad_specs_raise_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_indicator_spec(spec)


def test_unknown_name_lists_what_is_valid() -> None:
    with pytest.raises(ValueError) as info:  # SpecError is a ValueError
        parse_indicator_spec("ema:20,stoch:14")
    text = str(info.value)
    for name in REGISTRY:
        assert name in text
    assert "macd:fast:slow:signal" in text and "n=20 (int 1..100000)" in text


def test_every_registry_item_computes_with_its_declared_columns_and_warmups() -> None:
    spec = COVERAGE_SPEC
    reqs = parse_indicator_spec(spec)
    assert {r.spec.name for r in reqs} == set(REGISTRY)
    assert required_candles(reqs) < COVERAGE_LENGTH
    out = compute_indicators(spec, **call_kwargs(random_candles(COVERAGE_LENGTH, seed=11)))
    assert set(out) == {c for r in reqs for c in r.columns.values()}
    for r in reqs:
        for o in r.spec.outputs:
            values, warm = out[r.column(o.name)], o.warmup(r.params)
            assert values.dtype == np.dtype(o.dtype)
            if r.spec.kind == "signal":
                assert (values[:warm] == 0).all(), r.text()
            elif o.dtype == "int8":
                assert (values[:warm] == -1).all() and (values[warm:] != -1).all(), r.text()
            else:
                assert np.isnan(values[:warm]).all() and not np.isnan(values[warm:]).any(), r.text()


def test_registry_imports_without_jax() -> None:
    code = (
        "import sys, compute, compute.indicators.registry, compute.core.labels, "
        "compute.core.errors;"
        "assert 'jax' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
