"""HMM: the forward algorithm against the textbook reference and ``hmmlearn``; Baum-Welch
recovers known parameters from simulated data; on real BTC daily returns the fit reaches
(at least) hmmlearn's log-likelihood; states come ordered by volatility."""

from __future__ import annotations

import numpy as np
import pytest

from compute.core.errors import InputDataError, SpecError
from compute.simulation import hmm
from compute.simulation import hmm_reference as ref
from tests.compute.conftest import load_candles


def _simulate(
    trans: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    n: int,
    seed: int,
    df: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    states = np.empty(n, np.int64)
    states[0] = 0
    for t in range(1, n):
        states[t] = rng.choice(len(mu), p=trans[states[t - 1]])
    noise = rng.standard_normal(n) if df is None else rng.standard_t(df[states])
    return mu[states] + sigma[states] * noise, states


def _btc_log_returns() -> np.ndarray:
    return np.diff(np.log(load_candles("btc_1d")["close"]))


TRANS = np.array([[0.97, 0.03], [0.05, 0.95]])
MU = np.array([0.001, -0.003])
SIGMA = np.array([0.01, 0.04])


def test_loglik_matches_reference_and_hmmlearn() -> None:
    from hmmlearn.hmm import GaussianHMM

    x, _ = _simulate(TRANS, MU, SIGMA, 1000, 1)
    start = np.array([0.6, 0.4])
    params = hmm.HmmParams(start, TRANS, MU, SIGMA, np.full(2, np.inf))
    want, gamma = ref.forward_backward(x, start, TRANS, MU, SIGMA)
    assert hmm.loglik(x, params) == pytest.approx(want, rel=1e-12)
    model = GaussianHMM(2, covariance_type="diag")
    model.startprob_, model.transmat_ = start, TRANS
    model.means_, model.covars_ = MU[:, None], (SIGMA**2)[:, None]
    assert hmm.loglik(x, params) == pytest.approx(model.score(x[:, None]), rel=1e-12)
    np.testing.assert_allclose(gamma, model.predict_proba(x[:, None]), atol=1e-9)
    # Student-t emissions against scipy's density
    df = np.array([4.0, 6.0])
    pt = hmm.HmmParams(start, TRANS, MU, SIGMA, df)
    want_t, _ = ref.forward_backward(x, start, TRANS, MU, SIGMA, df)
    assert hmm.loglik(x, pt, emission="student_t") == pytest.approx(want_t, rel=1e-12)


def test_gaussian_fit_recovers_known_parameters() -> None:
    x, states = _simulate(TRANS, MU, SIGMA, 5000, 2)
    fit = hmm.fit(x, 2, restarts=4, seed=1)
    np.testing.assert_allclose(fit.sigma, SIGMA, rtol=0.06)
    np.testing.assert_allclose(fit.mu, MU, atol=0.0025)
    np.testing.assert_allclose(fit.trans, TRANS, atol=0.02)
    assert fit.converged
    assert np.mean(fit.states == states) > 0.9
    assert fit.volatility[0] < fit.volatility[1]


def test_student_t_fit_recovers_known_parameters() -> None:
    df = np.array([5.0, 5.0])
    x, _ = _simulate(TRANS, MU, SIGMA, 5000, 3, df=df)
    fit = hmm.fit(x, 2, emission="student_t", restarts=3, seed=2)
    np.testing.assert_allclose(fit.sigma, SIGMA, rtol=0.12)
    np.testing.assert_allclose(fit.trans, TRANS, atol=0.03)
    assert np.all((fit.df > 3) & (fit.df < 9))
    gauss = hmm.fit(x, 2, restarts=3, seed=2)
    assert fit.loglik > gauss.loglik  # the heavier tails fit better


def test_fit_on_btc_reaches_hmmlearns_loglik() -> None:
    from hmmlearn.hmm import GaussianHMM

    x = _btc_log_returns()
    best = -np.inf
    for seed in range(3):
        model = GaussianHMM(
            2, covariance_type="diag", n_iter=300, tol=1e-6, min_covar=1e-10, random_state=seed
        ).fit(x[:, None])
        score = model.score(x[:, None])
        if score > best:
            best, best_model = score, model
    fit = hmm.fit(x, 2, restarts=5, tol=1e-6, max_iter=500)
    # same optimum within EM tolerance (never worse than hmmlearn's best start)
    assert fit.loglik == pytest.approx(best, abs=1.0)
    assert fit.loglik > best - 0.05
    p = best_model
    order = np.argsort(np.sqrt(p.covars_[:, 0, 0]))
    # the likelihood is flat near the optimum: parameters agree to a few per cent
    np.testing.assert_allclose(fit.sigma, np.sqrt(p.covars_[order, 0, 0]), rtol=0.06)
    ours = hmm.HmmParams(
        p.startprob_, p.transmat_, p.means_[:, 0], np.sqrt(p.covars_[:, 0, 0]), np.full(2, np.inf)
    )
    assert hmm.loglik(x, ours) == pytest.approx(best, rel=1e-10)


@pytest.mark.parametrize("k", [3, 4])
def test_more_states_are_ordered_by_volatility(k: int) -> None:
    fit = hmm.fit(_btc_log_returns(), k, restarts=2, max_iter=60)
    assert np.all(np.diff(fit.volatility) > 0)
    np.testing.assert_allclose(fit.trans.sum(1), 1.0, atol=1e-9)
    assert fit.last_probs.sum() == pytest.approx(1.0)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(SpecError, match="n_states"):
        hmm.fit(np.zeros(100), 5)
    with pytest.raises(InputDataError, match="needs"):
        hmm.fit(np.zeros(10), 2)
    with pytest.raises(InputDataError, match="constant"):
        hmm.fit(np.full(100, 0.01), 2)
    with pytest.raises(InputDataError, match="finite"):
        hmm.fit(np.array([0.1, np.nan] * 50), 2)
