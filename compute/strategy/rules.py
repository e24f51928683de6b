"""The rule language of declarative strategies: tokens with positions, a typed tree, warm-ups.

A rule is one boolean expression over the candle columns and the indicator registry::

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
API can answer a 422 that points at it. The tree is pure Python (no JAX).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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


# --- tokens -----------------------------------------------------------------------------------

_NUMBER = r"(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?"
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TOKEN = re.compile(
    rf"(?P<ws>\s+)|(?P<num>{_NUMBER})|(?P<ph>\{{{_NAME}\}})|(?P<name>{_NAME})"
    r"|(?P<op>>=|<=|==|!=|[<>+\-*/()\[\],])"
)
_HINTS = {"&": "and", "|": "or", "!": "not", "=": "==", "~": "not"}
_ARG = re.compile(rf"-?{_NUMBER}|\{{{_NAME}\}}")


@dataclass(frozen=True)
class Token:
    kind: str  # num, ph, name, op, kw, ref, end
    text: str
    pos: int
    parts: tuple[tuple[str, int], ...] = field(default=())  # ref: (arg text, position)
    output: tuple[str, int] | None = None  # ref: (".output" name, position)


def _names() -> list[str]:
    return sorted({*COLUMNS, *REGISTRY, *OUTPUT_OWNER, *FUNCTIONS})


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``; an ``END`` token closes the list."""
    out: list[Token] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            hint = _HINTS.get(text[i])
            raise RuleError(
                f"unexpected character{f' (write {hint!r})' if hint else ''}",
                token=text[i], position=i, source=text,
                valid=["numbers", "names", *COMPARISONS, *ARITHMETIC, "(", ")", "[", "]"],
            )  # fmt: skip
        kind_ = m.lastgroup or ""
        if kind_ == "num" and m.end() < len(text) and re.match(r"[A-Za-z_]", text[m.end()]):
            raise RuleError(
                "a number runs into a name (missing space or operator?)",
                token=text[i : m.end() + 1], position=i, source=text,
            )  # fmt: skip
        if kind_ == "name":
            word = m.group().lower()
            if word in KEYWORDS:
                out.append(Token("kw", word, i))
            else:
                out.append(_reference(text, m.group(), i))
                i = out[-1].pos + len(out[-1].text)
                continue
        elif kind_ != "ws":
            out.append(Token(kind_, m.group(), i))
        i = m.end()
    out.append(Token("end", "", len(text)))
    return out


def _reference(text: str, name: str, start: int) -> Token:
    """A name with its ``:param`` parts and ``.output`` selection, as one token."""
    i = start + len(name)
    parts: list[tuple[str, int]] = []
    while i < len(text) and text[i] == ":":
        m = _ARG.match(text, i + 1)
        if m is None:
            bad = re.match(r"[^\s:()\[\],]*", text[i + 1 :])
            raise RuleError(
                "a parameter must be a number or a {placeholder}",
                token=(bad.group() if bad else "") or ":", position=i + 1, source=text,
            )  # fmt: skip
        parts.append((m.group(), i + 1))
        i = m.end()
    output = None
    if i < len(text) and text[i] == ".":
        m = re.compile(_NAME).match(text, i + 1)
        if m is None:
            raise RuleError("expected an output name after '.'", token=".", position=i, source=text)
        output = (m.group().lower(), i + 1)
        i = m.end()
    return Token("ref", text[start:i], start, tuple(parts), output)


# --- parser -----------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, allow_future: bool) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.allow_future = allow_future
        self.nodes = 0

    def error(self, detail: str, tok: Token, valid: Sequence[str] = ()) -> RuleError:
        return RuleError(
            detail, token=tok.text or "end of rule", position=tok.pos, valid=valid,
            source=self.text,
        )  # fmt: skip

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, *texts: str) -> bool:
        return self.tok.kind in ("op", "kw") and self.tok.text in texts

    def count(self, node: Expr) -> Expr:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.error(f"rule too long: at most {MAX_NODES} terms", self.tok)
        return node

    def expect_kind(self, node: Expr, want: str, tok: Token, role: str) -> Expr:
        if kind(node) != want:
            article = "a condition" if want == "condition" else "a number"
            got = "a condition" if want == "number" else "a number"
            hint = (
                " (compare it: e.g. rsi:14 < 30)" if want == "condition" else
                " (conditions combine with and / or / not)"
            )  # fmt: skip
            raise self.error(f"{role} must be {article}, got {got}{hint}", tok)
        return node

    def parse(self) -> Expr:
        first = self.tok
        node = self.or_expr()
        if self.tok.kind != "end":
            raise self.error(
                "unexpected token after a complete expression",
                self.tok, ["and", "or", *COMPARISONS, *ARITHMETIC, "end of rule"],
            )  # fmt: skip
        return self.expect_kind(node, "condition", first, "a rule")

    def logical(self, op: str, sub: Callable[[], Expr]) -> Expr:
        start = self.tok
        node = sub()
        while self.at(op):
            tok = self.take()
            self.expect_kind(node, "condition", start, f"the left side of {op!r}")
            right_tok = self.tok
            right = self.expect_kind(sub(), "condition", right_tok, f"the right side of {op!r}")
            node = self.count(Binary(op, node, right, tok.pos))
        return node

    def or_expr(self) -> Expr:
        return self.logical("or", self.and_expr)

    def and_expr(self) -> Expr:
        return self.logical("and", self.not_expr)

    def not_expr(self) -> Expr:
        if self.at("not"):
            tok = self.take()
            inner_tok = self.tok
            inner = self.expect_kind(self.not_expr(), "condition", inner_tok, "'not' operand")
            return self.count(Unary("not", inner, tok.pos))
        return self.comparison()

    def comparison(self) -> Expr:
        left_tok = self.tok
        left = self.sum()
        if not self.at(*COMPARISONS):
            return left
        tok = self.take()
        self.expect_kind(left, "number", left_tok, f"the left side of {tok.text!r}")
        right_tok = self.tok
        right = self.expect_kind(self.sum(), "number", right_tok, f"the right side of {tok.text!r}")
        if self.at(*COMPARISONS):
            raise self.error(
                "comparisons do not chain; join them with 'and'", self.tok, ["and", "or"]
            )
        return self.count(Binary(tok.text, left, right, tok.pos))

    def arithmetic(self, ops: tuple[str, ...], sub: Callable[[], Expr]) -> Expr:
        left_tok = self.tok
        node = sub()
        while self.at(*ops):
            tok = self.take()
            self.expect_kind(node, "number", left_tok, f"the left side of {tok.text!r}")
            right_tok = self.tok
            right = self.expect_kind(sub(), "number", right_tok, f"the right side of {tok.text!r}")
            node = self.count(Binary(tok.text, node, right, tok.pos))
        return node

    def sum(self) -> Expr:
        return self.arithmetic(("+", "-"), self.term)

    def term(self) -> Expr:
        return self.arithmetic(("*", "/"), self.unary)

    def unary(self) -> Expr:
        if self.at("-"):
            tok = self.take()
            inner_tok = self.tok
            inner = self.expect_kind(self.unary(), "number", inner_tok, "'-' operand")
            if isinstance(inner, Num):
                return Num(-inner.value, tok.pos, "-" + inner.text)
            return self.count(Unary("-", inner, tok.pos))
        return self.postfix()

    def postfix(self) -> Expr:
        node = self.primary()
        if self.at("["):
            open_tok = self.take()
            neg = self.at("-")
            sign_tok = self.take() if neg else None
            tok = self.take()
            if tok.kind != "num" or not re.fullmatch(r"\d+", tok.text):
                raise self.error("a lag is a whole number of bars: x[1] = x one bar ago", tok)
            n = int(tok.text) * (-1 if neg else 1)
            if n < 0 and not self.allow_future:
                raise self.error(
                    f"x[{n}] reads {-n} bar(s) of the future (look-ahead); lags count bars "
                    "into the past and must be >= 0",
                    sign_tok or tok,
                    ["0", "1", "2", "..."],
                )
            if abs(n) > MAX_LAG:
                raise self.error(f"lags are at most {MAX_LAG} bars", tok)
            if not self.at("]"):
                raise self.error("expected ']'", self.tok, ["]"])
            self.take()
            node = self.count(Lag(node, n, open_tok.pos))
        return node

    def primary(self) -> Expr:
        tok = self.tok
        if tok.kind == "num":
            self.take()
            return self.count(Num(float(tok.text), tok.pos, tok.text))
        if tok.kind == "ph":
            self.take()
            return self.count(Placeholder(tok.text[1:-1], tok.pos))
        if self.at("("):
            self.take()
            node = self.or_expr()
            if not self.at(")"):
                raise self.error("expected ')'", self.tok, [")", "and", "or", *ARITHMETIC])
            self.take()
            return node
        if tok.kind == "ref":
            word = tok.text.lower()
            if word in FUNCTIONS and self.tokens[self.i + 1].text == "(":
                return self.call()
            self.take()
            if word in COLUMNS:
                return self.count(Column(word, tok.pos))
            return self.count(self.reference(tok))
        raise self.error(
            "expected a number, a column, an indicator or '('",
            tok, ["numbers", "{placeholder}", "(", *_names()],
        )  # fmt: skip

    def call(self) -> Expr:
        tok = self.take()
        fn = tok.text.lower()
        self.take()  # "("
        args = []
        while True:
            arg_tok = self.tok
            args.append(self.expect_kind(self.sum(), "number", arg_tok, f"{fn}() argument"))
            if self.at(","):
                self.take()
                continue
            if not self.at(")"):
                raise self.error("expected ',' or ')'", self.tok, [",", ")"])
            self.take()
            break
        if len(args) != FUNCTIONS[fn]:
            raise self.error(f"{fn}() takes {FUNCTIONS[fn]} argument(s), got {len(args)}", tok)
        return self.count(Call(fn, tuple(args), tok.pos))

    def reference(self, tok: Token) -> IndicatorRef:
        name = tok.text.split(":")[0].split(".")[0]
        word = name.lower()
        if word in REGISTRY:
            spec = REGISTRY[word]
            output = word if any(o.name == word for o in spec.outputs) else None
        elif word in OUTPUT_OWNER:
            spec, output = REGISTRY[OUTPUT_OWNER[word]], word
        else:
            raise RuleError(
                f"unknown name {name!r}", token=name, position=tok.pos, valid=_names(),
                source=self.text,
            )  # fmt: skip
        outputs = [o.name for o in spec.outputs]
        if tok.output is not None:
            sel, at = tok.output
            picked = next((o for o in (f"{spec.name}_{sel}", sel) if o in outputs), None)
            if picked is None:
                raise RuleError(
                    f"{spec.name} has no output {sel!r}", token=sel, position=at,
                    valid=[o.removeprefix(spec.name + "_") for o in outputs], source=self.text,
                )  # fmt: skip
            output = picked
        if output is None:
            raise RuleError(
                f"{spec.name} has several outputs; name one (e.g. {outputs[0]}:... or "
                f"{spec.usage()}.{outputs[0].removeprefix(spec.name + '_')})",
                token=name, position=tok.pos, valid=outputs, source=self.text,
            )  # fmt: skip
        if len(tok.parts) > len(spec.params):
            text, at = tok.parts[len(spec.params)]
            raise RuleError(
                f"{spec.name} takes at most {len(spec.params)} parameter(s) ({spec.usage()})",
                token=text, position=at, valid=[p.usage() for p in spec.params],
                source=self.text,
            )  # fmt: skip
        args: list[Arg] = []
        for (text, at), param in zip(tok.parts, spec.params, strict=False):
            if text.startswith("{"):
                args.append(Placeholder(text[1:-1], at))
            else:
                _check_value(spec, param.name, float(text), text, at, self.text)
                args.append(Num(float(text), at, text))
        return IndicatorRef(spec.name, output, tuple(args), tok.pos, tok.text)


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


def parse_rule(text: str, *, allow_future: bool = False) -> Expr:
    """The tree of one rule, or :class:`RuleError` pointing at the offending token.

    ``allow_future=True`` accepts negative lags (``close[-1]``, the next bar's close); it
    exists only so the look-ahead check can be shown to catch a strategy that reads the future.
    """
    if not isinstance(text, str) or not text.strip():
        raise RuleError(
            "empty rule", token=str(text), position=0, valid=["a condition, e.g. rsi:14 < 30"]
        )
    if len(text) > MAX_RULE_CHARS:
        raise RuleError(
            f"rule too long ({len(text)} characters; at most {MAX_RULE_CHARS})",
            token=text[:20], position=0,
        )  # fmt: skip
    return _Parser(text, allow_future).parse()


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
