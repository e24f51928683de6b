"""The rule language: trees, errors that point at the offending token, warm-ups that agree with
the pipeline's NaN prefixes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from compute.backtest.strategies import StrategyError
from compute.core.errors import InputDataError, SpecError
from compute.indicators.pipeline import compute_indicators
from compute.indicators.registry import REGISTRY
from compute.strategy import rules
from compute.strategy.parser import parse_rule
from compute.strategy.rules import RuleError
from compute.strategy.spec import parse_spec
from tests.compute.conftest import random_candles


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("ema:12 > ema:26", "(ema:12.0.ema > ema:26.0.ema)"),
        (
            "EMA:12 > ema:26 and not RSI:14 >= 70",
            "((ema:12.0.ema > ema:26.0.ema) and (not (rsi:14.0.rsi >= 70.0)))",
        ),
        ("close < bb_lower:20:2", "(close < bb:20.0:2.0.bb_lower)"),
        ("macd:12:26:9.signal < macd", "(macd:12.0:26.0:9.0.macd_signal < macd.macd)"),
        ("bb:20.pctb > 1 or zscore < -2", "((bb:20.0.bb_pctb > 1.0) or (zscore.zscore < -2.0))"),
        ("close > close[3] * 1.05", "(close > (close[3] * 1.05))"),
        ("-abs(ret) < -0.1", "((- abs(ret.ret)) < -0.1)"),
        ("ema:{fast} crosses_above ema:{slow}", "(ema:{fast}.ema crosses_above ema:{slow}.ema)"),
        (
            "min(ema:5, sma:5) != max(1, 2)",
            "(min(ema:5.0.ema, sma:5.0.sma) != max(1.0, 2.0))",
        ),
        (
            "(rsi < 30 or rsi > 70) and volume > 0",
            "(((rsi.rsi < 30.0) or (rsi.rsi > 70.0)) and (volume > 0.0))",
        ),
    ],
)
def test_rules_parse_to_their_trees(text: str, canonical: str) -> None:
    assert rules.render(parse_rule(text)) == canonical


# (rule, offending token, position, something the valid list must contain)
BAD = [
    ("emaa:12 > ema:26", "emaa", 0, "ema"),
    ("ema:12 > emaa:26", "emaa", 9, "rsi"),
    ("ema:0 > ema:26", "0", 4, "n=20 (int 1..100000)"),
    ("ema:12.5 > ema:26", "12.5", 4, "n=20 (int 1..100000)"),
    ("ema:12:5 > 1", "5", 7, "n=20 (int 1..100000)"),
    ("ema:12 >> ema:26", ">", 8, "{placeholder}"),
    ("ema:12 > ema:26 and", "end of rule", 19, "("),
    ("ema:12 > ema:26 &", "&", 16, ">"),
    ("bb:20:2 > close", "bb", 0, "bb_lower"),
    ("macd:12:26:9.sig > 0", "sig", 13, "signal"),
    ("ema:12 + ema:26", "ema:12", 0, None),
    ("rsi:14 < 30 < 40", "<", 12, "and"),
    ("close[-1] > close", "-", 6, "1"),
    ("close[1.5] > close", "1.5", 6, None),
    ("(close > 1", "end of rule", 10, ")"),
    ("close > 1)", ")", 9, "end of rule"),
    ("not close", "close", 4, None),
    ("close and open > 1", "close", 0, None),
    ("macd:26:12 > 0", "macd:26:12", 0, "fast=12 (int 1..100000)"),
    ("rsi:{n", "{n", 4, None),
    ("abs(close, open) > 1", "abs", 0, None),
    ("12close > 1", "12c", 0, None),
]


@pytest.mark.parametrize(("text", "token", "position", "valid"), BAD)
def test_bad_rules_name_the_token_its_position_and_what_is_valid(
    text: str, token: str, position: int, valid: str | None
) -> None:
    with pytest.raises(RuleError) as info:
        parse_spec({"long_entry": "close > 0", "long_exit": text})
    err = info.value
    assert (err.field, err.token, err.position) == ("long_exit", token, position), str(err)
    if valid is not None:
        assert valid in err.valid
    assert isinstance(err, StrategyError | SpecError) and isinstance(err, InputDataError)
    body = err.as_dict()
    assert body["token"] == token and body["position"] == position and body["field"] == "long_exit"
    assert text in str(err) and "^" in str(err)  # the caret line under the rule


def test_rule_errors_survive_pickling() -> None:
    with pytest.raises(RuleError) as info:
        parse_spec({"long_entry": "rsi:14 < 30 and emaa > 1"})
    again = pickle.loads(pickle.dumps(info.value))
    assert again.as_dict() == info.value.as_dict() and str(again) == str(info.value)


@pytest.mark.parametrize(
    ("raw", "field", "token"),
    [
        ({"long_entry": "close > 0", "stopp": 1}, "stopp", "stopp"),
        ({"long_exit": "close > 0"}, "long_entry", ""),
        ({"long_entry": "close > 0", "stop_loss": {"pct": 1.5}}, "stop_loss.pct", "1.5"),
        ({"long_entry": "close > 0", "stop_loss": {"atr": 2, "n": 0}}, "stop_loss.n", "0"),
        ({"long_entry": "close > 0", "take_profit": {"pts": 2}}, "take_profit.pts", "pts"),
        ({"long_entry": "close > 0", "long_weight": 11}, "long_weight", "11"),
        ({"long_entry": "close > 0", "long_weight": "heavy"}, "long_weight", "heavy"),
        ({"long_entry": 5}, "long_entry", "5"),
        ({"long_entry": "ema:{f} > 0", "params": {"f": 0}}, "long_entry", "{f}"),
        ({"long_entry": "ema:{f} > 0", "params": {"f": 3, "g": 1}}, "params", "g"),
        ({"long_entry": "close > 0", "short_exit": "close > 1"}, "short_exit", ""),
    ],
)
def test_bad_specs_name_the_field(raw: dict, field: str, token: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_spec(raw)
    assert (info.value.field, info.value.token) == (field, token), str(info.value)


def test_binding_checks_each_parameter_set() -> None:
    spec = parse_spec({"long_entry": "ema:{fast} > ema:{slow}", "stop_loss": {"pct": "{sl}"}})
    assert spec.placeholders == ["fast", "slow", "sl"]
    bound = spec.bind({"fast": 5, "slow": 20, "sl": 0.1})
    assert bound.warmup == 19 and bound.stops["stop_loss"].value == 0.1
    with pytest.raises(RuleError, match="no value for placeholder"):
        spec.bind({"fast": 5, "slow": 20})
    with pytest.raises(RuleError) as info:
        spec.bind({"fast": 0, "slow": 20, "sl": 0.1})
    assert (info.value.token, info.value.position) == ("{fast}", 4)
    with pytest.raises(RuleError, match="unknown parameter"):
        spec.bind({"fats": 5})
    with pytest.raises(RuleError) as info:
        spec.bind({"fast": 5, "slow": 20, "sl": 2.0})
    assert info.value.field == "stop_loss.pct"
    macd = parse_spec({"long_entry": "macd:{a}:{b}:9 > 0"})
    with pytest.raises(RuleError, match="fast must be smaller than slow"):
        macd.bind({"a": 30, "b": 20})


def _first_defined(values: np.ndarray, dtype: str) -> int:
    known = values != -1 if dtype == "int8" else ~np.isnan(values)
    return int(np.argmax(known)) if known.any() else values.shape[0]


@pytest.mark.parametrize(
    "item",
    [n for n, s in REGISTRY.items() if s.kind != "signal"],  # signals are 0, never NaN
)
def test_warmup_is_the_pipelines_nan_prefix(item: str) -> None:
    """Each output's warm-up as a rule reads it equals the first defined bar of the pipeline's
    column (default parameters, and a second set where the item has parameters)."""
    spec = REGISTRY[item]
    d = random_candles(700, seed=4, vol=0.02)
    for params in ((), tuple(min(int(p.default) * 2, 60) if p.kind is int else p.default
                             for p in spec.params)):  # fmt: skip
        suffix = "".join(f":{v:g}" for v in params)
        for out in spec.outputs:
            rule = f"{out.name}{suffix} > -1e300"
            bound = parse_spec({"long_entry": rule}).bind()
            (request,) = bound.indicator_requests()
            column = compute_indicators((request,), **{k: d[k] for k in d})[
                request.column(out.name)
            ]
            assert bound.warmup == _first_defined(column, out.dtype), (rule, bound.warmup)


def test_warmup_of_lags_and_crossings() -> None:
    def warm(rule: str) -> int:
        return parse_spec({"long_entry": rule}).bind().warmup

    assert warm("close > 1") == 0
    assert warm("close > close[5]") == 5
    assert warm("ema:10 crosses_above ema:20") == 20
    assert warm("(ema:10 > ema:20)[3] and rsi:14 < 30") == 22
    assert warm("macd:12:26:9.signal > 0") == 33
    bound = parse_spec({"long_entry": "close > 1", "stop_loss": {"atr": 2, "n": 30}}).bind()
    assert bound.warmup == 30 and bound.required_bars == 32


def test_fingerprints_follow_the_spec() -> None:
    a = parse_spec({"long_entry": "ema:12 > ema:26", "name": "x"})
    b = parse_spec({"name": "x", "long_entry": "ema:12 > ema:26"})
    c = parse_spec({"long_entry": "ema:12 > ema:27", "name": "x"})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
