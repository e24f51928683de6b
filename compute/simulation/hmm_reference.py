"""Slow NumPy reference of the HMM forward-backward pass: the textbook scaled recursion
(Rabiner 1989), one bar at a time, for Gaussian or Student-t emissions."""

from __future__ import annotations

import numpy as np
from scipy import stats


def emission_density(
    x: np.ndarray, mu: np.ndarray, sigma: np.ndarray, df: np.ndarray | None
) -> np.ndarray:
    """``(T, K)`` densities of each observation under each state."""
    if df is None:
        return stats.norm.pdf(x[:, None], loc=mu[None, :], scale=sigma[None, :])
    return stats.t.pdf(x[:, None], df=df[None, :], loc=mu[None, :], scale=sigma[None, :])


def forward_backward(
    x: np.ndarray,
    start: np.ndarray,
    trans: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    df: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """``(loglik, posterior state probabilities (T, K))``."""
    b = emission_density(np.asarray(x, np.float64), mu, sigma, df)
    n, k = b.shape
    alpha = np.empty((n, k))
    scale = np.empty(n)
    a = start * b[0]
    scale[0] = a.sum()
    alpha[0] = a / scale[0]
    for t in range(1, n):
        a = (alpha[t - 1] @ trans) * b[t]
        scale[t] = a.sum()
        alpha[t] = a / scale[t]
    beta = np.ones((n, k))
    for t in range(n - 2, -1, -1):
        beta[t] = trans @ (b[t + 1] * beta[t + 1]) / scale[t + 1]
    gamma = alpha * beta
    gamma /= gamma.sum(axis=1, keepdims=True)
    return float(np.log(scale).sum()), gamma
