"""The counter-based generator of the simulation kernels (SplitMix64 streams), JAX and NumPy.

Why not ``jax.random`` inside the kernels: threefry (JAX's default) costs ~20 integer rounds per
32 bits and ran at ~85 M normals/s on this 2-core CPU, and ``jax.random.t``/``gamma`` at
1.6 M/s (DESIGN.md). The path kernels need one or two fresh 64-bit words per path and step,
hundreds of millions per second. SplitMix64's output function (Steele, Lea & Flood 2014) is a
bijective 64-bit mixer of 2 multiplies and 3 xor-shifts; applied to a Weyl sequence
(``seed + k * gamma``) it passes BigCrush, and it vectorises on AVX-512 (native 64-bit
multiply). Being counter-based, the word for (chunk, path, step, slot) is a pure function of
those four numbers: no generator state is carried, the NumPy references reproduce every draw
bit for bit, and a chunk's draws do not depend on which worker runs it.

Key derivation (the one place a user's seed becomes generator state): chunk ``i`` of a
request with seed ``s`` takes ``jax.random.fold_in(jax.random.key(s), i)`` (threefry, called
once per chunk on the host, so its speed is irrelevant) and packs its two 32-bit words into
the 64-bit ``chunk_key``. Path ``p`` of the chunk has the stream ``mix64(chunk_key + (p + 1) *
GOLDEN)``; the word for step ``t`` and slot ``k`` (several independent draws per step) is
``mix64(stream + (t * SLOTS + k + 1) * STEP)``.
"""

from __future__ import annotations

import numpy as np

from compute.core.jaxconf import jax, jnp

GOLDEN = 0x9E3779B97F4A7C15
STEP = 0xD1B54A32D192ED03
M1 = 0xBF58476D1CE4E5B9
M2 = 0x94D049BB133111EB
SLOTS = 4
TWO_M32 = 2.0**-32
TWO_M53 = 2.0**-53

DESCRIPTION = {
    "generator": "splitmix64 counter hash (mix64 of a Weyl sequence), one stream per path",
    "chunk_key": "jax.random.key_data(jax.random.fold_in(jax.random.key(seed), chunk))",
    "path_stream": "mix64(chunk_key + (path_in_chunk + 1) * 0x9E3779B97F4A7C15)",
    "draw": "mix64(path_stream + (step * 4 + slot + 1) * 0xD1B54A32D192ED03)",
}

_U = jnp.uint64


def chunk_key(seed: int, chunk: int) -> int:
    """The 64-bit key of chunk ``chunk``: ``fold_in(key(seed), chunk)`` packed into one word."""
    return chunk_keys(seed, chunk, chunk + 1)[0]


@jax.jit
def _fold_many(seed: jax.Array, chunks: jax.Array) -> jax.Array:
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.key_data(jax.random.fold_in(base, i)))(chunks)


def chunk_keys(seed: int, start: int, stop: int) -> list[int]:
    """:func:`chunk_key` of chunks ``start .. stop-1`` in one compiled call (the same
    ``fold_in`` per chunk, vectorised; padded to a power of two to bound recompiles)."""
    n = stop - start
    size = 1 << max(0, (n - 1).bit_length())
    data = np.asarray(_fold_many(np.uint64(seed), np.arange(start, start + size, dtype=np.uint32)))
    return [(int(hi) << 32) | int(lo) for hi, lo in data[:n, :2]]


# ------------------------------------------------------------------------------ JAX side
def mix64(x: jax.Array) -> jax.Array:
    """SplitMix64's finaliser on uint64 (bijective; wraps modulo 2**64)."""
    x = (x ^ (x >> _U(30))) * _U(M1)
    x = (x ^ (x >> _U(27))) * _U(M2)
    return x ^ (x >> _U(31))


def path_streams(key: jax.Array, n_paths: int) -> jax.Array:
    """Per-path stream words ``(n_paths,)`` uint64 for a chunk key (uint64 scalar)."""
    ids = jnp.arange(1, n_paths + 1, dtype=jnp.uint64)
    return mix64(key.astype(jnp.uint64) + ids * _U(GOLDEN))


def draw(streams: jax.Array, t: jax.Array, slot: int) -> jax.Array:
    """The uint64 word of every path for step ``t`` and ``slot`` (0 <= slot < SLOTS)."""
    counter = t.astype(jnp.uint64) * _U(SLOTS) + _U(slot + 1)
    return mix64(streams + counter * _U(STEP))


def hi_uniform(word: jax.Array) -> jax.Array:
    """A uniform in (0, 1) from the high 32 bits (never 0 or 1)."""
    return ((word >> _U(32)).astype(jnp.float64) + 0.5) * TWO_M32


def lo_uniform(word: jax.Array) -> jax.Array:
    """A uniform in (0, 1) from the low 32 bits (never 0 or 1)."""
    return ((word & _U(0xFFFFFFFF)).astype(jnp.float64) + 0.5) * TWO_M32


def below(word: jax.Array, n: int | jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(j, frac)``: an index uniform on ``0..n-1`` from the high 32 bits (Lemire's
    multiply-shift, no division) and the low 32 bits of the product, a uniform uint64 on
    ``[0, 2**32)`` nearly independent of ``j`` (used for the alias test)."""
    prod = (word >> _U(32)) * jnp.asarray(n).astype(jnp.uint64)
    return (prod >> _U(32)).astype(jnp.int32), prod & _U(0xFFFFFFFF)


# ---------------------------------------------------------------------------- NumPy twin
_NU = np.uint64


def mix64_np(x: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`mix64` (uint64 arrays wrap silently)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> _NU(30))) * _NU(M1)
        x = (x ^ (x >> _NU(27))) * _NU(M2)
    return np.asarray(x ^ (x >> _NU(31)))


def path_streams_np(key: int, n_paths: int) -> np.ndarray:
    ids = np.arange(1, n_paths + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return mix64_np(_NU(key) + ids * _NU(GOLDEN))


def draw_np(streams: np.ndarray, t: int, slot: int) -> np.ndarray:
    counter = _NU((t * SLOTS + slot + 1) % 2**64)
    with np.errstate(over="ignore"):
        return mix64_np(streams + counter * _NU(STEP))


def hi_uniform_np(word: np.ndarray) -> np.ndarray:
    return ((word >> _NU(32)).astype(np.float64) + 0.5) * TWO_M32


def lo_uniform_np(word: np.ndarray) -> np.ndarray:
    return ((word & _NU(0xFFFFFFFF)).astype(np.float64) + 0.5) * TWO_M32


def below_np(word: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(over="ignore"):
        prod = (word >> _NU(32)) * _NU(n)
    return (prod >> _NU(32)).astype(np.int32), prod & _NU(0xFFFFFFFF)
