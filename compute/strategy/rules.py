"""The rule language of declarative strategies: its typed tree, errors, binding and warm-ups.

A rule is one boolean expression over the candle columns and the indicator registry
(:func:`compute.strategy.parser.parse_rule` builds the tree)::

    rule       := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := sum [(">" | "<" | ">=" | "<=" | "==" | "!=" | "crosses_above"
                        | "crosses_below") sum]
    sum        := term (("+" | "-") term)*
    term       := unary (("*" | "/") unary)*
    unary      := "-" unary | postfix
    postfix    := primary ["[" INT "]"]                  (the value INT bars ago)
    primary    := NUMBER | "{" NAME "}" | COLUMN | REF | FUNC "(" sum ("," sum)* ")"
                | "(" rule ")"
    COLUMN     := open | high | low | close | volume
    REF        := NAME (":" (NUMBER | "{" NAME "}"))* ["." NAME]
    FUNC       := abs | min | max

``REF`` names an item of :data:`compute.indicators.registry.REGISTRY` with its positional
parameters (omitted trailing ones take their defaults), or one output column family of an item
(``bb_lower:20:2``, ``macd_signal:12:26:9``); ``.NAME`` selects an output of a multi-output
item (``macd:12:26:9.signal`` = ``macd_signal``, ``bb:20:2.lower`` = ``bb_lower``). ``{NAME}``
is a grid placeholder, bound to a number before compilation. Names and keywords are
case-insensitive. Comparisons and ``and``/``or``/``not`` yield conditions; arithmetic yields
numbers; a rule must be a condition.

Every syntax or name error is a :class:`RuleError` carrying the offending token, its
0-based character position in the rule and the list of what would have been valid there, so an
API can answer a 422 that points at it. The tree is pure Python (no JAX); ``parse_rule`` is
re-exported here for convenience.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from compute.backtest.strategies import StrategyError
from compute.indicators.registry import REGISTRY, IndicatorSpec, Request

COLUMNS = ("open", "high", "low", "close", "volume")
COMPARISONS = (">", "<", ">=", "<=", "==", "!=", "crosses_above", "crosses_below")
ARITHMETIC = ("+", "-", "*", "/")
FUNCTIONS = {"abs": 1, "min": 2, "max": 2}
KEYWORDS = ("and", "or", "not", "crosses_above", "crosses_below")
MAX_RULE_CHARS = 2_000
MAX_NODES = 200
MAX_LAG = 100_000

#: output column family -> the registry item that produces it
OUTPUT_OWNER: dict[str, str] = {o.name: s.name for s in REGISTRY.values() for o in s.outputs}


class RuleError(StrategyError):
    """A rule or spec that cannot be compiled: says which token, where, and what is valid.

    ``field`` is the spec field (``"long_entry"``, ``"stop_loss.atr"``...), ``token`` the
    offending text, ``position`` its 0-based character offset in that field's rule text (0 for
    fields that are not rules), ``valid`` what would have been accepted there.
    """

    def __init__(
        self,
        detail: str,
        *,
        token: str,
        position: int,
        valid: Sequence[str] = (),
        field: str | None = None,
        source: str | None = None,
    ) -> None:
        self.detail = detail
        self.token = token
        self.position = int(position)
        self.valid = list(valid)
        self.field = field
        self.source = source
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"{self.field}: " if self.field else ""
        text = f"{where}{self.detail} (token {self.token!r} at position {self.position})"
        if self.source is not None:
            text += f"\n  {self.source}\n  {' ' * self.position}^"
        if self.valid:
            shown = ", ".join(self.valid[:60]) + (" ..." if len(self.valid) > 60 else "")
            text += f"\n  valid: {shown}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only fields survive pickling (Ray)
        return (_rebuild, (self.detail, self.token, self.position, self.valid, self.field,
                           self.source))  # fmt: skip

    def located(self, field: str, source: str | None = None) -> RuleError:
        """The same error attributed to a spec field (and its text, for the caret line)."""
        return RuleError(
            self.detail, token=self.token, position=self.position, valid=self.valid,
            field=field, source=source if source is not None else self.source,
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: field, token, position, valid, message (what a 422 body carries)."""
        return {
            "field": self.field,
            "token": self.token,
            "position": self.position,
            "valid": self.valid,
            "message": self.detail,
        }


def _rebuild(
    detail: str, token: str, position: int, valid: list[str], field: str | None, source: str | None
) -> RuleError:
    return RuleError(
        detail, token=token, position=position, valid=valid, field=field, source=source
    )


# --- the tree ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    value: float
    pos: int
    text: str


@dataclass(frozen=True)
class Placeholder:
    name: str
    pos: int

    @property
    def text(self) -> str:
        return "{" + self.name + "}"


Arg = Num | Placeholder


@dataclass(frozen=True)
class Column:
    name: str
    pos: int


@dataclass(frozen=True)
class IndicatorRef:
    """``item:args[.output]``; ``args`` holds only the parameters written (defaults later)."""

    item: str
    output: str
    args: tuple[Arg, ...]
    pos: int
    text: str


@dataclass(frozen=True)
class Lag:
    x: Expr
    n: int
    pos: int


@dataclass(frozen=True)
class Unary:
    op: str  # "-" | "not"
    x: Expr
    pos: int


@dataclass(frozen=True)
class Binary:
    op: str  # arithmetic, comparison, "and", "or"
    a: Expr
    b: Expr
    pos: int


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple[Expr, ...]
    pos: int


Expr = Num | Placeholder | Column | IndicatorRef | Lag | Unary | Binary | Call


def kind(node: Expr) -> str:
    """``"condition"`` or ``"number"``."""
    if isinstance(node, Binary) and node.op in (*COMPARISONS, "and", "or"):
        return "condition"
    if isinstance(node, Unary) and node.op == "not":
        return "condition"
    if isinstance(node, Lag):
        return kind(node.x)
    return "number"


def walk(node: Expr) -> Iterator[Expr]:
    """Every node of the tree, depth first."""
    yield node
    if isinstance(node, Lag | Unary):
        yield from walk(node.x)
    elif isinstance(node, Binary):
        yield from walk(node.a)
        yield from walk(node.b)
    elif isinstance(node, Call):
        for a in node.args:
            yield from walk(a)


def _check_value(
    spec: IndicatorSpec, pname: str, value: float, token: str, pos: int, source: str | None
) -> float:
    """``value`` for parameter ``pname`` of ``spec``, or a RuleError naming the range."""
    param = next(p for p in spec.params if p.name == pname)
    ok = math.isfinite(value) and param.low <= value <= param.high
    if param.kind is int and not float(value).is_integer():
        ok = False
    if not ok:
        got = f"{token} = {value:g}" if token.startswith("{") else token
        raise RuleError(
            f"{spec.name}: {pname} must be {param.kind.__name__} in "
            f"[{param.low:g}, {param.high:g}], got {got}",
            token=token, position=pos, valid=[param.usage()], source=source,
        )  # fmt: skip
    return value


# --- binding and warm-ups ---------------------------------------------------------------------


def placeholders(node: Expr) -> list[Placeholder]:
    """Every placeholder of a tree (indicator arguments included), in order."""
    out: list[Placeholder] = []
    for n in walk(node):
        if isinstance(n, Placeholder):
            out.append(n)
        elif isinstance(n, IndicatorRef):
            out += [a for a in n.args if isinstance(a, Placeholder)]
    return out


def bind_request(ref: IndicatorRef, values: dict[str, float], source: str | None) -> Request:
    """The registry :class:`Request` of ``ref`` with its placeholders bound (defaults filled)."""
    spec = REGISTRY[ref.item]
    given: list[float] = []
    for arg, param in zip(ref.args, spec.params, strict=False):
        if isinstance(arg, Placeholder):
            value = float(values[arg.name])
            given.append(_check_value(spec, param.name, value, arg.text, arg.pos, source))
        else:
            given.append(arg.value)
    given += [p.default for p in spec.params[len(given) :]]
    full = tuple(
        int(v) if p.kind is int else float(v) for p, v in zip(spec.params, given, strict=True)
    )
    request = Request(spec, full)
    problem = spec.check(request.params)
    if problem:
        raise RuleError(
            f"{spec.name}: {problem}", token=ref.text, position=ref.pos,
            valid=[p.usage() for p in spec.params], source=source,
        )  # fmt: skip
    return request


def warmup(node: Expr, requests: dict[IndicatorRef, Request]) -> int:
    """Bars before the first bar where every value the rule reads is defined.

    An indicator output contributes its registry warm-up (the pipeline's NaN prefix); ``x[n]``
    adds ``n``; ``a crosses_above b`` reads both one bar back, so it adds 1.
    """
    if isinstance(node, Num | Placeholder | Column):
        return 0
    if isinstance(node, IndicatorRef):
        request = requests[node]
        out = next(o for o in request.spec.outputs if o.name == node.output)
        return int(out.warmup(request.params))
    if isinstance(node, Lag):
        return warmup(node.x, requests) + max(node.n, 0)
    if isinstance(node, Unary):
        return warmup(node.x, requests)
    if isinstance(node, Call):
        return max(warmup(a, requests) for a in node.args)
    extra = 1 if node.op in ("crosses_above", "crosses_below") else 0
    return max(warmup(node.a, requests), warmup(node.b, requests)) + extra


def render(node: Expr) -> str:
    """Canonical text of a tree (fully parenthesised, lower case): equal text, equal rule."""
    if isinstance(node, Num):
        return repr(node.value)
    if isinstance(node, Placeholder):
        return node.text
    if isinstance(node, Column):
        return node.name
    if isinstance(node, IndicatorRef):
        args = "".join(":" + (a.text if isinstance(a, Placeholder) else repr(a.value))
                       for a in node.args)  # fmt: skip
        return f"{node.item}{args}.{node.output}"
    if isinstance(node, Lag):
        return f"{render(node.x)}[{node.n}]"
    if isinstance(node, Unary):
        return f"({node.op} {render(node.x)})"
    if isinstance(node, Call):
        return f"{node.fn}({', '.join(render(a) for a in node.args)})"
    return f"({render(node.a)} {node.op} {render(node.b)})"


def parse_rule(text: str, *, allow_future: bool = False) -> Expr:
    """:func:`compute.strategy.parser.parse_rule` (the tree of one rule, or RuleError)."""
    from compute.strategy.parser import parse_rule as parse

    return parse(text, allow_future=allow_future)
