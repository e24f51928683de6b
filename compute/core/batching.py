"""How one-series kernels become batched, compiled calls (the layout lives here).

Kernels in ``compute`` are written for one series (1-D arrays) and batched with ``jax.vmap``
over a leading *series* axis: batched arrays are ``(K, T)``, time last. On XLA:CPU layout
beats everything else (measured, see ``docs/indicators.md``, *Performance*):

* windowed and elementwise kernels run on ``(K, T)``: every shifted slice is a contiguous row;
* recursions are written as a per-bar update (:func:`recurrence`); batched, they run as one
  loop over time carrying a vector of K per-series states, reading and writing column ``t``
  of the ``(K, T)`` arrays in place (no transposes).

Parameters of a batched call are either shared (a scalar) or per series (shape ``(K,)``), so
the same machinery serves "many coins" and "many parameter sets of one coin".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from jax.custom_batching import custom_vmap

from compute.core.jaxconf import F64, jax, jnp, lax

Tree = TypeVar("Tree")

# Values (inputs read + outputs written) per time step that one fused recursion loop may touch
# and still be compiled as one function on XLA:CPU (measured: docs/indicators.md).
FUSED_VALUES_PER_STEP = 12


def materialize(tree: Tree, probe: jax.Array) -> Tree:
    """Return ``tree`` (float arrays) unchanged, but as buffers XLA must write out.

    A fusion barrier: the arrays pass through a ``while_loop`` whose condition is false for
    every value of ``probe`` (``p != p and p == p``) without XLA being able to prove it, and
    whose body would change them, so XLA can neither fuse the producers into the consumers
    (recomputing them once per use) nor drop the loop as invariant. It never iterates.
    ``lax.optimization_barrier`` does not do this on CPU (it is removed before fusion), nor
    does a loop whose body is the identity (removed as loop-invariant).
    """
    p = jnp.asarray(probe).reshape(-1)[0]
    never = (p != p) & (p == p)  # noqa: PLR0124 - false for every p, opaque to XLA

    def body(carry: tuple[jax.Array, Tree]) -> tuple[jax.Array, Tree]:
        bump, values = carry
        moved = jax.tree_util.tree_map(lambda a: a + (bump * 0.0).astype(a.dtype), values)
        return bump + 1.0, moved

    _, out = lax.while_loop(lambda c: never, body, (jnp.zeros((), p.dtype), tree))
    return out


Carry = Any
Step = Callable[
    [Carry, jax.Array, tuple[jax.Array, ...], tuple[jax.Array, ...]],
    tuple[Carry, tuple[jax.Array, ...]],
]


@dataclass(frozen=True, eq=False)
class Recurrence:
    """A causal recursion over one series, from its per-bar update (the ``lax.scan`` body).

    ``init(params) -> carry`` and ``step(carry, t, inputs_t, params) -> (carry, outputs_t)``
    work on scalars: one series, one bar. Calling the object with ``n_inputs`` 1-D series and
    then ``n_params`` parameters returns ``n_outputs`` 1-D float64 series.

    Unbatched it is a plain ``lax.scan``. Under ``jax.vmap`` (a ``custom_vmap`` rule) it is a
    ``fori_loop`` over time on the ``(K, T)`` arrays themselves, carrying a vector of ``K``
    per-series states: each step reads column ``t`` of every input and writes column ``t`` of
    every output. That is the time-major loop of DESIGN.md without transposing anything: a
    vmap-of-scan made XLA transpose inputs and outputs (or scan a strided layout), which cost
    more than the recursion itself. Both paths run the same ``step``, so they agree bitwise.

    Several recursions can share one loop (:func:`run_fused`): on XLA:CPU a loop with a small
    state is compiled into one function whose cost is mostly latency per time step, so a loop
    carrying 4 recursions of 2 series costs ~2x one recursion, not 4x (``docs/indicators.md``,
    *Performance*).
    """

    init: Callable[[tuple[jax.Array, ...]], Carry]
    step: Step
    n_inputs: int
    n_params: int
    n_outputs: int

    def __call__(self, *args: jax.Array) -> tuple[jax.Array, ...]:
        if len(args) != self.n_inputs + self.n_params:
            raise TypeError(f"expected {self.n_inputs + self.n_params} arguments, got {len(args)}")
        return _fused((self,))(*args)[0]

    @property
    def weight(self) -> int:
        """Values touched per series and time step (inputs read, outputs written)."""
        return self.n_inputs + self.n_outputs


def recurrence(
    init: Callable[[tuple[jax.Array, ...]], Carry],
    step: Step,
    n_inputs: int,
    n_outputs: int,
    n_params: int,
) -> Recurrence:
    """A :class:`Recurrence` from its per-bar update (see there)."""
    return Recurrence(init, step, n_inputs, n_params, n_outputs)


def run_fused(
    calls: Sequence[tuple[Recurrence, tuple[jax.Array, ...]]],
) -> list[tuple[jax.Array, ...]]:
    """Run several recursions, each with its own arguments, in **one** loop over time.

    Returns each call's outputs, bitwise the same as calling the recursions one by one (the
    same steps run in the same order per series). All inputs share the series' length.
    """
    if not calls:
        return []
    recs = tuple(rec for rec, _ in calls)
    for rec, args in calls:
        if len(args) != rec.n_inputs + rec.n_params:
            raise TypeError(f"expected {rec.n_inputs + rec.n_params} arguments, got {len(args)}")
    flat = [a for _, args in calls for a in args]
    return list(_fused(recs)(*flat))


def _split(recs: tuple[Recurrence, ...], args: Sequence[Any]) -> list[tuple[tuple, tuple]]:
    """Per recursion: (its inputs, its params) out of the flat argument list."""
    parts, i = [], 0
    for rec in recs:
        xs = tuple(args[i : i + rec.n_inputs])
        ps = tuple(args[i + rec.n_inputs : i + rec.n_inputs + rec.n_params])
        parts.append((xs, ps))
        i += rec.n_inputs + rec.n_params
    return parts


@functools.lru_cache(maxsize=256)
def _fused(recs: tuple[Recurrence, ...]) -> Callable[..., tuple[tuple[jax.Array, ...], ...]]:
    """The ``custom_vmap`` function running ``recs`` in one loop (one per tuple of recursions)."""

    def run_1d(*args: jax.Array) -> tuple[tuple[jax.Array, ...], ...]:
        parts = _split(recs, args)
        length = parts[0][0][0].shape[0]
        carry0 = tuple(rec.init(ps) for rec, (_, ps) in zip(recs, parts, strict=True))

        def body(carry: tuple, t: jax.Array) -> tuple[tuple, tuple]:
            new, outs = [], []
            for rec, (xs, ps), before in zip(recs, parts, carry, strict=True):
                after, out = rec.step(before, t, tuple(x[t] for x in xs), ps)
                new.append(after)
                outs.append(tuple(jnp.asarray(v, jnp.float64) for v in out))
            return tuple(new), tuple(outs)

        _, outs = lax.scan(body, carry0, jnp.arange(length))
        return tuple(outs)

    wrapped = custom_vmap(run_1d)

    @wrapped.def_vmap
    def _rule(axis_size: int, in_batched: Sequence[bool], *args: jax.Array) -> tuple[Any, Any]:
        parts = _split(recs, args)
        flags = _split(recs, in_batched)
        length = parts[0][0][0].shape[-1]
        carry0, steps = [], []
        for rec, (_, ps), (xb, pb) in zip(recs, parts, flags, strict=True):
            p_axes = tuple(0 if b else None for b in pb)
            x_axes = tuple(0 if b else None for b in xb)
            carry0.append(jax.vmap(rec.init, in_axes=(p_axes,), axis_size=axis_size)(ps))
            steps.append(jax.vmap(rec.step, in_axes=(0, None, x_axes, p_axes), axis_size=axis_size))
        # One (n_outputs, K, T) buffer per recursion, updated in place, one column per step.
        # A one-output recursion whose first input is a float64 series gets that input as its
        # buffer: each step reads column t before overwriting it, so no buffer has to be
        # filled first (XLA copies the input only if something else still reads it).
        in_place = tuple(
            rec.n_outputs == 1 and xb[0] and xs[0].dtype == F64
            for rec, (xs, _), (xb, _) in zip(recs, parts, flags, strict=True)
        )
        outs0 = tuple(
            xs[0][None] if own else jnp.full((rec.n_outputs, axis_size, length), jnp.nan, F64)
            for rec, (xs, _), own in zip(recs, parts, in_place, strict=True)
        )

        def body(t: jax.Array, state: tuple[tuple, tuple]) -> tuple[tuple, tuple]:
            carry, outs = state
            new_carry, new_outs = [], []
            for i, ((xs, ps), (xb, _)) in enumerate(zip(parts, flags, strict=True)):
                row = [x[:, t] if b else x[t] for x, b in zip(xs, xb, strict=True)]
                if in_place[i]:
                    row[0] = outs[i][0, :, t]
                c, out_t = steps[i](carry[i], t, tuple(row), ps)
                column = jnp.stack([jnp.asarray(v, F64) for v in out_t])[:, :, None]
                new_carry.append(c)
                new_outs.append(lax.dynamic_update_slice_in_dim(outs[i], column, t, axis=2))
            return tuple(new_carry), tuple(new_outs)

        _, stacked = lax.fori_loop(0, length, body, (tuple(carry0), outs0))
        result = tuple(tuple(buf[j] for j in range(len(buf))) for buf in stacked)
        batched = tuple((True,) * rec.n_outputs for rec in recs)
        return result, batched

    return wrapped


def fusion_groups(
    recs: Sequence[Recurrence], series: int, budget: int = FUSED_VALUES_PER_STEP
) -> list[list[int]]:
    """Split recursions (by index, in order) into loops of at most ``budget`` values touched
    per time step (``series`` x the recursions' :attr:`Recurrence.weight`).

    XLA:CPU compiles a loop into one function only while its per-step state is small; past
    that, every step becomes separate kernel launches (tens of times slower). Many series per
    call (short series) already fill a loop on their own, and then each recursion gets one.
    """
    groups: list[list[int]] = []
    load = 0
    for i, rec in enumerate(recs):
        cost = series * rec.weight
        if groups and load + cost <= budget:
            groups[-1].append(i)
            load += cost
        else:
            groups.append([i])
            load = cost
    return groups


def over_series(kernel: Callable[..., Any]) -> Callable[..., Any]:
    """Batch a one-series kernel over ``(K, T)`` arrays: ``jax.vmap`` over the leading axis.

    2-D arguments are series (one row each), 1-D ones per-series parameters, scalars shared;
    keyword arguments are static. Scans inside the kernel go time-major on their own
    (:func:`recurrence`).
    """

    def batched(*args: Any, **static: Any) -> Any:
        axes = tuple(0 if jnp.ndim(a) in (1, 2) else None for a in args)
        return jax.vmap(lambda *a: kernel(*a, **static), in_axes=axes)(*args)

    batched.__name__ = f"over_series({getattr(kernel, '__name__', 'kernel')})"
    batched.__doc__ = kernel.__doc__
    return batched
