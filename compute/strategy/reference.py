"""A slow, plain-Python twin of the spec compiler (tests hold the two equal).

Written from the rules of :mod:`compute.strategy.machine` and :mod:`compute.strategy.program`
as a trader would state them, sharing no code with the compiled path: indicators from the
NumPy references (:func:`compute.indicators.pipeline.compute_indicators_reference`), rule
trees evaluated bar by bar with ``None`` for *unknown*, and one Python loop over the bars with
explicit branches for the stops. For tests only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from compute.indicators.pipeline import compute_indicators_reference
from compute.strategy import rules
from compute.strategy.spec import BoundSpec

Truth = bool | None


def _columns(bound: BoundSpec, candles: Mapping[str, Any]) -> dict[str, np.ndarray]:
    requests = bound.indicator_requests()
    if not requests:
        return {}
    keys = ("open", "high", "low", "close", "volume", "ts")
    return compute_indicators_reference(requests, **{k: candles.get(k) for k in keys})


def _value(node: rules.Expr, t: int, env: dict[str, Any]) -> Any:
    """The value of ``node`` at bar ``t``: a float (NaN when undefined) or a Truth."""
    length = env["length"]
    if isinstance(node, rules.Num):
        return node.value
    if isinstance(node, rules.Placeholder):
        return env["values"][node.name]
    if not 0 <= t < length:
        return math.nan if rules.kind(node) == "number" else None
    if isinstance(node, rules.Column):
        return float(env["candles"][node.name][t])
    if isinstance(node, rules.IndicatorRef):
        request = env["requests"][node]
        x = float(env["columns"][request.column(node.output)][t])
        return math.nan if request.spec.kind == "label" and x == -1 else x
    if isinstance(node, rules.Lag):
        return _value(node.x, t - node.n, env)
    if isinstance(node, rules.Unary):
        inner = _value(node.x, t, env)
        if node.op == "-":
            return -inner
        return None if inner is None else not inner
    if isinstance(node, rules.Call):
        args = [_value(a, t, env) for a in node.args]
        if node.fn == "abs":
            return abs(args[0])
        if any(math.isnan(a) for a in args):
            return math.nan
        return min(args) if node.fn == "min" else max(args)
    assert isinstance(node, rules.Binary)
    op = node.op
    if op == "and":
        a, b = _value(node.a, t, env), _value(node.b, t, env)
        if a is False or b is False:
            return False
        return True if a is True and b is True else None
    if op == "or":
        a, b = _value(node.a, t, env), _value(node.b, t, env)
        if a is True or b is True:
            return True
        return False if a is False and b is False else None
    if op in ("crosses_above", "crosses_below"):
        a, b = _value(node.a, t, env), _value(node.b, t, env)
        a1, b1 = _value(node.a, t - 1, env), _value(node.b, t - 1, env)
        if any(math.isnan(v) for v in (a, b, a1, b1)):
            # unknown unless one known half is false
            above = op == "crosses_above"
            now = None if math.isnan(a) or math.isnan(b) else (a > b if above else a < b)
            then = None if math.isnan(a1) or math.isnan(b1) else (a1 <= b1 if above else a1 >= b1)
            return False if now is False or then is False else None
        if op == "crosses_above":
            return a > b and a1 <= b1
        return a < b and a1 >= b1
    a, b = _value(node.a, t, env), _value(node.b, t, env)
    if op in ("+", "-", "*", "/"):
        if op == "/":
            if b == 0:
                return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * (
                    math.copysign(1.0, b))  # fmt: skip
            return a / b
        return a + b if op == "+" else a - b if op == "-" else a * b
    if math.isnan(a) or math.isnan(b):
        return None
    return {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b, "==": a == b, "!=": a != b}[op]


def spec_positions_reference(
    bound: BoundSpec, candles: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Targets and exit reasons (codes of :data:`compute.strategy.machine.REASONS`)."""
    o, h, lo = (np.asarray(candles[k], dtype=np.float64) for k in ("open", "high", "low"))
    length = o.shape[0]
    columns = _columns(bound, candles)
    env = {"length": length, "candles": candles, "columns": columns,
           "requests": bound.requests, "values": bound.values}  # fmt: skip

    def rule(name: str, t: int) -> bool:
        tree = bound.spec.rules.get(name)
        return tree is not None and _value(tree, t, env) is True

    def atr(stop: str, t: int) -> float:
        req = bound.stops[stop].atr_request
        assert req is not None
        return float(columns[req.column("atr")][t])

    w_long, w_short = bound.weights["long_weight"], bound.weights["short_weight"]
    side, entry, peak, filled = 0, 0.0, 0.0, False
    dist: dict[str, float] = {}
    targets, reasons = np.zeros(length), np.zeros(length, np.int8)
    for t in range(length):
        if filled:  # entered at the previous close: the order filled at this open
            entry = peak = float(o[t])
            for name, stop in bound.stops.items():
                if stop.kind == "pct" and name != "trailing_stop":
                    dist[name] = stop.value * entry
        hit = {"stop_loss": False, "take_profit": False, "trailing_stop": False}
        if side != 0:
            for name, stop in bound.stops.items():
                if name == "trailing_stop":
                    d = stop.value * peak if stop.kind == "pct" else dist[name]
                    level = peak - d if side > 0 else peak + d
                    hit[name] = lo[t] <= level if side > 0 else h[t] >= level
                else:
                    # a long's stop-loss and a short's take-profit lie below the entry
                    below = (side > 0) == (name == "stop_loss")
                    if below:
                        hit[name] = lo[t] <= entry - dist[name]
                    else:
                        hit[name] = h[t] >= entry + dist[name]
            peak = max(peak, float(h[t])) if side > 0 else min(peak, float(lo[t]))
        le, lx, se, sx = (rule(n, t) for n in ("long_entry", "long_exit", "short_entry",
                                                "short_exit"))  # fmt: skip
        reason = 0
        exited = 0
        if side != 0:
            own_exit = lx if side > 0 else sx
            opposite = (se and not le) if side > 0 else (le and not se)
            if hit["stop_loss"]:
                reason = 2
            elif hit["trailing_stop"]:
                reason = 4
            elif hit["take_profit"]:
                reason = 3
            elif own_exit:
                reason = 1
            elif opposite:
                reason = 5
            if reason:
                exited, side = side, 0
        previous = exited or side  # the side held during bar t
        if side == 0 and t >= bound.warmup:
            want_long = le and exited != 1
            want_short = se and exited != -1
            if want_long != want_short:
                side = 1 if want_long else -1
        filled = side not in (0, previous)
        if filled:
            for name, stop in bound.stops.items():
                if stop.kind == "atr":
                    dist[name] = stop.value * atr(name, t)
        targets[t] = w_long if side > 0 else -w_short if side < 0 else 0.0
        reasons[t] = reason
    return targets, reasons
