"""The strategies a backtest can run: names, parameters (defaults, bounds), warm-ups, positions.

A strategy turns candles into target positions in {-1, 0, 1} decided at each close (the
signals of :mod:`compute.indicators.signals`, which are causal);
:func:`compute.backtest.engine.run_backtest`
executes them at the next open. The catalogue is pure Python (no JAX import until
:func:`positions` runs), so an API can validate a request and say how many candles it needs
before any work is submitted.

``required_bars(name, params)`` = warm-up + 2: the first defined signal is at bar ``warmup``,
it executes at the open of bar ``warmup + 1``, and that bar's close yields the first return of
a position. Fewer candles cannot produce a single traded bar.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from compute.core.errors import InputDataError, SpecError
from compute.indicators.registry import REGISTRY, Param


class StrategyError(SpecError, InputDataError):
    """Unknown strategy or parameter, or a value out of range; the message lists what is valid.

    Both a :class:`SpecError` and an :class:`InputDataError`, so either mapping catches it.
    """


Values = Mapping[str, float]


@dataclass(frozen=True)
class Strategy:
    """One strategy: its parameters and the warm-up (bars before the first defined signal)."""

    name: str
    summary: str
    params: tuple[Param, ...]
    warmup: Callable[[Values], int]
    check: Callable[[Values], str | None] = lambda v: None

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: name, summary, and each parameter's type, default, range."""
        return {
            "name": self.name,
            "summary": self.summary,
            "params": [
                {
                    "name": p.name,
                    "type": p.kind.__name__,
                    "default": p.default,
                    "min": p.low,
                    "max": p.high,
                    "doc": p.doc,
                }
                for p in self.params
            ],
        }


def _from_registry(name: str) -> Strategy:
    spec = REGISTRY[name]
    return Strategy(
        name=name,
        summary=spec.summary,
        params=spec.params,
        warmup=spec.outputs[0].warmup,
        check=spec.check,
    )


STRATEGIES: dict[str, Strategy] = {
    "buy_and_hold": Strategy("buy_and_hold", "long from the first bar on", (), lambda v: 0),
    **{n: _from_registry(n) for n in ("ema_cross", "rsi_mr", "bb_break")},
}


#: strategies whose position is known before the data: held from the first close
#: (``run_backtest(..., hold_from_start=True)``), so buy-and-hold earns close-to-close.
HELD_FROM_START = frozenset({"buy_and_hold"})


def describe() -> str:
    """One line per strategy: name, parameters with defaults and ranges."""
    return "\n".join(
        f"  {s.name}: {', '.join(p.usage() for p in s.params) or 'no parameters'}"
        for s in STRATEGIES.values()
    )


def validate_strategy(name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full parameter dict (defaults filled in, ints as ``int``) of a valid request.

    Raises :class:`StrategyError` naming the unknown strategy/parameter or the bad value and
    listing what is valid.
    """
    strategy = STRATEGIES.get(name) if isinstance(name, str) else None
    if strategy is None:
        raise StrategyError(f"unknown strategy {name!r}; valid strategies:\n{describe()}")
    return check_params(name, strategy.params, params, strategy.check)


def check_params(
    name: str,
    declared: tuple[Param, ...],
    params: Mapping[str, Any] | None,
    check: Callable[[Values], str | None] = lambda v: None,
) -> dict[str, Any]:
    """``params`` validated against ``declared`` (defaults filled in, ints as ``int``); the
    rules of :func:`validate_strategy`, for any strategy (built-in or plugin)."""
    given = dict(params or {})
    known = {p.name: p for p in declared}
    unknown = sorted(set(given) - set(known))
    if unknown:
        valid = ", ".join(p.usage() for p in declared) or "none"
        raise StrategyError(f"{name}: unknown parameter(s) {unknown}; valid parameters: {valid}")
    out: dict[str, Any] = {}
    for p in declared:
        value = given.get(p.name, p.default)
        if isinstance(value, bool):
            value = int(value)
        if p.kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if p.kind is int and not isinstance(value, int | np.integer):
            raise StrategyError(f"{name}: {p.name} must be an integer, got {value!r}")
        if not isinstance(value, int | float | np.integer | np.floating):
            raise StrategyError(f"{name}: {p.name} must be a number, got {value!r}")
        if not np.isfinite(value) or not p.low <= value <= p.high:
            raise StrategyError(
                f"{name}: {p.name} must be in [{p.low:g}, {p.high:g}], got {value!r}"
            )
        out[p.name] = int(value) if p.kind is int else float(value)
    problem = check(out)
    if problem:
        raise StrategyError(f"{name}: {problem}")
    return out


def required_bars(name: str, params: Mapping[str, Any] | None = None) -> int:
    """Candles needed for one traded bar: warm-up + 2 (see the module docstring)."""
    values = validate_strategy(name, params)
    return int(STRATEGIES[name].warmup(values)) + 2


def positions(
    name: str,
    params: Mapping[str, Any] | None,
    open: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
) -> np.ndarray:
    """Target positions (float64 in {-1, 0, 1}, ``(T,)``) decided at each close; flat in warm-up.

    ``open``, ``high`` and ``low`` are accepted for strategies that read them (none of the
    current ones does).
    """
    from compute.indicators import signals

    v = validate_strategy(name, params)
    c = np.asarray(close, dtype=np.float64)
    flags = {"long_only": bool(v.get("long_only", 0)), "vol_gate": bool(v.get("vol_gate", 0))}
    if name == "buy_and_hold":
        return np.ones(c.shape, dtype=np.float64)
    if name == "ema_cross":
        pos = signals.ema_crossover(c, v["fast"], v["slow"], **flags)
    elif name == "rsi_mr":
        pos = signals.rsi_reversion(c, v["n"], v["lower"], v["upper"], **flags)
    else:
        pos = signals.bollinger_breakout(c, v["n"], v["k"], **flags)
    return np.asarray(pos, dtype=np.float64)


__all__ = [
    "HELD_FROM_START",
    "STRATEGIES",
    "Strategy",
    "StrategyError",
    "check_params",
    "positions",
    "required_bars",
    "validate_strategy",
]
