"""Rules lowered to hashable programs and evaluated on JAX arrays (three-valued logic).

:func:`lower` turns a bound spec's rule trees into nested tuples where every indicator output
is a *leaf slot* and every number a *constant slot*, so one compiled function serves every
parameter set of a grid (the values come in as arrays) and the program itself is the cache key.

Conditions are three-valued (Kleene): a comparison that reads a NaN (warm-up, a zero-scale
z-score, a label's missing code) is *unknown*, not false; ``not unknown`` is unknown, ``false
and unknown`` is false, ``true or unknown`` is true; a rule fires where it is known true. So
``not (rsi:14 > 70)`` does not fire during the RSI's warm-up, as plain booleans would.
:func:`truth` computes it as two boolean arrays (known true, known false): IEEE comparisons
with NaN are false both ways, so no NaN arithmetic is needed.

:func:`evaluate` and :func:`truth` read leaf ``j`` ``back`` bars back through a callable, so
the same program runs on whole ``(T,)`` series (a shift) and on the grid's segmented layout.
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

Reader = Callable[[int, int], Array]  # (leaf slot, bars back) -> values
Consts = Sequence[Array] | Array

#: comparison -> (true where, false where) on IEEE floats: both False when a side is NaN
_CMP: dict[str, tuple[Callable[[Array, Array], Array], Callable[[Array, Array], Array]]] = {
    ">": (jnp.greater, jnp.less_equal),
    "<": (jnp.less, jnp.greater_equal),
    ">=": (jnp.greater_equal, jnp.less),
    "<=": (jnp.less_equal, jnp.greater),
    "==": (jnp.equal, lambda a, b: (a < b) | (a > b)),
    "!=": (lambda a, b: (a < b) | (a > b), jnp.equal),
}


def evaluate(p: Program, read: Reader, consts: Consts, back: int = 0) -> Array:
    """The numeric values of program ``p`` ``back`` bars before the reader's position."""
    tag = p[0]
    if tag == "const":
        return consts[p[1]]
    if tag == "leaf":
        return read(p[1], back)
    if tag == "lag":
        return evaluate(p[2], read, consts, back + p[1])
    if tag == "neg":
        return -evaluate(p[1], read, consts, back)
    if tag == "abs":
        return jnp.abs(evaluate(p[1], read, consts, back))
    a = evaluate(p[1], read, consts, back)
    b = evaluate(p[2], read, consts, back)
    table: dict[str, Callable[[Array, Array], Array]] = {
        "min": jnp.minimum, "max": jnp.maximum, "+": jnp.add, "-": jnp.subtract,
        "*": jnp.multiply, "/": jnp.divide,
    }  # fmt: skip
    return table[tag](a, b)


def truth(p: Program, read: Reader, consts: Consts, back: int = 0) -> tuple[Array, Array]:
    """Where condition ``p`` is known true and where it is known false (bool arrays): the
    three-valued logic without NaN arithmetic. Unknown = neither."""
    tag = p[0]
    if tag == "lag":
        return truth(p[2], read, consts, back + p[1])
    if tag == "not":
        t, f = truth(p[1], read, consts, back)
        return f, t
    if tag in ("and", "or"):
        ta, fa = truth(p[1], read, consts, back)
        tb, fb = truth(p[2], read, consts, back)
        return (ta & tb, fa | fb) if tag == "and" else (ta | tb, fa & fb)
    a = evaluate(p[1], read, consts, back)
    b = evaluate(p[2], read, consts, back)
    if tag in ("crosses_above", "crosses_below"):
        a1 = evaluate(p[1], read, consts, back + 1)
        b1 = evaluate(p[2], read, consts, back + 1)
        now, then = (">", "<=") if tag == "crosses_above" else ("<", ">=")
        return (_CMP[now][0](a, b) & _CMP[then][0](a1, b1),
                _CMP[now][1](a, b) | _CMP[then][1](a1, b1))  # fmt: skip
    is_true, is_false = _CMP[tag]
    return is_true(a, b), is_false(a, b)


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


def fires(p: Program | None, read: Reader, consts: Consts, like: Array) -> Array:
    """Where a rule is (known) true; ``False`` everywhere for a rule the spec does not have."""
    if p is None:
        return jnp.zeros(like.shape, bool)
    return truth(p, read, consts)[0]
