"""Hidden Markov models of returns: 2-4 regimes, Gaussian or Student-t emissions, fitted by
Baum-Welch (EM; ECM for the Student-t degrees of freedom) from several starts at once.

Why not a plain ``lax.scan`` over time: a forward-backward pass is a chain of K x K matrix
products, ``alpha_t = alpha_0 M_1 ... M_t`` with ``M_t = A diag(b_t)``, and a sequential
loop over 5,000 bars pays XLA's per-iteration overhead 10,000 times per EM step. Matrix
products are associative, so every prefix (and, on the reversed transposes, every suffix)
is computed blockwise (:func:`_prefix`): one scan of 64 steps over all blocks at once, then
one scan across the blocks, ~2 sqrt-sized loops instead of one long one.
(``lax.associative_scan`` did the same in ``log2 T`` levels but took ~13 s to compile.)
Each element carries its matrix normalised to a maximum of 1 and the log of the factor
taken out (the "scaled" representation), so nothing under- or overflows. The restarts are
a ``vmap`` axis: five starts cost about what one does.

States are returned ordered by volatility (emission standard deviation, ascending: state 0
is the calmest). The series is padded to a multiple of 256 bars (masked: padding
contributes nothing), so one compiled function serves many lengths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import numpy as np
from jax.scipy.special import digamma, gammaln

from compute.core.errors import InputDataError, SpecError
from compute.core.jaxconf import jax, jnp, lax

Array = jax.Array
Field = Any  # a pytree leaf: a jax array in kernels, a NumPy array or scalar on the host
EMISSIONS = ("gaussian", "student_t")
PAD = 256
BLOCK = 64
DF_LO, DF_HI = 2.05, 200.0


class HmmParams(NamedTuple):
    start: Field  # (K,)
    trans: Field  # (K, K)
    mu: Field  # (K,)
    sigma: Field  # (K,) scale (the std for Gaussian emissions)
    df: Field  # (K,) Student-t degrees of freedom (inf: Gaussian)


@dataclass(frozen=True)
class HmmFit:
    """A fitted model (states ordered by volatility) and how the fit went."""

    emission: str
    start: np.ndarray
    trans: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    df: np.ndarray
    loglik: float
    n_iter: int
    converged: bool
    restarts: int
    restart_logliks: list[float]
    last_probs: np.ndarray  # filtered regime probabilities at the last bar
    states: np.ndarray  # most probable regime of each bar (posterior argmax)

    @property
    def volatility(self) -> np.ndarray:
        """Emission standard deviation of each state."""
        finite = np.isfinite(self.df)
        df = np.where(finite, self.df, 3.0)
        scale = np.where(df > 2, np.sqrt(df / np.maximum(df - 2, 1e-12)), np.inf)
        return self.sigma * np.where(finite, scale, 1.0)

    def describe(self) -> dict[str, Any]:
        return {
            "emission": self.emission,
            "n_states": int(self.mu.size),
            "mu": self.mu.tolist(),
            "sigma": self.sigma.tolist(),
            "volatility": self.volatility.tolist(),
            "df": [None if math.isinf(d) else float(d) for d in self.df],
            "transmat": self.trans.tolist(),
            "start": self.start.tolist(),
            "last_probs": self.last_probs.tolist(),
            "loglik": self.loglik,
            "n_iter": self.n_iter,
            "converged": self.converged,
            "restarts": self.restarts,
            "restart_logliks": self.restart_logliks,
            "state_order": "ascending volatility (state 0 = calmest)",
        }


def _log_emission(x: Array, p: HmmParams, student: bool) -> Array:
    """``(T, K)`` log densities of each observation under each state."""
    d = (x[:, None] - p.mu[None, :]) / p.sigma[None, :]
    if not student:
        return -0.5 * d * d - jnp.log(p.sigma)[None, :] - 0.5 * math.log(2 * math.pi)
    nu = p.df[None, :]
    return (
        gammaln((nu + 1) / 2)
        - gammaln(nu / 2)
        - 0.5 * jnp.log(nu * math.pi)
        - jnp.log(p.sigma)[None, :]
        - (nu + 1) / 2 * jnp.log1p(d * d / nu)
    )


def _scaled_matmul(a: tuple[Array, Array], b: tuple[Array, Array]) -> tuple[Array, Array]:
    m = jnp.matmul(a[0], b[0])
    norm = jnp.max(m, axis=(-2, -1), keepdims=True)
    return m / norm, a[1] + b[1] + jnp.log(norm[..., 0, 0])


def _prefix(mats: Array) -> tuple[Array, Array]:
    """Every prefix product ``M_0 ... M_t`` of ``(N, K, K)`` matrices, scaled (max 1) with the
    logs of the factors taken out: a scan of ``BLOCK`` steps over all blocks at once (the
    products inside each block), then a scan over blocks (the product of earlier blocks)."""
    n, k = mats.shape[0], mats.shape[1]
    blocks = -(-n // BLOCK)
    eye = jnp.eye(k, dtype=mats.dtype)
    padded = jnp.concatenate([mats, jnp.broadcast_to(eye, (blocks * BLOCK - n, k, k))])
    by_step = jnp.swapaxes(padded.reshape(blocks, BLOCK, k, k), 0, 1)  # (BLOCK, B, K, K)

    def inner(carry: tuple[Array, Array], m: Array) -> tuple[Any, tuple[Array, Array]]:
        out = _scaled_matmul(carry, (m, jnp.zeros(m.shape[0])))
        return out, out

    start = (jnp.broadcast_to(eye, (blocks, k, k)), jnp.zeros(blocks))
    _, (within, within_log) = lax.scan(inner, start, by_step)

    def outer(carry: tuple[Array, Array], tot: tuple[Array, Array]) -> tuple[Any, Any]:
        return _scaled_matmul(carry, tot), carry

    _, (before, before_log) = lax.scan(outer, (eye, jnp.zeros(())), (within[-1], within_log[-1]))
    prod = jnp.einsum("bij,lbjk->blik", before, within)
    norm = jnp.max(prod, axis=(-2, -1), keepdims=True)
    logs = before_log[:, None] + within_log.T + jnp.log(norm[..., 0, 0])
    return (prod / norm).reshape(-1, k, k)[:n], logs.reshape(-1)[:n]


def forward_backward(logb: Array, p: HmmParams, mask: Array) -> tuple[Array, Array, Array, Array]:
    """``(loglik, gamma (T, K), xi summed over t (K, K), filtered alpha (T, K))``."""
    logb = jnp.where(mask[:, None], logb, 0.0)
    c = jnp.max(logb, axis=1)
    b = jnp.exp(logb - c[:, None])
    mats = p.trans[None, :, :] * b[1:, None, :]  # M_t, t = 1..T-1
    pre, pre_log = _prefix(mats)
    a0 = p.start * b[0]
    alpha_rest = jnp.einsum("i,tij->tj", a0, pre)
    alpha = jnp.concatenate([a0[None], alpha_rest], axis=0)
    total = jnp.sum(alpha_rest[-1])
    loglik = jnp.log(total) + pre_log[-1] + jnp.sum(c)
    alpha = alpha / jnp.sum(alpha, axis=1, keepdims=True)
    rev = jnp.swapaxes(mats, 1, 2)[::-1]
    suf, _ = _prefix(rev)
    beta_rest = jnp.sum(suf, axis=1)[::-1]  # beta_t for t = 0..T-2 (column sums of Q)
    beta = jnp.concatenate([beta_rest, jnp.ones((1, b.shape[1]))], axis=0)
    beta = beta / jnp.sum(beta, axis=1, keepdims=True)
    gamma = alpha * beta
    gamma = gamma / jnp.sum(gamma, axis=1, keepdims=True) * mask[:, None]
    xi = alpha[:-1, :, None] * mats * beta[1:, None, :]
    xi = xi / jnp.sum(xi, axis=(1, 2), keepdims=True) * mask[1:, None, None]
    return loglik, gamma, jnp.sum(xi, axis=0), alpha


def _solve_df(const: Array) -> Array:
    """Root in ``[DF_LO, DF_HI]`` of ``-psi(v/2) + log(v/2) + const = 0`` by bisection."""

    def f(v: Array) -> Array:
        return -digamma(v / 2) + jnp.log(v / 2) + const

    lo = jnp.full_like(const, math.log(DF_LO))
    hi = jnp.full_like(const, math.log(DF_HI))

    def body(_: int, bounds: tuple[Array, Array]) -> tuple[Array, Array]:
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        pos = f(jnp.exp(mid)) > 0  # f decreasing in v: root is above mid
        return jnp.where(pos, mid, lo), jnp.where(pos, hi, mid)

    lo, hi = lax.fori_loop(0, 50, body, (lo, hi))
    return jnp.exp(0.5 * (lo + hi))


def _m_step(
    x: Array, p: HmmParams, gamma: Array, xi: Array, student: bool, floor: Array
) -> HmmParams:
    n_k = jnp.maximum(jnp.sum(gamma, axis=0), 1e-12)
    trans = xi / jnp.maximum(jnp.sum(xi, axis=1, keepdims=True), 1e-300)
    start = gamma[0] / jnp.sum(gamma[0])
    if not student:
        mu = gamma.T @ x / n_k
        var = jnp.sum(gamma * (x[:, None] - mu[None, :]) ** 2, axis=0) / n_k
        return HmmParams(start, trans, mu, jnp.sqrt(var + floor), p.df)
    d2 = ((x[:, None] - p.mu[None, :]) / p.sigma[None, :]) ** 2
    u = (p.df[None, :] + 1) / (p.df[None, :] + d2)
    wu = gamma * u
    mu = wu.T @ x / jnp.maximum(jnp.sum(wu, axis=0), 1e-300)
    var = jnp.sum(wu * (x[:, None] - mu[None, :]) ** 2, axis=0) / n_k
    mean_lu = jnp.sum(gamma * (jnp.log(u) - u), axis=0) / n_k
    const = 1 + mean_lu + digamma((p.df + 1) / 2) - jnp.log((p.df + 1) / 2)
    return HmmParams(start, trans, mu, jnp.sqrt(var + floor), _solve_df(const))


@partial(jax.jit, static_argnames=("student", "max_iter"))
def _fit_many(
    x: Array,
    mask: Array,
    init: HmmParams,
    tol: Array,
    floor: Array,
    *,
    student: bool,
    max_iter: int,
) -> tuple[HmmParams, Array, Array, Array]:
    """EM from every start in ``init`` (leading axis): ``(params, loglik, iters, converged)``."""

    def one(p0: HmmParams) -> tuple[HmmParams, Array, Array, Array]:
        def cond(s: tuple[HmmParams, Array, Array, Array]) -> Array:
            _, prev, ll, it = s
            return (it < max_iter) & ((it < 2) | (ll - prev > tol))

        def body(s: tuple[HmmParams, Array, Array, Array]) -> Any:
            p, _, ll, it = s
            logb = _log_emission(x, p, student)
            new_ll, gamma, xi, _ = forward_backward(logb, p, mask)
            return _m_step(x, p, gamma, xi, student, floor), ll, new_ll, it + 1

        s0 = (p0, jnp.asarray(-jnp.inf), jnp.asarray(-jnp.inf), jnp.asarray(0))
        p, _, _, it = lax.while_loop(cond, body, s0)
        # the loglik of the returned parameters (EM never decreases it)
        ll, *_ = forward_backward(_log_emission(x, p, student), p, mask)
        return p, ll, it, it < max_iter

    return jax.vmap(one)(init)


@partial(jax.jit, static_argnames="student")
def _posterior(x: Array, mask: Array, p: HmmParams, *, student: bool) -> tuple[Array, ...]:
    return forward_backward(_log_emission(x, p, student), p, mask)


def _pad(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    size = -(-n // PAD) * PAD
    xp = np.zeros(size)
    xp[:n] = x
    mask = np.zeros(size, bool)
    mask[:n] = True
    return xp, mask


def _starts(x: np.ndarray, k: int, restarts: int, seed: int, student: bool) -> HmmParams:
    """Deterministic initial parameters: start 0 from quantiles of |x - median|, the others
    random perturbations of it (generator seeded by ``seed``)."""
    rng = np.random.default_rng(seed)
    dev = np.abs(x - np.median(x))
    groups = np.array_split(np.argsort(dev, kind="stable"), k)
    mu0 = np.array([x[g].mean() for g in groups])
    sd0 = np.array([max(x[g].std(), 1e-6 * x.std() + 1e-300) for g in groups])
    out = []
    for r in range(restarts):
        if r == 0:
            mu, sd = mu0, sd0
            stay = np.full(k, 0.95)
        else:
            mu = mu0 + rng.normal(0, 0.25, k) * sd0
            sd = np.sort(sd0 * np.exp(rng.uniform(-0.7, 0.7, k)))
            stay = rng.uniform(0.6, 0.99, k)
        trans = np.where(
            np.eye(k, dtype=bool), stay[:, None], ((1 - stay) / max(k - 1, 1))[:, None]
        )
        df = np.full(k, 6.0 if student else np.inf)
        out.append((np.full(k, 1.0 / k), trans, mu, sd, df))
    stacked = [np.stack([o[i] for o in out]) for i in range(5)]
    return HmmParams(*stacked)


def fit(
    returns: np.ndarray,
    n_states: int = 2,
    *,
    emission: str = "gaussian",
    restarts: int = 5,
    max_iter: int = 200,
    tol: float = 1e-4,
    seed: int = 0,
) -> HmmFit:
    """Fit a ``n_states`` HMM to ``returns`` from ``restarts`` starts; keep the best."""
    if emission not in EMISSIONS:
        raise SpecError(f"emission must be one of {EMISSIONS}, got {emission!r}")
    if not 2 <= n_states <= 4:
        raise SpecError(f"n_states must be 2, 3 or 4, got {n_states}")
    if not 1 <= restarts <= 32:
        raise SpecError(f"restarts must be in 1..32, got {restarts}")
    x = np.asarray(returns, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise InputDataError("returns must be a 1-D array of finite values")
    if not np.std(x) > 1e-12:
        raise InputDataError("returns are (nearly) constant: a regime model needs variation")
    if x.shape[0] < 20 * n_states:
        raise InputDataError(f"an HMM with {n_states} states needs >= {20 * n_states} returns")
    student = emission == "student_t"
    xp, mask = _pad(x)
    init = _starts(x, n_states, restarts, seed, student)
    floor = np.float64(1e-10 * x.var() + 1e-300)
    p, ll, iters, conv = _fit_many(
        xp, mask, init, np.float64(tol), floor, student=student, max_iter=max_iter
    )
    lls = np.asarray(ll)
    best = int(np.nanargmax(lls))
    pick = HmmParams(*(np.asarray(a)[best] for a in p))
    vol = pick.sigma * (np.sqrt(pick.df / (pick.df - 2)) if student else 1.0)
    order = np.argsort(vol, kind="stable")
    ordered = HmmParams(
        pick.start[order],
        pick.trans[np.ix_(order, order)],
        pick.mu[order],
        pick.sigma[order],
        pick.df[order],
    )
    _, gamma, _, alpha = _posterior(xp, mask, ordered, student=student)
    n = x.shape[0]
    return HmmFit(
        emission=emission,
        start=np.asarray(ordered.start),
        trans=np.asarray(ordered.trans),
        mu=np.asarray(ordered.mu),
        sigma=np.asarray(ordered.sigma),
        df=np.asarray(ordered.df),
        loglik=float(lls[best]),
        n_iter=int(np.asarray(iters)[best]),
        converged=bool(np.asarray(conv)[best]),
        restarts=restarts,
        restart_logliks=[float(v) for v in lls],
        last_probs=np.asarray(alpha)[n - 1],
        states=np.asarray(jnp.argmax(gamma[:n], axis=1)).astype(np.int8),
    )


def loglik(returns: np.ndarray, params: HmmParams, *, emission: str = "gaussian") -> float:
    """Log-likelihood of ``returns`` under given parameters (the forward algorithm)."""
    xp, mask = _pad(np.asarray(returns, dtype=np.float64))
    p = HmmParams(*(np.asarray(a, dtype=np.float64) for a in params))
    ll, *_ = _posterior(xp, mask, p, student=emission == "student_t")
    return float(ll)
