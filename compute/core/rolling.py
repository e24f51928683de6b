"""JAX building blocks for one series: seeded EMA recursions, windowed moments and sums.

Every function takes 1-D arrays (one series) and is traceable, so callers batch it with
``jax.vmap`` over ``(K, T)`` arrays. Recursions are :func:`compute.core.batching.recurrence`
objects: a ``lax.scan`` for one series, a loop over time carrying K per-series states when
vmapped.

Numerics (the reason each function looks the way it does):

* Recursions (EMA, Wilder, EW variance, session sums) perform the same operations, in the same
  order, as the loops in ``compute.indicators.reference``: they agree to the last bit.
* Windowed variance never uses cumulative sums of squares: at prices of ~60,000 those lose
  about 6 digits. Windows are split into pieces of length ``b``; each piece is summed directly
  as deviations from its own last value (exact differences of nearby floats), and pieces are
  merged with Chan's parallel formula, whose terms are all non-negative. Cost per bar is
  ``O(b + w / b)`` with ``b ~ sqrt(w)``, and a constant window gives exactly zero variance
  (every deviation is exactly 0), so "std = 0" tests are exact, not "below 1e-12".
"""

from __future__ import annotations

import math

from compute.core.batching import materialize, recurrence
from compute.core.jaxconf import F64, NAN, jax, jnp, lax

Array = jax.Array

# Windows up to this length are summed directly (one piece); longer ones use ~sqrt(w) pieces.
DIRECT_WINDOW_MAX = 24


def _from_seed_init(params: tuple[Array, ...]) -> tuple[Array]:
    return (jnp.full((), NAN, F64),)


def _from_seed_step(
    carry: tuple, t: Array, xs: tuple[Array, ...], params: tuple[Array, ...]
) -> tuple:
    (y,) = carry
    (x,) = xs
    alpha, seed, seed_at = params
    y = jnp.where(t == seed_at, seed, y + alpha * (x - y))
    return (y,), (y,)


EMA_FROM_SEED = recurrence(_from_seed_init, _from_seed_step, n_inputs=1, n_outputs=1, n_params=3)


def ema_from_seed(
    x: Array, alpha: Array | float, seed: Array | float, seed_at: Array | int
) -> Array:
    """NaN before ``seed_at``; ``seed`` there; then ``y[t] = y[t-1] + alpha * (x[t] - y[t-1])``."""
    (y,) = EMA_FROM_SEED(*ema_from_seed_args(x, alpha, seed, seed_at))
    return y


def ema_from_seed_args(
    x: Array, alpha: Array | float, seed: Array | float, seed_at: Array | int
) -> tuple[Array, Array, Array, Array]:
    """The arguments of :data:`EMA_FROM_SEED` for :func:`ema_from_seed` (to fuse loops)."""
    return x, jnp.asarray(alpha, F64), jnp.asarray(seed, F64), jnp.asarray(seed_at, F64)


def _piece_sizes(w: int) -> tuple[int, int, int]:
    """Split a window ``w = q * b + r`` into ``q`` pieces of ``b`` and one of ``r`` (maybe 0)."""
    if w <= DIRECT_WINDOW_MAX:
        return w, 1, 0
    b = max(2, round(math.sqrt(w)))
    return b, w // b, w % b


def _piece_moments(x: Array, length: int) -> tuple[Array, Array]:
    """For every piece ``x[s-length+1 : s+1]`` (``s >= length-1``): ``(u, m2)`` with
    mean = ``x[s] + u`` and ``m2`` = sum of squared deviations from the mean.

    Arrays are indexed by ``s - (length - 1)``.
    """
    total = x.shape[0]
    last = x[length - 1 :]
    s1 = jnp.zeros_like(last)
    s2 = jnp.zeros_like(last)
    for k in range(1, length):
        d = x[length - 1 - k : total - k] - last
        s1 = s1 + d
        s2 = s2 + d * d
    u = s1 / length
    return u, jnp.maximum(s2 - s1 * u, 0.0)


def window_moments(x: Array, w: int) -> tuple[Array, Array, Array]:
    """Moments of the trailing window ``x[t-w+1 : t+1]``: ``(mean, m2, dev)``.

    ``m2`` is the sum of squared deviations from the window mean (population variance
    ``m2 / w``, sample variance ``m2 / (w - 1)``) and ``dev = x[t] - mean`` computed without
    cancellation. All are NaN for ``t < w - 1`` (and wherever the window holds a NaN). ``w`` is
    static: one compilation per window length.
    """
    total = x.shape[0]
    if total < w:
        nan = jnp.full((total,), NAN, F64)
        return nan, nan, nan
    b, q, r = _piece_sizes(w)
    out_len = total - w + 1
    pu, pm2 = _piece_moments(x, b)  # pieces ending at s, indexed s - (b - 1)
    if q > 1 or r:
        # Read q times at shifted offsets below: without the barrier XLA fuses the piece sums
        # into every read and recomputes them, which is O(w) per bar again.
        pu, pm2 = materialize((pu, pm2), x[0])

    def at(arr: Array, piece_end: int, length: int) -> Array:
        first = piece_end - (length - 1)
        return arr[first : first + out_len]

    anchor = x[w - 1 :]
    u, m2, count = at(pu, w - 1, b), at(pm2, w - 1, b), b
    parts = [(pu, pm2, b, w - 1 - j * b) for j in range(1, q)]
    if r:
        ru, rm2 = materialize(_piece_moments(x, r), x[0])
        parts.append((ru, rm2, r, w - 1 - q * b))
    for p_u, p_m2, size, end in parts:
        # Chan et al.: the later block (mean = anchor + u, m2, count) absorbs an earlier piece.
        delta = (anchor - x[end : end + out_len]) + (u - at(p_u, end, size))
        merged = count + size
        u = u - delta * (size / merged)
        m2 = m2 + at(p_m2, end, size) + delta * delta * (count * size / merged)
        count = merged
    # mean, m2 and dev all derive from (u, m2): compute them once, not once per output fusion.
    u, m2 = materialize((u, m2), x[0])
    head = jnp.full((w - 1,), NAN, F64)
    return (
        jnp.concatenate([head, anchor + u]),
        jnp.concatenate([head, m2]),
        jnp.concatenate([head, -u]),
    )


def seeded_ema(x: Array, alpha: Array | float, n: Array | int, start: Array | int = 0) -> Array:
    """EMA of ``x`` seeded with the simple mean of its first ``n`` values from ``start``.

    ``y[t]`` is NaN for ``t < start + n - 1``; ``y[start + n - 1] = mean(x[start:start + n])``;
    afterwards ``y[t] = y[t-1] + alpha * (x[t] - y[t-1])``. ``alpha = 2 / (n + 1)`` gives the
    classic EMA, ``alpha = 1 / n`` Wilder's smoothing. ``alpha``, ``n`` and ``start`` may be
    traced (one compilation serves every period); values of ``x`` before ``start`` are never
    read, so they may be NaN. The seed mean is taken as deviations from ``x[start]``, so a
    constant series seeds exactly at that constant. The seed is summed by a short loop of
    ``n`` steps before the recursion: the recursion body then carries one value per series,
    which XLA:CPU runs several times faster than a body that also accumulates the seed.
    """
    if x.shape[0] == 0:
        return x
    (y,) = EMA_FROM_SEED(*seeded_ema_args(x, alpha, n, start))
    return y


def seeded_ema_args(
    x: Array, alpha: Array | float, n: Array | int, start: Array | int = 0
) -> tuple[Array, Array, Array, Array]:
    """The :data:`EMA_FROM_SEED` arguments of :func:`seeded_ema` (``x`` not empty), so that
    the recursion can share a loop with others (:func:`compute.core.batching.run_fused`)."""
    length = x.shape[0]
    n, start = jnp.asarray(n), jnp.asarray(start)
    anchor = x[jnp.clip(start, 0, length - 1)]

    def add(i: Array, acc: Array) -> Array:  # n steps, in order, as the reference loop
        return acc + (x[jnp.clip(start + i, 0, length - 1)] - anchor)

    seed = anchor + lax.fori_loop(0, n, add, jnp.zeros((), F64)) / n
    return ema_from_seed_args(x, alpha, seed, start + n - 1)


def seeded_ew_moments(y: Array, *, n: int, start: int) -> tuple[Array, Array]:
    """Exponentially weighted mean and variance of ``y`` (``alpha = 2 / (n + 1)``), seeded.

    At ``s = start + n - 1`` the mean is the SMA of ``y[start : s + 1]`` (as in
    :func:`seeded_ema`) and the variance their population variance; afterwards, with
    ``d = y[t] - mean[t-1]``: ``mean[t] = mean[t-1] + alpha d`` and ``var[t] = (1 - alpha)
    (var[t-1] + alpha d**2)``, the standard EW variance recursion, evaluated as the EMA
    ``var[t-1] + alpha ((1 - alpha) d**2 - var[t-1])``. NaN before ``s``.
    """
    mean = seeded_ema(y, 2.0 / (n + 1.0), n, start)
    args = ew_variance_args(y, mean, n=n, start=start)
    if args is None:
        return mean, jnp.full(y.shape, NAN, F64)
    return mean, ema_from_seed(*args)


def ew_variance_args(
    y: Array, mean: Array, *, n: int, start: int
) -> tuple[Array, Array, Array, Array] | None:
    """The :data:`EMA_FROM_SEED` arguments of the variance of :func:`seeded_ew_moments`, given
    its mean; ``None`` when the series is too short for the seed (the variance is all NaN)."""
    alpha = 2.0 / (n + 1.0)
    seed_at = start + n - 1
    if seed_at >= y.shape[0]:
        return None
    seed = y[start : seed_at + 1] - y[seed_at]  # the seed window, as deviations (exact)
    seed_var = jnp.mean((seed - jnp.mean(seed)) ** 2)
    d = y - lag(mean, 1)
    return ema_from_seed_args((1.0 - alpha) * d * d, alpha, seed_var, seed_at)


def window_sums(x: Array, w: int) -> Array:
    """Sum of the trailing window ``x[t-w+1 : t+1]`` (NaN for ``t < w - 1``).

    Meant for non-negative data (volumes, price x volume) where a direct sum has no
    cancellation; long windows are summed as ``q`` piece sums of length ``b`` plus a remainder.
    """
    total = x.shape[0]
    if total < w:
        return jnp.full((total,), NAN, F64)
    b, q, r = _piece_sizes(w)
    out_len = total - w + 1

    def piece_sums(length: int) -> Array:
        s = x[length - 1 :]
        for k in range(1, length):
            s = s + x[length - 1 - k : total - k]
        return s  # indexed s - (length - 1)

    pieces = materialize(piece_sums(b), x[0]) if q > 1 else piece_sums(b)
    acc = pieces[w - b : w - b + out_len]
    for j in range(1, q):
        first = w - 1 - j * b - (b - 1)
        acc = acc + pieces[first : first + out_len]
    if r:
        first = w - 1 - q * b - (r - 1)
        acc = acc + piece_sums(r)[first : first + out_len]
    return jnp.concatenate([jnp.full((w - 1,), NAN, F64), acc])


def _session_init(params: tuple[Array, ...]) -> tuple[Array, Array]:
    return jnp.zeros((), F64), jnp.zeros((), F64)


def _session_step(
    carry: tuple, t: Array, xs: tuple[Array, ...], params: tuple[Array, ...]
) -> tuple:
    sv, sw = carry
    v, w, flag = xs
    reset = (flag > 0.5) | (t == 0)
    sv = jnp.where(reset, v, sv + v)
    sw = jnp.where(reset, w, sw + w)
    return (sv, sw), (jnp.where(sw > 0.0, sv / jnp.where(sw > 0.0, sw, 1.0), NAN),)


SESSION_RATIO = recurrence(_session_init, _session_step, n_inputs=3, n_outputs=1, n_params=0)


def session_ratio(values: Array, weights: Array, new_session: Array) -> Array:
    """``sum(values) / sum(weights)`` since the last bar where ``new_session`` (NaN while the
    weights sum to 0).

    ``new_session`` is a 0/1 float flag (so it batches and pads like a series); the first bar
    always opens a session. The ratio is taken inside the recursion, so one series comes out.
    """
    (ratio,) = SESSION_RATIO(*session_ratio_args(values, weights, new_session))
    return ratio


def session_ratio_args(
    values: Array, weights: Array, new_session: Array
) -> tuple[Array, Array, Array]:
    """The :data:`SESSION_RATIO` arguments of :func:`session_ratio`."""
    return values, weights, jnp.asarray(new_session, F64)


def lag(x: Array, k: int, fill: float = NAN) -> Array:
    """``x`` shifted ``k >= 0`` bars later along its last (time) axis, ``fill`` for ``t < k``."""
    if k == 0:
        return x
    total = x.shape[-1]
    head = jnp.full((*x.shape[:-1], min(k, total)), fill, x.dtype)
    return jnp.concatenate([head, x[..., : max(total - k, 0)]], axis=-1)
