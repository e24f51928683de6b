"""A declarative spec as a :class:`compute.backtest.plugins.StrategyPlugin`.

So every place that runs a strategy (backtest, walk-forward, look-ahead checks, portfolios)
takes a spec the same way as a built-in or a Python plugin. The plugin's parameters are the
spec's placeholders, typed and bounded by where they are used (an indicator period: an integer
in its registry range; a stop or weight: its range; a constant in a rule: any float); its
version is the spec's fingerprint, so a registry can tell two specs apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compute.backtest.plugins import Frame, checked_positions
from compute.backtest.strategies import StrategyError
from compute.indicators.registry import REGISTRY, Param
from compute.strategy import rules
from compute.strategy.compiler import spec_positions
from compute.strategy.spec import MAX_WEIGHT, STOP_BOUNDS, WEIGHT_FIELDS, StrategySpec

FREE = 1e12  # bounds of a placeholder used only as a constant inside a rule


def _param_types(spec: StrategySpec) -> tuple[Param, ...]:
    kind: dict[str, type] = {}
    bounds: dict[str, tuple[float, float]] = {}

    def narrow(name: str, k: type, low: float, high: float) -> None:
        kind[name] = int if k is int or kind.get(name) is int else float
        lo, hi = bounds.get(name, (-FREE, FREE))
        bounds[name] = (max(lo, low), min(hi, high))

    for tree in spec.rules.values():
        for node in rules.walk(tree):
            if isinstance(node, rules.IndicatorRef):
                for arg, p in zip(node.args, REGISTRY[node.item].params, strict=False):
                    if isinstance(arg, rules.Placeholder):
                        narrow(arg.name, p.kind, p.low, p.high)
            elif isinstance(node, rules.Placeholder):
                narrow(node.name, float, -FREE, FREE)
    for f, v in spec.weights.items():
        if isinstance(v, rules.Placeholder) and f in WEIGHT_FIELDS:
            narrow(v.name, float, 0.0, MAX_WEIGHT)
    for f, stop in spec.stops.items():
        if isinstance(stop.value, rules.Placeholder):
            narrow(stop.value.name, float, *STOP_BOUNDS[(f, stop.kind)])
    out = []
    for name in spec.placeholders:
        k = kind.get(name, float)
        default = spec.defaults.get(name)
        low, high = bounds.get(name, (-FREE, FREE))
        out.append(Param(name, k, float("nan") if default is None else default, low, high,
                         "placeholder of the spec"))  # fmt: skip
    return tuple(out)


@dataclass(frozen=True)
class SpecPlugin:
    """A compiled spec behind the plugin interface."""

    spec: StrategySpec
    name: str = ""
    params: tuple[Param, ...] = field(default=())
    held_from_start: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name or self.spec.name)
        object.__setattr__(self, "params", _param_types(self.spec))

    @property
    def version(self) -> str:
        return "spec-" + self.spec.fingerprint()[:16]

    @property
    def summary(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in self.spec.texts.items())

    def validate(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        bound = self.spec.bind(params)
        kinds = {p.name: p.kind for p in self.params}
        return {k: int(v) if kinds.get(k) is int else v for k, v in bound.values.items()}

    def warmup(self, params: Mapping[str, Any] | None = None) -> int:
        return self.spec.bind(params).warmup

    def required_bars(self, params: Mapping[str, Any] | None = None) -> int:
        return self.spec.bind(params).required_bars

    def positions(self, frame: Frame, params: Mapping[str, Any] | None = None) -> np.ndarray:
        run = spec_positions(self.spec, frame, params)
        return checked_positions(self.name, run.positions, run.positions.shape[0])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "summary": self.summary,
            "held_from_start": False,
            "spec": self.spec.source,
            "params": [
                {"name": p.name, "type": p.kind.__name__,
                 "default": None if p.default != p.default else p.default,
                 "min": p.low, "max": p.high, "doc": p.doc}
                for p in self.params
            ],
        }  # fmt: skip


def spec_plugin(spec: StrategySpec | Mapping[str, Any]) -> SpecPlugin:
    """A spec (parsed, or the raw JSON object) as a plugin."""
    from compute.strategy.spec import parse_spec

    if not isinstance(spec, StrategySpec):
        if not isinstance(spec, Mapping):
            raise StrategyError("a spec strategy is a JSON object")
        spec = parse_spec(spec)
    return SpecPlugin(spec)
