"""The parser of the rule language: tokens with their positions, a recursive descent.

The grammar (every syntax or name error is a :class:`compute.strategy.rules.RuleError` with the
offending token, its 0-based position and what would have been valid)::

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

A ``REF`` (``name:p1:p2[.output]``) is lexed as one token carrying the positions of its
parameters and output, so an out-of-range parameter is reported at its own position.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from compute.indicators.registry import REGISTRY
from compute.strategy.rules import (
    ARITHMETIC,
    COLUMNS,
    COMPARISONS,
    FUNCTIONS,
    KEYWORDS,
    MAX_LAG,
    MAX_NODES,
    MAX_RULE_CHARS,
    OUTPUT_OWNER,
    Arg,
    Binary,
    Call,
    Column,
    Expr,
    IndicatorRef,
    Lag,
    Num,
    Placeholder,
    RuleError,
    Unary,
    _check_value,
    kind,
)

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
