"""Block-bootstrap path generator: circular and stationary blocks, Politis-White block length,
regime-weighted block starts, and volatility scaling of each block to the current level.

The generator is written as one time step for a vector of paths (the time-major layout of
DESIGN.md): the carry is each path's position in the source series and its block's scale, so
no ``paths x horizon`` array ever exists. :mod:`compute.simulation.paths` drives it.

Definitions (``docs/risk-simulation.md``):

* **circular**: blocks of exactly ``b`` returns; a new block starts at every step ``t`` with
  ``t % b == 0`` at a start position drawn from the source (by default uniformly); inside a
  block the position advances by one and wraps from the last return to the first.
* **stationary** (Politis & Romano 1994): at every step a new block starts with probability
  ``1 / b`` (and always at step 0), so block lengths are geometric with mean ``b``.
* **block length**: given, or Politis & White (2004) with the correction of Patton, Politis &
  White (2009) (the estimator of ``arch.bootstrap.optimal_block_length``).
* **regime-weighted starts**: start positions drawn with probability proportional to a weight
  per position (e.g. by its volatility regime); Walker's alias table makes a weighted draw
  cost two gathers.
* **volatility scaling**: a block starting at ``j`` is multiplied by ``sigma_now /
  sigma_block(j)``, where ``sigma_block(j)`` is the root-mean-square of the ``L = round(b)``
  source returns ``j .. j+L-1`` (circularly) and ``sigma_now`` the root-mean-square of the
  last ``now_window`` returns or a given value; ``sigma_block`` is floored at ``floor`` times
  the whole series' RMS, which also bounds the scale.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from compute.core.errors import InputDataError, SpecError
from compute.core.inputs import bucket
from compute.core.jaxconf import jax, jnp
from compute.simulation import prng

Array = jax.Array
Field = Any  # a pytree leaf: a jax array in kernels, a NumPy array or scalar on the host
KINDS = ("circular", "stationary")
ACCEPT_ALL = 2**32  # alias threshold of a start that is always accepted


# ------------------------------------------------------------------- block length (NumPy)
def politis_white(returns: np.ndarray) -> tuple[float, float]:
    """``(stationary, circular)`` optimal mean block lengths of Politis & White (2004),
    corrected by Patton, Politis & White (2009); both capped at ``ceil(min(3 sqrt(n), n/3))``.

    The bandwidth ``m`` is twice the first lag after which ``K_N = max(5, log10 n)``
    consecutive autocorrelations are below ``2 sqrt(log10 n / n)``; the spectral quantities
    use the flat-top (trapezoid) kernel on autocovariances up to ``m``.
    """
    x = np.asarray(returns, dtype=np.float64)
    n = x.shape[0]
    if n < 8:
        raise InputDataError(f"the block length needs at least 8 returns, got {n}")
    eps = x - x.mean()
    b_max = float(np.ceil(min(3 * np.sqrt(n), n / 3)))
    kn = max(5, int(np.log10(n)))
    m_max = int(np.ceil(np.sqrt(n))) + kn
    crit = 2 * np.sqrt(np.log10(n) / n)
    lags = np.arange(m_max + 1)
    cross = np.array([eps[k:] @ eps[: n - k] for k in lags])
    head = np.array([eps[k + 1 :] @ eps[k + 1 :] for k in lags])
    tail = np.array([eps[: n - k - 1] @ eps[: n - k - 1] for k in lags])
    acv = cross / n
    small = np.abs(cross) / np.sqrt(head * tail) < crit
    first = next((i - kn for i in range(kn, m_max + 1) if small[i - kn : i].all()), None)
    m = min(2 * max(first, 1) if first is not None else m_max, m_max)
    k = np.arange(1, m + 1)
    lam = np.where(k / m <= 0.5, 1.0, 2 * (1 - k / m))
    g = float(np.sum(2 * lam * k * acv[1 : m + 1]))
    lr = float(acv[0] + np.sum(2 * lam * acv[1 : m + 1]))
    if lr <= 0 or g == 0:
        return 1.0, 1.0
    b_sb = (2 * g**2 / (2 * lr**2)) ** (1 / 3) * n ** (1 / 3)
    b_cb = (2 * g**2 / (4 / 3 * lr**2)) ** (1 / 3) * n ** (1 / 3)
    return min(b_sb, b_max), min(b_cb, b_max)


# ------------------------------------------------------------ sampling tables (NumPy)
def alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of ``weights`` (Vose's construction): ``(accept, alias)`` with
    ``accept`` a uint64 threshold on a 32-bit uniform (``2**32`` = always keep ``j``).

    Drawing ``j`` uniformly and keeping it when ``u32 < accept[j]``, else taking ``alias[j]``,
    gives ``j`` with probability ``weights[j] / sum(weights)`` (to 2**-32 per entry).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise SpecError("block-start weights must be a non-empty vector of finite values >= 0")
    total = w.sum()
    if total <= 0:
        raise SpecError("block-start weights are all zero: no block could ever be drawn")
    n = w.size
    prob = w * (n / total)
    alias = np.arange(n, dtype=np.int32)
    small = [i for i in range(n) if prob[i] < 1.0]
    large = [i for i in range(n) if prob[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        alias[s] = g
        prob[g] -= 1.0 - prob[s]
        (small if prob[g] < 1.0 else large).append(g)
    for i in small + large:  # numerical leftovers keep themselves
        prob[i] = 1.0
    accept = np.minimum(np.round(prob * 2.0**32), ACCEPT_ALL).astype(np.uint64)
    return accept, alias


def regime_weights(labels: np.ndarray, mix: dict[int, float]) -> np.ndarray:
    """Per-position weights so that blocks start in regime ``k`` with probability ``mix[k]``
    (normalised), uniformly among the positions labelled ``k``; regimes absent from ``mix``
    (and missing labels, ``-1``) get weight 0."""
    lab = np.asarray(labels)
    w = np.zeros(lab.shape[0], dtype=np.float64)
    total = sum(v for v in mix.values() if v > 0)
    if total <= 0:
        raise SpecError("the regime mix needs at least one regime with a positive share")
    for code, share in mix.items():
        where = lab == code
        count = int(where.sum())
        if share > 0 and count == 0:
            raise InputDataError(
                f"regime {code} has share {share:g} but never occurs in the source returns"
            )
        if share > 0:
            w[where] = share / total / count
    return w


def rms(x: np.ndarray) -> float:
    """Root mean square (the zero-mean realised volatility of a return series)."""
    return float(np.sqrt(np.mean(np.square(x))))


def block_scales(
    returns: np.ndarray, length: int, sigma_now: float, floor: float = 0.1
) -> np.ndarray:
    """``sigma_now / sigma_block(j)`` for every start ``j`` (see the module docstring)."""
    r = np.asarray(returns, dtype=np.float64)
    n = r.shape[0]
    length = max(1, min(int(length), n))
    sq = np.concatenate([r, r[: length - 1]]) ** 2
    csum = np.concatenate([[0.0], np.cumsum(sq)])
    sigma_block = np.sqrt(np.maximum(csum[length : length + n] - csum[:n], 0.0) / length)
    return sigma_now / np.maximum(sigma_block, floor * rms(r))


# ------------------------------------------------------------------ the generator (JAX)
class BootstrapParams(NamedTuple):
    """Array inputs of the bootstrap generator (a pytree).

    The arrays are padded to a bucketed size (:func:`compute.core.inputs.bucket` of the
    source length) and ``length`` carries the real one, so sources of nearby lengths share
    one compiled kernel; padding is never read (starts are drawn below ``length``).
    """

    returns: Field  # (2m,) float64 source returns, twice (a circular block never wraps)
    scale: Field  # (m,) float64 scale of a block starting at j (ones: no scaling)
    accept: Field  # (m,) uint64 alias thresholds (ACCEPT_ALL: uniform starts)
    alias: Field  # (m,) int32 alias targets
    block: Field  # () float64 block length b (circular: an integer value)
    length: Field  # () int32 n, the number of source returns (m >= n after padding)


def make_params(
    returns: np.ndarray,
    block: float,
    *,
    scale: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> BootstrapParams:
    """Host-side construction of :class:`BootstrapParams` (NumPy arrays, moved on call)."""
    r = np.ascontiguousarray(returns, dtype=np.float64)
    n = r.shape[0]
    if not 1 <= block <= n:
        raise SpecError(f"the block length must be between 1 and the {n} source returns")
    if weights is None:
        accept, alias = np.full(n, ACCEPT_ALL, np.uint64), np.arange(n, dtype=np.int32)
    else:
        accept, alias = alias_table(weights)
    sc = np.ones(n) if scale is None else np.asarray(scale, dtype=np.float64)
    m = bucket(n)

    def pad(a: np.ndarray, size: int) -> np.ndarray:
        return np.concatenate([a, np.zeros(size - a.shape[0], a.dtype)])

    return BootstrapParams(
        pad(np.concatenate([r, r]), 2 * m),
        pad(sc, m),
        pad(accept, m),
        pad(alias.astype(np.int32), m),
        np.float64(block),
        np.int32(n),
    )


def init(n_paths: int) -> tuple[Array, Array]:
    """Carry at step 0: position 0 and scale 1 (step 0 always starts a block)."""
    return jnp.zeros(n_paths, jnp.int32), jnp.ones(n_paths, jnp.float64)


def step(
    carry: tuple[Array, Array],
    t: Array,
    streams: Array,
    params: BootstrapParams,
    *,
    kind: str,
    weighted: bool,
    scaled: bool,
) -> tuple[tuple[Array, Array], Array]:
    """One step of every path: ``(carry, r_t)``. Uses slot 0 of the step's draws.

    Circular blocks start on the same steps for every path. The start is still hashed on
    every step and kept by a select: a ``lax.cond`` that hashed only on block-start steps
    cost more in kernel launches per step than the hashing it saved (measured,
    ``docs/risk-simulation.md``)."""
    idx, sc = carry
    n = params.length

    def start(word: Array) -> tuple[Array, Array]:
        j, frac = prng.below(word, n)
        if weighted:
            j = jnp.where(frac < params.accept[j], j, params.alias[j])
        return j, (params.scale[j] if scaled else sc)

    nxt = idx + 1
    if kind == "circular":  # j + b - 1 < 2n: the doubled table needs no wrap-around
        new: Array = (t % params.block.astype(jnp.int32)) == 0
        j, sj = start(prng.draw(streams, t, 0))
        idx = jnp.where(new, j, nxt)
        sc = jnp.where(new, sj, sc) if scaled else sc
    else:
        nxt = jnp.where(nxt >= n, 0, nxt)
        word = prng.draw(streams, t, 0)
        j, sj = start(word)
        p32 = jnp.floor(2.0**32 / params.block).astype(jnp.uint64)
        fresh = ((word & jnp.uint64(0xFFFFFFFF)) < p32) | (t == 0)
        idx = jnp.where(fresh, j, nxt)
        sc = jnp.where(fresh, sj, sc) if scaled else sc
    if scaled:  # a scaled loss may pass -100 %: capped there
        return (idx, sc), jnp.maximum(params.returns[idx] * sc, -1.0)
    return (idx, sc), params.returns[idx]
