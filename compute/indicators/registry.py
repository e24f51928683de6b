"""The indicator catalogue: names, parameters, output columns and warm-ups; the spec parser.

Pure Python (no JAX), so an API can parse ``"ema:20,rsi:14,macd:12:26:9,bb:20:2"``, reject it
with a message listing what is valid, and say "needs N candles" before any work is submitted.

Spec grammar: items separated by ``,``; an item is ``name[:p1[:p2 ...]]``; omitted trailing
parameters take their defaults; names are case-insensitive; repeated items are merged.
An output column is ``<output>_<p1>_<p2>...`` with *every* parameter (defaults included), so a
column name says exactly what it holds: ``ema:20`` -> ``ema_20``, ``bb`` -> ``bb_mid_20_2``.
The warm-up of an output is the number of leading bars that are NaN (labels: -1, signals: 0);
``required_candles`` is the largest warm-up + 1, the length that yields one defined value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from compute.core.errors import SpecError
from compute.core.labels import GATE_WARMUP

MAX_ITEMS = 64
MAX_WINDOW = 100_000

Values = Mapping[str, float]


@dataclass(frozen=True)
class Param:
    """One positional parameter: integer or float, with an inclusive range."""

    name: str
    kind: type
    default: float
    low: float
    high: float
    doc: str = ""

    def parse(self, text: str, item: str) -> float:
        """The value of ``text``, or SpecError naming the item, parameter and valid range."""
        try:
            value: float = int(text) if self.kind is int else float(text)
        except ValueError:
            raise SpecError(
                f"{item!r}: {self.name} must be {self.kind.__name__}, got {text!r}"
            ) from None
        if not math.isfinite(value) or not self.low <= value <= self.high:
            raise SpecError(
                f"{item!r}: {self.name} must be in [{self.low:g}, {self.high:g}], got {text}"
            )
        return value

    def usage(self) -> str:
        return (
            f"{self.name}={_fmt(self.default)} ({self.kind.__name__} {self.low:g}..{self.high:g})"
        )


@dataclass(frozen=True)
class Output:
    """One output column family: its name, dtype and warm-up as a function of the parameters."""

    name: str
    dtype: str
    warmup: Callable[[Values], int]


@dataclass(frozen=True)
class IndicatorSpec:
    """A named indicator, label or signal."""

    name: str
    kind: str  # "indicator" | "label" | "signal"
    summary: str
    inputs: tuple[str, ...]
    params: tuple[Param, ...]
    outputs: tuple[Output, ...]
    check: Callable[[Values], str | None] = field(default=lambda p: None)

    def usage(self) -> str:
        names = ":".join(p.name for p in self.params)
        return f"{self.name}{':' + names if names else ''}"


@dataclass(frozen=True)
class Request:
    """One parsed spec item: an indicator and its full parameter values."""

    spec: IndicatorSpec
    values: tuple[float, ...]

    @property
    def params(self) -> dict[str, float]:
        return {p.name: v for p, v in zip(self.spec.params, self.values, strict=True)}

    @property
    def suffix(self) -> str:
        return "_".join(_fmt(v) for v in self.values)

    def column(self, output: str) -> str:
        return f"{output}_{self.suffix}" if self.suffix else output

    @property
    def columns(self) -> dict[str, str]:
        """Output name -> column name."""
        return {o.name: self.column(o.name) for o in self.spec.outputs}

    @property
    def warmup(self) -> int:
        return max(o.warmup(self.params) for o in self.spec.outputs)

    def text(self) -> str:
        return ":".join([self.spec.name, *(_fmt(v) for v in self.values)])


def _fmt(value: float) -> str:
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _i(v: Values, *names: str) -> list[int]:
    return [int(v[n]) for n in names]


def _window(name: str, default: int, low: int = 1) -> Param:
    return Param(name, int, default, low, MAX_WINDOW)


_FLAGS = (
    Param("long_only", int, 0, 0, 1, "1: shorts become flat"),
    Param("vol_gate", int, 0, 0, 1, "1: flat unless vol regime LOW/NORMAL"),
)


def _gated(base: Callable[[Values], int]) -> Callable[[Values], int]:
    return lambda v: max(base(v), GATE_WARMUP if v["vol_gate"] else 0)


def _less(a: str, b: str) -> Callable[[Values], str | None]:
    return lambda v: None if v[a] < v[b] else f"{a} must be smaller than {b}"


F, I8 = "float64", "int8"
C, HLC, HLCV = ("close",), ("high", "low", "close"), ("high", "low", "close", "volume")

_SPECS = (
    IndicatorSpec(
        "sma",
        "indicator",
        "simple moving average",
        C,
        (_window("n", 20),),
        (Output("sma", F, lambda v: int(v["n"]) - 1),),
    ),
    IndicatorSpec(
        "ema",
        "indicator",
        "EMA seeded with the SMA of the first n",
        C,
        (_window("n", 20),),
        (Output("ema", F, lambda v: int(v["n"]) - 1),),
    ),
    IndicatorSpec(
        "rsi",
        "indicator",
        "Wilder RSI (50 when price did not move)",
        C,
        (_window("n", 14),),
        (Output("rsi", F, lambda v: int(v["n"])),),
    ),
    IndicatorSpec(
        "macd",
        "indicator",
        "MACD line, signal, histogram",
        C,
        (_window("fast", 12), _window("slow", 26), _window("signal", 9)),
        (
            Output("macd", F, lambda v: int(v["slow"]) - 1),
            Output("macd_signal", F, lambda v: int(v["slow"]) + int(v["signal"]) - 2),
            Output("macd_hist", F, lambda v: int(v["slow"]) + int(v["signal"]) - 2),
        ),
        _less("fast", "slow"),
    ),
    IndicatorSpec(
        "atr",
        "indicator",
        "Wilder average true range",
        HLC,
        (_window("n", 14),),
        (Output("atr", F, lambda v: int(v["n"])),),
    ),
    IndicatorSpec(
        "bb",
        "indicator",
        "Bollinger bands (population std), %b and width",
        C,
        (_window("n", 20), Param("k", float, 2.0, 1e-6, 100.0)),
        tuple(
            Output(f"bb_{o}", F, lambda v: int(v["n"]) - 1)
            for o in ("mid", "upper", "lower", "pctb", "width")
        ),
    ),
    IndicatorSpec(
        "zscore",
        "indicator",
        "rolling z-score (population std)",
        C,
        (_window("n", 20, 2),),
        (Output("zscore", F, lambda v: int(v["n"]) - 1),),
    ),
    IndicatorSpec(
        "vwap",
        "indicator",
        "rolling VWAP of the typical price",
        HLCV,
        (_window("n", 20),),
        (Output("vwap", F, lambda v: int(v["n"]) - 1),),
    ),
    IndicatorSpec(
        "svwap",
        "indicator",
        "VWAP anchored at each UTC day",
        (*HLCV, "ts"),
        (),
        (Output("svwap", F, lambda v: 0),),
    ),
    IndicatorSpec("ret", "indicator", "simple return", C, (), (Output("ret", F, lambda v: 1),)),
    IndicatorSpec("logret", "indicator", "log return", C, (), (Output("logret", F, lambda v: 1),)),
    IndicatorSpec(
        "rvol",
        "indicator",
        "annualised realized volatility",
        C,
        (_window("n", 20, 2), Param("ppy", float, 365.0, 1.0, 1e8, "periods per year")),
        (Output("rvol", F, lambda v: int(v["n"])),),
    ),
    IndicatorSpec(
        "vov",
        "indicator",
        "volatility of realized volatility",
        C,
        (_window("n", 20, 2), _window("m", 20, 2), Param("ppy", float, 365.0, 1.0, 1e8)),
        (Output("vov", F, lambda v: int(v["n"]) + int(v["m"]) - 1),),
    ),
    IndicatorSpec(
        "vreg",
        "label",
        "volatility regime vs EW baseline of past vol (-1/0/1/2)",
        C,
        (_window("n", 20, 2), _window("lookback", 250, 2), Param("z", float, 0.6745, 0.0, 10.0)),
        (Output("vreg", I8, lambda v: int(v["n"]) + int(v["lookback"])),),
    ),
    IndicatorSpec(
        "vreg_fixed",
        "label",
        "volatility regime by fixed annualised thresholds",
        C,
        (
            _window("n", 20, 2),
            Param("low", float, 0.4, 0.0, 100.0),
            Param("high", float, 0.8, 0.0, 100.0),
            Param("ppy", float, 365.0, 1.0, 1e8),
        ),
        (Output("vreg_fixed", I8, lambda v: int(v["n"])),),
        _less("low", "high"),
    ),
    IndicatorSpec(
        "trend",
        "label",
        "trend score and regime (EMA slope in ATR units)",
        HLC,
        (
            _window("n", 20),
            _window("atr_n", 14),
            _window("slope", 5),
            Param("threshold", float, 0.1, 0.0, 100.0),
        ),
        (
            Output(
                "trend_score", F, lambda v: max(int(v["n"]) - 1 + int(v["slope"]), int(v["atr_n"]))
            ),
            Output("trend", I8, lambda v: max(int(v["n"]) - 1 + int(v["slope"]), int(v["atr_n"]))),
        ),
    ),
    IndicatorSpec(
        "ema_cross",
        "signal",
        "long EMA fast > slow, short below",
        C,
        (_window("fast", 12), _window("slow", 26), *_FLAGS),
        (Output("ema_cross", I8, _gated(lambda v: int(v["slow"]) - 1)),),
        _less("fast", "slow"),
    ),
    IndicatorSpec(
        "rsi_mr",
        "signal",
        "RSI mean reversion: long oversold, short overbought",
        C,
        (
            _window("n", 14),
            Param("lower", float, 30.0, 0.0, 100.0),
            Param("upper", float, 70.0, 0.0, 100.0),
            *_FLAGS,
        ),
        (Output("rsi_mr", I8, _gated(lambda v: int(v["n"]))),),
        _less("lower", "upper"),
    ),
    IndicatorSpec(
        "bb_break",
        "signal",
        "Bollinger breakout: long above upper, short below lower",
        C,
        (_window("n", 20), Param("k", float, 2.0, 1e-6, 100.0), *_FLAGS),
        (Output("bb_break", I8, _gated(lambda v: int(v["n"]) - 1)),),
    ),
)

REGISTRY: dict[str, IndicatorSpec] = {s.name: s for s in _SPECS}


def describe() -> str:
    """One line per valid spec item: syntax, parameters with defaults and ranges, summary."""
    lines = []
    for s in REGISTRY.values():
        params = ", ".join(p.usage() for p in s.params) or "no parameters"
        lines.append(f"  {s.usage()}  - {s.summary}; {params}")
    return "\n".join(lines)


def _parse_item(item: str) -> Request:
    name, *texts = (part.strip() for part in item.split(":"))
    spec = REGISTRY.get(name.lower())
    if spec is None:
        raise SpecError(f"unknown indicator {name!r}; valid items:\n{describe()}")
    if len(texts) > len(spec.params):
        raise SpecError(
            f"{item!r}: {spec.name} takes at most {len(spec.params)} parameters ({spec.usage()})"
        )
    values = [p.parse(t, item) for p, t in zip(spec.params, texts, strict=False)]
    values += [p.default for p in spec.params[len(values) :]]
    values = [
        int(v) if p.kind is int else float(v) for p, v in zip(spec.params, values, strict=True)
    ]
    request = Request(spec, tuple(values))
    problem = spec.check(request.params)
    if problem:
        raise SpecError(f"{item!r}: {problem}")
    return request


def parse_indicator_spec(text: str) -> tuple[Request, ...]:
    """Parse ``"ema:20,rsi:14,..."`` into requests (order kept, duplicates merged).

    Raises :class:`~compute.core.errors.SpecError` (a ``ValueError``) listing the valid items.
    """
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"empty indicator spec; valid items:\n{describe()}")
    items = [part.strip() for part in text.split(",")]
    if any(not part for part in items):
        raise SpecError(f"empty item in {text!r} (stray comma?)")
    if len(items) > MAX_ITEMS:
        raise SpecError(f"at most {MAX_ITEMS} items per spec, got {len(items)}")
    requests: dict[tuple[str, tuple[float, ...]], Request] = {}
    for item in items:
        r = _parse_item(item)
        requests.setdefault((r.spec.name, r.values), r)
    return tuple(requests.values())


def required_candles(requests: Iterable[Request] | str) -> int:
    """Candles needed for every requested output to have at least one defined value."""
    reqs = parse_indicator_spec(requests) if isinstance(requests, str) else tuple(requests)
    return max((r.warmup for r in reqs), default=0) + 1


def required_inputs(requests: Iterable[Request]) -> tuple[str, ...]:
    """Input arrays the requests read, in the order open, high, low, close, volume, ts."""
    needed = {name for r in requests for name in r.spec.inputs}
    return tuple(n for n in ("open", "high", "low", "close", "volume", "ts") if n in needed)
