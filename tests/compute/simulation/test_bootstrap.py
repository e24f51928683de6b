"""Block bootstrap: the kernel against its NumPy reference, and the statistical properties
the issue asks for (mean and short-lag autocorrelation preserved, stationary block length,
volatility scaling, regime-weighted starts), plus Politis-White against ``arch``."""

from __future__ import annotations

import numpy as np
import pytest

from compute.core.errors import SpecError
from compute.simulation import bootstrap, shocks
from compute.simulation import paths as simulate
from compute.simulation import reference as ref
from tests.compute.conftest import load_candles

KEY = 0x1234_5678_9ABC_DEF0


def _paths(
    params: bootstrap.BootstrapParams, horizon: int, chunk: int = 1024, **kw: object
) -> np.ndarray:
    layout = simulate.Layout("bootstrap", horizon, chunk, horizon, **kw)  # type: ignore[arg-type]
    r, _ = simulate.paths_kernel(
        params, shocks.ShockSpec().params(horizon), np.uint64(KEY), layout=layout
    )
    return np.asarray(r)


def _ar1(n: int, phi: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(0.001, 0.02, n)
    x = np.empty(n)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


def _acf1(x: np.ndarray) -> float:
    """Lag-1 autocorrelation pooled over rows (each row demeaned by the pooled mean)."""
    d = x - x.mean()
    return float(np.sum(d[:, 1:] * d[:, :-1]) / np.sum(d * d))


@pytest.mark.parametrize("kind", ["circular", "stationary"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("scaled", [False, True])
def test_kernel_matches_numpy_reference(kind: str, weighted: bool, scaled: bool) -> None:
    src = _ar1(300, 0.2, 1)
    rng = np.random.default_rng(2)
    weights = rng.uniform(0, 1, 300) * (rng.uniform(size=300) < 0.5) if weighted else None
    scale = bootstrap.block_scales(src, 7, 0.03) if scaled else None
    params = bootstrap.make_params(src, 7.0, scale=scale, weights=weights)
    got = _paths(params, 50, kind=kind, weighted=weighted, scaled=scaled)
    want, _ = ref.bootstrap_returns(
        src, 7.0, 1024, 50, KEY, kind=kind, scale=scale, weights=weights
    )
    np.testing.assert_array_equal(got, want)


def test_resamples_preserve_mean_and_short_lag_autocorrelation() -> None:
    src = _ar1(2000, 0.3, 3)
    got = _paths(bootstrap.make_params(src, 25.0), 1000)
    # mean: 1,024 x 1,000 draws; the standard error of the pooled mean of block sums is
    # about sd * sqrt(b / (paths * horizon)) (times the AR long-run factor ~1.4)
    se = src.std() * np.sqrt(25 / got.size) * 1.5
    assert abs(got.mean() - src.mean()) < 4 * se
    # lag-1 autocorrelation: pairs that straddle a block boundary (1 in 25) are independent
    source_acf = _acf1(src[None, :])
    assert abs(_acf1(got) - source_acf * (1 - 1 / 25)) < 0.01
    # lag 2 as well
    d = got - got.mean()
    lag2 = np.sum(d[:, 2:] * d[:, :-2]) / np.sum(d * d)
    s = src - src.mean()
    src_lag2 = np.sum(s[2:] * s[:-2]) / np.sum(s * s)
    assert abs(lag2 - src_lag2 * (1 - 2 / 25)) < 0.01


@pytest.mark.parametrize("block", [4.0, 12.5, 40.0])
def test_stationary_blocks_have_the_stated_mean_length(block: float) -> None:
    n = 5000
    src = np.arange(1, n + 1, dtype=np.float64) * 1e-6  # the value tells the position
    got = _paths(bootstrap.make_params(src, block), 2000, kind="stationary")
    idx = np.rint(got * 1e6).astype(np.int64) - 1
    new = idx[:, 1:] != (idx[:, :-1] + 1) % n
    starts = new.sum() + idx.shape[0]  # step 0 always starts a block
    mean_len = idx.size / starts  # ~ geometric mean length (blocks cut at the horizon)
    assert abs(mean_len - block) / block < 0.03


def test_circular_blocks_have_exactly_the_block_length() -> None:
    n = 3000
    src = np.arange(1, n + 1, dtype=np.float64) * 1e-6
    got = _paths(bootstrap.make_params(src, 9.0), 90, kind="circular")
    idx = np.rint(got * 1e6).astype(np.int64) - 1
    inside = idx[:, 1:] == (idx[:, :-1] + 1) % n
    steps = np.arange(1, 90)
    assert inside[:, steps % 9 != 0].all()  # never a jump inside a block
    assert (~inside[:, steps % 9 == 0]).mean() > 0.99  # a fresh draw at every boundary


def test_volatility_scaling_hits_sigma_now() -> None:
    rng = np.random.default_rng(5)
    src = np.concatenate([rng.normal(0, 0.01, 1500), rng.normal(0, 0.05, 1500)])
    sigma_now = 0.02
    scale = bootstrap.block_scales(src, 20, sigma_now)
    got = _paths(bootstrap.make_params(src, 20.0, scale=scale), 730, scaled=True)
    assert abs(bootstrap.rms(got) - sigma_now) / sigma_now < 0.03
    # without scaling, the mixture's RMS (~0.036) is far from it
    plain = _paths(bootstrap.make_params(src, 20.0), 730)
    assert abs(bootstrap.rms(plain) - sigma_now) / sigma_now > 0.5


def test_block_scales_by_hand() -> None:
    src = np.array([0.01, -0.01, 0.03, -0.03, 0.02])
    got = bootstrap.block_scales(src, 2, 0.02, floor=0.0)
    # block at j covers j, j+1 (circularly): RMS of (0.01, -0.01) = 0.01 -> scale 2
    want = 0.02 / np.sqrt([1e-4, 5e-4, 9e-4, 6.5e-4, 2.5e-4])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_regime_weighted_starts_follow_the_mix() -> None:
    n = 1000
    src = np.arange(1, n + 1, dtype=np.float64) * 1e-6
    labels = np.repeat([0, 1, 2, -1], 250)
    weights = bootstrap.regime_weights(labels, {2: 0.75, 0: 0.25})
    got = _paths(bootstrap.make_params(src, 5.0, weights=weights), 50, weighted=True)
    idx = np.rint(got * 1e6).astype(np.int64) - 1
    start_labels = labels[idx[:, ::5]]
    assert set(np.unique(start_labels)) == {0, 2}
    share_high = (start_labels == 2).mean()
    assert abs(share_high - 0.75) < 0.01


def test_alias_table_gives_the_weights_exactly() -> None:
    w = np.array([0.0, 1.0, 3.0, 0.5, 0.5, 5.0])
    accept, alias = bootstrap.alias_table(w)
    keep = accept.astype(np.float64) / 2.0**32
    prob = keep.copy()
    for i, a in enumerate(alias):
        prob[a] += 1.0 - keep[i]
    np.testing.assert_allclose(prob / w.size, w / w.sum(), atol=1e-9)
    with pytest.raises(SpecError):
        bootstrap.alias_table(np.zeros(3))


def test_politis_white_matches_arch() -> None:
    from arch.bootstrap import optimal_block_length

    btc = load_candles("btc_1d")
    returns = np.diff(btc["close"]) / btc["close"][:-1]
    for series in (returns, _ar1(2000, 0.5, 7), np.abs(returns)):
        want = optimal_block_length(series)
        got = bootstrap.politis_white(series)
        np.testing.assert_allclose(got, want.iloc[0].to_numpy(), rtol=1e-10)
