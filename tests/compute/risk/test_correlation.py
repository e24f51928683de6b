"""Correlation, covariance, shrinkage, alignment and portfolio VaR/ES against independent
references: pandas ``.corr()``/``.cov()``/``.rank()``, the loop references of
``compute.risk.reference`` (Ledoit-Wolf term by term from the papers), hand-made alignments,
and the real daily files of seven coins."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute.core.errors import InputDataError, SpecError
from compute.risk import correlation as co
from compute.risk import reference as ref
from compute.risk.var import InsufficientReturnsError
from tests.compute.conftest import data_dir

COINS = ("BTC", "ETH", "SOL", "ADA", "XRP", "BNB", "DOGE")
DAY = 86_400
PROFILE = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def real_closes() -> dict[str, pd.Series]:
    folder = data_dir()
    if folder is None:
        pytest.skip("real-data folder ../shared/data is absent")
    out = {}
    for coin in COINS:
        path = next(Path(folder).glob(f"binance_spot_{coin}USDT_1d_*.csv"))
        frame = pd.read_csv(path).iloc[:-1]  # the last bar is still open (SOURCES.md)
        stamps = pd.to_datetime(frame["timestamp"], utc=True)
        ts = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        out[coin] = pd.Series(frame["close"].to_numpy(np.float64), index=ts.to_numpy())
    return out


@pytest.fixture(scope="module")
def real() -> tuple[co.AlignedReturns, pd.DataFrame]:
    closes = real_closes()
    aligned = co.align_returns(
        {c: (s.index.to_numpy(), s.to_numpy()) for c, s in closes.items()}, DAY
    )
    # independently: pandas pct_change per coin (daily files have no holes), inner join
    frame = pd.concat({c: s.pct_change() for c, s in closes.items()}, axis=1, join="inner")
    return aligned, frame.dropna()


def correlated(k: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(k, k)) * 0.4 + np.eye(k)
    return (mix @ rng.standard_t(5, (k, n))) * 0.01


# ----------------------------------------------------------------------------- alignment
def test_align_inner_joins_one_bar_returns_and_counts_drops() -> None:
    a_ts = np.array([0, 1, 2, 3, 5, 6]) * DAY  # bar 4 missing: no return at 5 (spans 2 bars)
    b_ts = np.array([1, 2, 3, 4, 5, 6]) * DAY
    a = np.array([100.0, 110, 99, 99, 120, 132])
    b = np.array([10.0, 11, 12, 13, 14, 7])
    out = co.align_returns({"A": (a_ts, a), "B": (b_ts, b)}, DAY)
    # A returns at 1, 2, 3, 6 (5 skipped); B at 2..6
    np.testing.assert_array_equal(out.ts, np.array([2, 3, 6]) * DAY)
    np.testing.assert_allclose(out.returns[0], [99 / 110 - 1, 0.0, 0.1])
    np.testing.assert_allclose(out.returns[1], [11 / 10 - 1, 12 / 11 - 1, 7 / 14 - 1])
    assert out.gaps == {"A": 1, "B": 0}
    assert out.dropped == {"A": 1, "B": 2}
    assert out.dropped_timestamps == 3  # 1, 4, 5
    assert out.bars == {"A": 6, "B": 6}


def test_real_alignment_equals_pandas_inner_join(real: tuple) -> None:
    aligned, frame = real
    np.testing.assert_array_equal(aligned.ts, frame.index.to_numpy())
    np.testing.assert_allclose(aligned.returns, frame.to_numpy().T, rtol=1e-15)
    assert aligned.dropped["SOL"] == 0 and aligned.dropped["BTC"] > 1000  # SOL lists in 2020


# ------------------------------------------------------------------------ Pearson / cov
@pytest.mark.parametrize(("k", "n"), [(2, 5), (6, 300), (12, 20_000)])
def test_pearson_and_covariance_equal_pandas(k: int, n: int) -> None:
    x = correlated(k, n, seed=k)
    frame = pd.DataFrame(x.T)
    np.testing.assert_allclose(co.pearson(x), frame.corr().to_numpy(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(co.covariance(x), frame.cov().to_numpy(), rtol=1e-12, atol=0)


def test_pearson_on_real_aligned_returns(real: tuple) -> None:
    aligned, frame = real
    expected = frame.corr().to_numpy()
    np.testing.assert_allclose(co.pearson(aligned.returns), expected, atol=1e-13)
    assert 0.3 < expected[0, 1] < 0.95  # BTC-ETH strongly but not perfectly correlated
    for i, j in [(0, 1), (2, 6)]:
        assert co.pearson(aligned.returns)[i, j] == pytest.approx(
            ref.pearson(aligned.returns[i].tolist(), aligned.returns[j].tolist()), abs=1e-13
        )


def test_pearson_recentres_large_means() -> None:
    x = correlated(3, 500, seed=2) + np.array([[1e4], [0.0], [-3e3]])  # mean >> std
    expected = [[ref.pearson(x[i].tolist(), x[j].tolist()) for j in range(3)] for i in range(3)]
    np.testing.assert_allclose(co.pearson(x), expected, atol=1e-12)


def test_constant_row_gives_nan_like_pandas() -> None:
    x = correlated(3, 50, seed=5)
    x[1] = 0.1
    got = co.pearson(x)
    expected = pd.DataFrame(x.T).corr().to_numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got[0, 2], expected[0, 2], atol=1e-14)


# ---------------------------------------------------------------------------- Spearman
def test_average_ranks_equal_pandas_and_reference() -> None:
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=(3, 200)), 1)  # many ties
    got = co.average_ranks(x)
    for i in range(3):
        np.testing.assert_array_equal(got[i], pd.Series(x[i]).rank().to_numpy())
        assert got[i].tolist() == ref.average_ranks(x[i].tolist())


def test_spearman_equals_pandas(real: tuple) -> None:
    aligned, frame = real
    np.testing.assert_allclose(
        co.spearman(aligned.returns), frame.corr(method="spearman").to_numpy(), atol=1e-13
    )
    tied = np.round(correlated(4, 300, seed=8), 3)
    np.testing.assert_allclose(
        co.correlation(tied, "spearman"),
        pd.DataFrame(tied.T).corr(method="spearman").to_numpy(),
        atol=1e-13,
    )


# ------------------------------------------------------------------------------- rolling
def test_rolling_equals_pandas_per_window() -> None:
    x = correlated(3, 120, seed=3)
    ends, mats = co.rolling_correlation(x, 40, step=25)
    np.testing.assert_array_equal(ends, [44, 69, 94, 119])  # anchored at the last bar
    for e, m in zip(ends, mats, strict=True):
        window = pd.DataFrame(x[:, e - 39 : e + 1].T)
        np.testing.assert_allclose(m, window.corr().to_numpy(), atol=1e-13)
    series = pd.Series(x[0]).rolling(40).corr(pd.Series(x[2]))
    np.testing.assert_allclose(mats[:, 0, 2], series.to_numpy()[ends], atol=1e-12)


# --------------------------------------------------------------------------- Ledoit-Wolf
@pytest.mark.parametrize("target", co.TARGETS)
def test_ledoit_wolf_equals_paper_reference(target: str) -> None:
    x = correlated(4, 80, seed=11)
    got = co.ledoit_wolf(x, target)  # type: ignore[arg-type]
    fn = (
        ref.ledoit_wolf_constant_correlation
        if target == "constant_correlation"
        else (ref.ledoit_wolf_identity)
    )
    expected = fn(x.tolist())
    assert got.shrinkage == pytest.approx(expected, rel=1e-10)
    assert 0.0 < got.shrinkage < 1.0
    sample = np.cov(x, ddof=0)
    sd = np.sqrt(np.diag(sample))
    if target == "identity":
        prior = np.trace(sample) / 4 * np.eye(4)
    else:
        r = sample / np.outer(sd, sd)
        prior = (r.sum() - 4) / 12 * np.outer(sd, sd)
        np.fill_diagonal(prior, np.diag(sample))
    np.testing.assert_allclose(
        got.cov, got.shrinkage * prior + (1 - got.shrinkage) * sample, rtol=1e-12
    )


def test_ledoit_wolf_shrinks_more_with_fewer_observations(real: tuple) -> None:
    aligned, _ = real
    short = co.ledoit_wolf(aligned.returns[:, -60:]).shrinkage
    long = co.ledoit_wolf(aligned.returns).shrinkage
    assert short > long
    assert np.linalg.eigvalsh(co.ledoit_wolf(aligned.returns[:, -8:]).cov).min() > 0


# ------------------------------------------------------------------------------ portfolio
def test_portfolio_var_es(real: tuple) -> None:
    aligned, frame = real
    w = np.array([0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05])
    out = co.portfolio_var_es(aligned.returns, w)
    rp = frame.to_numpy() @ w
    q = np.quantile(rp, [0.05, 0.01], method="linear")
    np.testing.assert_allclose(out.var["historical"], q, atol=1e-15)
    np.testing.assert_allclose(out.es["historical"], [rp[rp <= v].mean() for v in q], rtol=1e-12)
    normal = [ref.normal(rp.tolist(), c) for c in (0.95, 0.99)]
    np.testing.assert_allclose(out.var["normal"], [v for v, _ in normal], rtol=1e-11)
    np.testing.assert_allclose(out.es["normal"], [e for _, e in normal], rtol=1e-11)
    cf = [ref.cornish_fisher(rp.tolist(), c, steps=20_000) for c in (0.95, 0.99)]
    np.testing.assert_allclose(out.var["cornish_fisher"], [v for v, _ in cf], rtol=1e-11)
    np.testing.assert_allclose(out.var_contributions.sum(axis=1), out.var["normal"], rtol=1e-12)
    assert out.sigma == pytest.approx(rp.std(ddof=1), rel=1e-12)


def test_portfolio_with_shrunk_covariance_uses_it() -> None:
    x = correlated(3, 50, seed=4)
    cov = co.ledoit_wolf(x).cov
    out = co.portfolio_var_es(x, [1.0, -0.5, 0.5], [0.99], cov=cov)
    w = np.array([1.0, -0.5, 0.5])
    sigma = math.sqrt(w @ cov @ w)
    assert out.var["normal"][0] == pytest.approx(w @ x.mean(axis=1) - 2.3263478740408408 * sigma)


# ---------------------------------------------------------------------------- bad input
@PROFILE
@given(n=st.integers(0, 2), k=st.integers(2, 4))
def test_short_inputs_raise_insufficient(n: int, k: int) -> None:
    x = np.zeros((k, n))
    for fn in (co.pearson, co.spearman, co.covariance, co.ledoit_wolf):
        with pytest.raises(InsufficientReturnsError):
            fn(x)


@PROFILE
@given(where=st.integers(0, 29), bad=st.sampled_from([math.nan, math.inf]))
def test_non_finite_raises(where: int, bad: float) -> None:
    x = correlated(2, 30, seed=1)
    x[1, where] = bad
    with pytest.raises(InputDataError, match="returns"):
        co.pearson(x)


def test_bad_parameters_say_what_is_valid() -> None:
    x = correlated(2, 30, seed=1)
    with pytest.raises(SpecError, match="pearson"):
        co.correlation(x, "kendall")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="constant_correlation"):
        co.ledoit_wolf(x, "diagonal")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="weights"):
        co.portfolio_var_es(x, [1.0])
    with pytest.raises(InputDataError, match="constant"):
        co.ledoit_wolf(np.vstack([x, np.ones(30)]))
    with pytest.raises(InputDataError, match="one row per coin"):
        co.pearson(x[0])
