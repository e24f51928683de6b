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

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from jax.custom_batching import custom_vmap

from compute.jaxconf import jax, jnp, lax

Tree = TypeVar("Tree")


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


def recurrence(
    init: Callable[[tuple[jax.Array, ...]], Carry], step: Step, n_inputs: int, n_outputs: int
) -> Callable[..., tuple[jax.Array, ...]]:
    """A causal recursion over one series, from its per-bar update (the ``lax.scan`` body).

    ``init(params) -> carry`` and ``step(carry, t, inputs_t, params) -> (carry, outputs_t)``
    work on scalars: one series, one bar. The returned function takes ``n_inputs`` 1-D series
    and then the parameters, and returns ``n_outputs`` 1-D float64 series.

    Unbatched it is a plain ``lax.scan``. Under ``jax.vmap`` (a ``custom_vmap`` rule) it is a
    ``fori_loop`` over time on the ``(K, T)`` arrays themselves, carrying a vector of ``K``
    per-series states: each step reads column ``t`` of every input and writes column ``t`` of
    every output. That is the time-major loop of DESIGN.md without transposing anything: a
    vmap-of-scan made XLA transpose inputs and outputs (or scan a strided layout), which cost
    more than the recursion itself. Both paths run the same ``step``, so they agree bitwise.
    """

    def run_1d(*args: jax.Array) -> tuple[jax.Array, ...]:
        xs, params = args[:n_inputs], args[n_inputs:]
        length = xs[0].shape[0]

        def body(carry: Carry, inp: tuple[jax.Array, ...]) -> tuple[Carry, tuple[jax.Array, ...]]:
            return step(carry, inp[0], inp[1:], params)

        _, outs = lax.scan(body, init(params), (jnp.arange(length), *xs))
        return tuple(outs)

    wrapped = custom_vmap(run_1d)

    @wrapped.def_vmap
    def _rule(axis_size: int, in_batched: Sequence[bool], *args: jax.Array) -> tuple[Any, Any]:
        xs, params = args[:n_inputs], args[n_inputs:]
        x_axes = tuple(0 if b else None for b in in_batched[:n_inputs])
        p_axes = tuple(0 if b else None for b in in_batched[n_inputs:])
        length = xs[0].shape[-1]
        carry0 = jax.vmap(init, in_axes=(p_axes,), axis_size=axis_size)(params)
        step_b = jax.vmap(step, in_axes=(0, None, x_axes, p_axes), axis_size=axis_size)
        # one (n_outputs, K, T) buffer updated in place, one column per step
        outs0 = jnp.full((n_outputs, axis_size, length), jnp.nan, jnp.float64)

        def body(t: jax.Array, state: tuple[Carry, jax.Array]) -> tuple[Carry, jax.Array]:
            carry, outs = state
            row = tuple(x[:, t] if b else x[t] for x, b in zip(xs, in_batched, strict=False))
            carry, out_t = step_b(carry, t, row, params)
            column = jnp.stack([jnp.asarray(v, jnp.float64) for v in out_t])[:, :, None]
            return carry, lax.dynamic_update_slice_in_dim(outs, column, t, axis=2)

        _, stacked = lax.fori_loop(0, length, body, (carry0, outs0))
        outs = tuple(stacked[i] for i in range(n_outputs))
        return outs, (True,) * n_outputs

    return wrapped


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
