"""Strategy specs: the JSON shape, validation before any work, grid placeholders, warm-ups.

A spec is a JSON object (every key optional except at least one entry rule)::

    {
      "name": "ema trend",                      # a label
      "long_entry": "ema:{fast} > ema:{slow}",  # rules: compute.strategy.rules
      "long_exit": "ema:{fast} <= ema:{slow}",
      "short_entry": "...", "short_exit": "...",
      "long_weight": 1.0, "short_weight": 0.5,  # target weights while long / short, (0, 10]
      "stop_loss": {"pct": 0.05},               # or {"atr": 2.0, "n": 14}
      "take_profit": {"atr": 3.0},
      "trailing_stop": {"pct": 0.1},
      "params": {"fast": 12, "slow": 26}        # defaults of the {placeholders}
    }

Numbers anywhere in a spec (weights, stop values, indicator parameters, constants inside rules)
may be ``{name}`` placeholders: :meth:`StrategySpec.bind` substitutes a parameter set (the
spec's ``params`` fill in what a grid point does not give) and validates the result, so a grid
is checked point by point before anything runs.

Warm-up (:attr:`BoundSpec.warmup`): the largest warm-up of anything the spec reads - every
rule (entries and exits) and the ATR of ATR-based stops - as the registry declares it (the
pipeline's NaN prefix; ``x[n]`` adds ``n``, ``crosses_*`` adds 1). No position is taken before
that bar, so ``required_bars = warmup + 2`` is exact, as for the built-ins
(:func:`compute.backtest.strategies.required_bars`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compute.indicators.registry import MAX_WINDOW, REGISTRY, Request
from compute.strategy import rules
from compute.strategy.parser import parse_rule
from compute.strategy.rules import IndicatorRef, Num, Placeholder, RuleError

RULE_FIELDS = ("long_entry", "long_exit", "short_entry", "short_exit")
WEIGHT_FIELDS = ("long_weight", "short_weight")
STOP_FIELDS = ("stop_loss", "take_profit", "trailing_stop")
FIELDS = ("name", *RULE_FIELDS, *WEIGHT_FIELDS, *STOP_FIELDS, "params")
MAX_WEIGHT = 10.0
MAX_PARAMS = 32
ATR_DEFAULT_N = 14
#: (low, high] of a stop's value by field and kind: a pct stop-loss or trailing stop of 100 %
#: or more could never trigger; ATR multiples beyond 100 are typos
STOP_BOUNDS = {
    ("stop_loss", "pct"): (0.0, 0.999),
    ("trailing_stop", "pct"): (0.0, 0.999),
    ("take_profit", "pct"): (0.0, 100.0),
    **{(f, "atr"): (0.0, 100.0) for f in STOP_FIELDS},
}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

Value = Num | Placeholder


@dataclass(frozen=True)
class Stop:
    """A protective exit: ``kind`` ``"pct"`` (a fraction of the fill price; of the running
    extreme for a trailing stop) or ``"atr"`` (``value`` x ATR(``n``) at the entry decision)."""

    kind: str
    value: Value
    n: int = ATR_DEFAULT_N


@dataclass(frozen=True)
class BoundStop:
    kind: str
    value: float
    n: int

    @property
    def atr_request(self) -> Request | None:
        return Request(REGISTRY["atr"], (self.n,)) if self.kind == "atr" else None


def _err(field_: str, detail: str, token: Any = "", valid: list[str] | None = None) -> RuleError:
    return RuleError(detail, token=str(token), position=0, valid=valid or [], field=field_)


def _value(field_: str, raw: Any) -> Value:
    """A number or a ``"{name}"`` placeholder string."""
    if isinstance(raw, str) and (m := _PLACEHOLDER.fullmatch(raw.strip())):
        return Placeholder(m.group(1), 0)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise _err(field_, 'expected a number or a "{placeholder}"', raw, ["0.5", "{w}"])
    return Num(float(raw), 0, repr(raw))


def _stop(field_: str, raw: Any) -> Stop:
    if not isinstance(raw, Mapping) or not raw:
        raise _err(field_, "a stop is an object: {\"pct\": 0.05} or {\"atr\": 2, \"n\": 14}", raw,
                   ['{"pct": x}', '{"atr": k, "n": 14}'])  # fmt: skip
    keys = set(raw)
    kinds = keys & {"pct", "atr"}
    extra = keys - {"pct", "atr", "n"}
    if len(kinds) != 1 or extra or ("n" in keys and "atr" not in keys):
        bad = sorted(extra or keys)[0]
        raise _err(f"{field_}.{bad}", "a stop has one of pct or atr (atr may add n)", bad,
                   ["pct", "atr", "n"])  # fmt: skip
    kind = kinds.pop()
    n = raw.get("n", ATR_DEFAULT_N)
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_WINDOW:
        raise _err(f"{field_}.n", f"the ATR window must be an integer in [1, {MAX_WINDOW}]", n)
    return Stop(kind, _value(f"{field_}.{kind}", raw[kind]), n)


@dataclass(frozen=True)
class StrategySpec:
    """A validated spec (placeholders still unbound). Build it with :func:`parse_spec`."""

    name: str
    rules: dict[str, rules.Expr]
    texts: dict[str, str]
    weights: dict[str, Value]
    stops: dict[str, Stop]
    defaults: dict[str, float]
    source: dict[str, Any] = field(repr=False)

    @property
    def placeholders(self) -> list[str]:
        """Every placeholder name, in order of first use."""
        seen: dict[str, None] = {}
        for tree in self.rules.values():
            seen.update((p.name, None) for p in rules.placeholders(tree))
        for v in (*self.weights.values(), *(s.value for s in self.stops.values())):
            if isinstance(v, Placeholder):
                seen[v.name] = None
        return list(seen)

    def canonical(self) -> str:
        """The spec as canonical JSON (sorted keys, rules as written): what a registry stores."""
        return json.dumps(self.source, sort_keys=True, separators=(",", ":"))

    def fingerprint(self) -> str:
        """sha256 of :meth:`canonical`: equal specs, equal fingerprints."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    def bind(self, values: Mapping[str, Any] | None = None) -> BoundSpec:
        """The spec with every placeholder bound (``values`` over the spec's ``params``),
        validated: RuleError at the placeholder whose value is out of range."""
        given = dict(values or {})
        names = self.placeholders
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise _err("params", f"unknown parameter(s) {unknown}", unknown[0], names)
        merged: dict[str, float] = {}
        for name in names:
            raw = given.get(name, self.defaults.get(name))
            if raw is None:
                raise _err("params", f"no value for placeholder {{{name}}} (give it in params "
                           "or the grid)", "{" + name + "}", names)  # fmt: skip
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                raise _err("params", f"{name} must be a number, got {raw!r}", raw)
            merged[name] = float(raw)
        requests: dict[IndicatorRef, Request] = {}
        warm = 0
        for f, tree in self.rules.items():
            try:
                for node in rules.walk(tree):
                    if isinstance(node, IndicatorRef) and node not in requests:
                        requests[node] = rules.bind_request(node, merged, self.texts[f])
            except RuleError as exc:
                raise exc.located(f, self.texts[f]) from None
            warm = max(warm, rules.warmup(tree, requests))
        weights = {
            f: _bound_number(f, self.weights.get(f, Num(1.0, 0, "1")), merged, 0.0, MAX_WEIGHT)
            for f in WEIGHT_FIELDS
        }
        stops = {}
        for f, s in self.stops.items():
            low, high = STOP_BOUNDS[(f, s.kind)]
            stops[f] = BoundStop(s.kind, _bound_number(f"{f}.{s.kind}", s.value, merged, low,
                                                       high), s.n)  # fmt: skip
            if s.kind == "atr":
                warm = max(warm, s.n)  # ATR(n) is defined from bar n
        return BoundSpec(self, merged, requests, weights, stops, warm)


def _bound_number(
    field_: str, v: Value, values: Mapping[str, float], low: float, high: float
) -> float:
    x = values[v.name] if isinstance(v, Placeholder) else v.value
    if not (math.isfinite(x) and low < x <= high):
        raise _err(field_, f"must be in ({low:g}, {high:g}], got {x!r}", v.text)
    return float(x)


@dataclass(frozen=True)
class BoundSpec:
    """A spec with one parameter set: concrete indicator requests, weights, stops, warm-up."""

    spec: StrategySpec
    values: dict[str, float]
    requests: dict[IndicatorRef, Request]
    weights: dict[str, float]
    stops: dict[str, BoundStop]
    warmup: int

    @property
    def required_bars(self) -> int:
        """Candles for one traded bar: the first possible position at ``warmup``, its fill at
        the next open, and that bar's close."""
        return self.warmup + 2

    def indicator_requests(self) -> tuple[Request, ...]:
        """Every registry item the spec reads (rules and ATR stops), each once."""
        out: dict[tuple[str, tuple[float, ...]], Request] = {}
        for r in self.requests.values():
            out.setdefault((r.spec.name, r.values), r)
        for s in self.stops.values():
            if (a := s.atr_request) is not None:
                out.setdefault((a.spec.name, a.values), a)
        return tuple(out.values())


def parse_spec(raw: Mapping[str, Any], *, allow_future: bool = False) -> StrategySpec:
    """Validate a JSON strategy spec (see the module docstring) into a :class:`StrategySpec`.

    Raises :class:`~compute.strategy.rules.RuleError` (a ``StrategyError``: a ``SpecError``
    and an ``InputDataError``) naming the field, the token, its position and what is valid.
    Defaults of placeholders are checked by binding them once, so a spec that parses also
    runs with its defaults (when every placeholder has one).
    """
    if not isinstance(raw, Mapping):
        raise _err("spec", "a strategy spec is a JSON object", type(raw).__name__, list(FIELDS))
    unknown = [k for k in raw if k not in FIELDS]
    if unknown:
        raise _err(str(unknown[0]), f"unknown spec field {unknown[0]!r}", unknown[0], list(FIELDS))
    texts = {f: raw[f] for f in RULE_FIELDS if raw.get(f) is not None}
    if "long_entry" not in texts and "short_entry" not in texts:
        raise _err("long_entry", "a spec needs long_entry or short_entry (or both)", "",
                   ["long_entry", "short_entry"])  # fmt: skip
    trees = {}
    for f, text in texts.items():
        if not isinstance(text, str):
            raise _err(f, "a rule is a string", text, ["ema:12 > ema:26"])
        try:
            trees[f] = parse_rule(text, allow_future=allow_future)
        except RuleError as exc:
            raise exc.located(f, text) from None
    for side in ("long", "short"):
        if f"{side}_exit" in texts and f"{side}_entry" not in texts:
            raise _err(f"{side}_exit", f"{side}_exit without {side}_entry", "",
                       [f"{side}_entry"])  # fmt: skip
    weights = {f: _value(f, raw[f]) for f in WEIGHT_FIELDS if raw.get(f) is not None}
    stops = {f: _stop(f, raw[f]) for f in STOP_FIELDS if raw.get(f) is not None}
    params = raw.get("params") or {}
    if not isinstance(params, Mapping) or len(params) > MAX_PARAMS:
        raise _err("params", f"params is an object of at most {MAX_PARAMS} numbers", params)
    name = raw.get("name") or "spec"
    if not isinstance(name, str) or len(name) > 80:
        raise _err("name", "name is a string of at most 80 characters", name)
    source = {k: raw[k] for k in FIELDS if raw.get(k) is not None}
    spec = StrategySpec(name, trees, texts, weights, stops, dict(params), source)
    unknown_params = sorted(set(params) - set(spec.placeholders))
    if unknown_params:
        raise _err("params", f"parameter(s) {unknown_params} are used by no placeholder",
                   unknown_params[0], spec.placeholders)  # fmt: skip
    if all(p in params for p in spec.placeholders):
        spec.bind()
    return spec
