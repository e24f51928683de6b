"""Rules lowered to hashable programs and evaluated on JAX arrays (three-valued logic).

:func:`lower` turns a bound spec's rule trees into nested tuples where every indicator output
is a *leaf slot* and every number a *constant slot*, so one compiled function serves every
parameter set of a grid (the values come in as arrays) and the program itself is the cache key.

Conditions are three-valued (Kleene): a comparison that reads a NaN (warm-up, a zero-scale
z-score, a label's missing code) is *unknown*, not false; ``not unknown`` is unknown, ``false
and unknown`` is false, ``true or unknown`` is true. Values are float64 ``1.0`` / ``0.0`` /
``NaN``; a rule fires where it is ``1.0``. So ``not (rsi:14 > 70)`` does not fire during the
RSI's warm-up, as plain booleans would.

:func:`evaluate` reads leaf ``j`` at time offset ``o`` through a callable, so the same program
runs on whole ``(T,)`` series (offset = a shift) and inside a time-major loop (offset = a
read ``o`` bars back).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from compute.core.jaxconf import F64, jax, jnp
from compute.indicators.registry import Request
from compute.strategy import rules
from compute.strategy.rules import (
    Binary,
    Call,
    Column,
    IndicatorRef,
    Lag,
    Num,
    Placeholder,
    Unary,
)

Array = jax.Array
Program = tuple[Any, ...]


@dataclass(frozen=True)
class Lowered:
    """Programs per rule field, the leaf columns they read and the constants' values."""

    programs: dict[str, Program]
    leaves: tuple[str, ...]  # pipeline column names, or "open".."volume"
    labels: tuple[bool, ...]  # leaf is an int8 label (-1 = missing -> NaN)
    consts: tuple[float, ...]

    @property
    def max_lag(self) -> int:
        return max((_max_lag(p) for p in self.programs.values()), default=0)


def _max_lag(p: Program) -> int:
    tag = p[0]
    if tag == "lag":
        return p[1] + _max_lag(p[2])
    if tag in ("crosses_above", "crosses_below"):
        return 1 + max(_max_lag(p[1]), _max_lag(p[2]))
    return max((_max_lag(q) for q in p[1:] if isinstance(q, tuple)), default=0)


def lower(
    trees: dict[str, rules.Expr],
    requests: dict[IndicatorRef, Request],
    values: dict[str, float],
) -> Lowered:
    """Programs of ``trees`` with leaves deduplicated by column and one slot per constant."""
    leaves: dict[str, int] = {}
    labels: list[bool] = []
    consts: list[float] = []

    def leaf(name: str, label: bool) -> Program:
        if name not in leaves:
            leaves[name] = len(leaves)
            labels.append(label)
        return ("leaf", leaves[name])

    def go(node: rules.Expr) -> Program:
        if isinstance(node, Num | Placeholder):
            consts.append(node.value if isinstance(node, Num) else values[node.name])
            return ("const", len(consts) - 1)
        if isinstance(node, Column):
            return leaf(node.name, False)
        if isinstance(node, IndicatorRef):
            r = requests[node]
            label = r.spec.kind == "label"
            return leaf(r.column(node.output), label)
        if isinstance(node, Lag):
            return ("lag", node.n, go(node.x))
        if isinstance(node, Unary):
            return ("neg" if node.op == "-" else "not", go(node.x))
        if isinstance(node, Call):
            return (node.fn, *(go(a) for a in node.args))
        assert isinstance(node, Binary)
        return (node.op, go(node.a), go(node.b))

    programs = {f: go(t) for f, t in trees.items()}
    return Lowered(programs, tuple(leaves), tuple(labels), tuple(consts))


# --- evaluation ---------------------------------------------------------------------------

NAN = jnp.nan


def _cmp(op: str, a: Array, b: Array) -> Array:
    table: dict[str, Callable[[Array, Array], Array]] = {
        ">": jnp.greater, "<": jnp.less, ">=": jnp.greater_equal, "<=": jnp.less_equal,
        "==": jnp.equal, "!=": jnp.not_equal,
    }  # fmt: skip
    known = ~(jnp.isnan(a) | jnp.isnan(b))
    return jnp.where(known, table[op](a, b).astype(F64), NAN)


def k_and(a: Array, b: Array) -> Array:
    """Kleene and of 1.0 / 0.0 / NaN values."""
    return jnp.where((a == 0.0) | (b == 0.0), 0.0, jnp.where((a == 1.0) & (b == 1.0), 1.0, NAN))


def k_or(a: Array, b: Array) -> Array:
    """Kleene or of 1.0 / 0.0 / NaN values."""
    return jnp.where((a == 1.0) | (b == 1.0), 1.0, jnp.where((a == 0.0) & (b == 0.0), 0.0, NAN))


Reader = Callable[[int, int], Array]  # (leaf slot, bars back) -> values


def evaluate(p: Program, read: Reader, consts: Sequence[Array] | Array, back: int = 0) -> Array:
    """The values of program ``p`` ``back`` bars before the reader's current position."""
    tag = p[0]
    if tag == "const":
        return consts[p[1]]
    if tag == "leaf":
        return read(p[1], back)
    if tag == "lag":
        return evaluate(p[2], read, consts, back + p[1])
    if tag == "neg":
        return -evaluate(p[1], read, consts, back)
    if tag == "not":
        return 1.0 - evaluate(p[1], read, consts, back)
    if tag in ("abs",):
        return jnp.abs(evaluate(p[1], read, consts, back))
    a = evaluate(p[1], read, consts, back)
    b = evaluate(p[2], read, consts, back)
    if tag == "min":
        return jnp.minimum(a, b)
    if tag == "max":
        return jnp.maximum(a, b)
    if tag == "+":
        return a + b
    if tag == "-":
        return a - b
    if tag == "*":
        return a * b
    if tag == "/":
        return a / b
    if tag == "and":
        return k_and(a, b)
    if tag == "or":
        return k_or(a, b)
    if tag in ("crosses_above", "crosses_below"):
        a1 = evaluate(p[1], read, consts, back + 1)
        b1 = evaluate(p[2], read, consts, back + 1)
        if tag == "crosses_above":
            return k_and(_cmp(">", a, b), _cmp("<=", a1, b1))
        return k_and(_cmp("<", a, b), _cmp(">=", a1, b1))
    return _cmp(tag, a, b)


def series_reader(leaves: Sequence[Array]) -> Reader:
    """Read whole ``(..., T)`` leaf series shifted ``back`` bars (NaN before the start, and
    after the end for a negative shift: the future beyond the data is unknown)."""

    def read(j: int, back: int) -> Array:
        x = leaves[j]
        if back == 0:
            return x
        length = x.shape[-1]
        pad = jnp.full((*x.shape[:-1], min(abs(back), length)), NAN, F64)
        if back > 0:
            return jnp.concatenate([pad, x[..., : length - pad.shape[-1]]], axis=-1)
        return jnp.concatenate([x[..., pad.shape[-1] :], pad], axis=-1)

    return read


def fires(p: Program | None, read: Reader, consts: Sequence[Array] | Array, like: Array) -> Array:
    """Where a rule is true (``False`` everywhere for a rule the spec does not have)."""
    if p is None:
        return jnp.zeros(like.shape, bool)
    return evaluate(p, read, consts) == 1.0
