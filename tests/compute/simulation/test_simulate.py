"""Path statistics: the chunk kernel against NumPy references path by path, the histogram
quantiles against ``np.quantile``, exact merging, reruns byte for byte (the same bits across
worker counts: tests/serve_app/test_execution.py), the regime generator's fat tails and
volatility clustering, and ES_99 / max-drawdown percentiles on real BTC returns against
``arch``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from compute.core.errors import SpecError
from compute.simulation import bootstrap, prng, shocks
from compute.simulation import markov as regime_gen
from compute.simulation import paths as simulate
from compute.simulation import reference as ref
from tests.compute.conftest import load_candles

KEY = 4242


def _job(
    src: np.ndarray,
    paths: int,
    horizon: int,
    *,
    block: float = 10.0,
    seed: int = 7,
    spec: shocks.ShockSpec | None = None,
    ruin: float = 0.5,
    chunk: int = 1024,
) -> simulate.Job:
    spec = spec or shocks.ShockSpec()
    layout = simulate.Layout(
        "bootstrap", horizon, chunk, simulate.fan_spacing(horizon, 12), shocks=spec.flags()
    )
    return simulate.Job(
        layout, bootstrap.make_params(src, block), spec.params(horizon), ruin, seed, paths
    )


def _btc_returns() -> np.ndarray:
    close = load_candles("btc_1d")["close"]
    return np.diff(close) / close[:-1]


def test_chunk_kernel_matches_reference_path_by_path() -> None:
    rng = np.random.default_rng(1)
    src = rng.standard_t(3, 500) * 0.04
    spec = shocks.ShockSpec(leverage=2.0, maintenance_margin=0.2, gap_size=-0.2, gap_prob=0.005)
    layout = simulate.Layout("bootstrap", 40, 1024, 10, shocks=spec.flags())
    params = bootstrap.make_params(src, 5.0)
    out = simulate.chunk_kernel(
        params, spec.params(40), simulate.StatParams(np.float64(0.7)), np.uint64(KEY), layout=layout
    )
    r, _ = ref.bootstrap_returns(src, 5.0, 1024, 40, KEY)
    eq, liquidated = ref.apply_shocks(r, spec, KEY)
    want = ref.path_stats(eq, 0.7)
    np.testing.assert_allclose(
        np.asarray(out["terminal"]), want["terminal"], rtol=1e-12, atol=1e-14
    )
    # the kernel keeps drawdowns in float32 (histogram bins are 1e-4 wide)
    np.testing.assert_allclose(np.asarray(out["max_drawdown"]), want["max_drawdown"], atol=1e-6)
    for name in ("under_water", "longest", "ruined"):
        np.testing.assert_array_equal(np.asarray(out[name]), want[name])
    np.testing.assert_array_equal(np.asarray(out["liquidated"]), liquidated)
    assert liquidated.any() and want["ruined"].any() and not want["ruined"].all()
    # the fan records log-equity bins after steps 10, 20, 30, 40
    fan = np.asarray(out["fan_bin"]) % simulate.FAN_BINS
    width = (simulate.LOG_HI - simulate.LOG_LO) / simulate.FAN_BINS
    for i, step in enumerate((10, 20, 30, 40)):
        log_eq = np.log(np.maximum(want["equity"][:, step - 1], 1e-300))
        lo = simulate.LOG_LO + fan[i] * width
        inside = (log_eq >= lo - 1e-9) & (log_eq < lo + width + 1e-9)
        assert inside[log_eq > simulate.LOG_LO].all()


def test_statistics_agree_with_numpy_quantiles_of_the_same_paths() -> None:
    rng = np.random.default_rng(2)
    src = rng.standard_t(4, 800) * 0.03
    job = _job(src, 3000, 60)
    res = simulate.finalize(simulate.run_chunks(job, 0, job.n_chunks), job.layout)
    # the same paths through the reference, chunk by chunk
    parts = []
    for i in range(job.n_chunks):
        r, _ = ref.bootstrap_returns(src, 10.0, job.layout.chunk, 60, prng.chunk_key(7, i))
        parts.append(r)
    paths = np.concatenate(parts)[:3000]
    st = ref.path_stats(paths, 0.5)
    term, dd = st["terminal"], st["max_drawdown"]
    for p in simulate.PERCENTILES:
        assert res["max_drawdown"][f"p{p}"] == pytest.approx(np.percentile(dd, p), abs=2e-4)
    var = np.quantile(term, 0.01)
    assert res["horizon_return"]["var_99"] == pytest.approx(var, rel=2e-3)
    assert res["horizon_return"]["es_99"] == pytest.approx(term[term <= var].mean(), rel=2e-3)
    assert res["terminal_return"]["mean"] == pytest.approx(term.mean(), rel=1e-9)
    assert res["terminal_return"]["std"] == pytest.approx(term.std(ddof=1), rel=1e-9)
    assert res["terminal_return"]["p50"] == pytest.approx(np.median(term), rel=2e-3)
    assert res["ruin_probability"] == st["ruined"].mean()
    uw = st["under_water"]
    assert res["time_under_water"]["mean"] == pytest.approx(uw.mean(), rel=1e-12)
    assert res["time_under_water"]["median"] == np.median(uw)
    assert res["time_under_water"]["p95"] == pytest.approx(np.percentile(uw, 95), rel=1e-12)
    assert res["time_under_water"]["longest"] == st["longest"].max()
    last = res["equity_fan"][-1]
    assert last["step"] == 60
    assert last["p50"] == pytest.approx(np.median(term + 1), rel=5e-3)


def test_histogram_quantiles_by_hand() -> None:
    counts = np.array([0, 2, 0, 2])  # two values in [1, 2), two in [3, 4)
    # order statistics spread evenly: 1.25, 1.75, 3.25, 3.75
    assert simulate.hist_quantile(counts, 0.0, 1.0, 0.0) == 1.25
    assert simulate.hist_quantile(counts, 0.0, 1.0, 0.5) == pytest.approx(2.5)
    assert simulate.int_quantile(np.array([1, 0, 3]), 0.5) == 2.0
    assert simulate.int_quantile(np.array([2, 2]), 0.5) == 0.5


def test_merging_chunks_in_any_grouping_gives_identical_bits() -> None:
    rng = np.random.default_rng(3)
    job = _job(rng.normal(0, 0.03, 300), 5000, 30)
    whole = simulate.run_chunks(job, 0, job.n_chunks)
    parts = [simulate.run_chunks(job, i, i + 1) for i in range(job.n_chunks)]
    merged = parts[3].merge(parts[1]).merge(parts[4]).merge(parts[0]).merge(parts[2])
    a = json.dumps(simulate.finalize(whole, job.layout))
    b = json.dumps(simulate.finalize(merged, job.layout))
    assert a == b


def test_regime_generator_matches_reference_and_has_fat_tails_and_clustering() -> None:
    params = regime_gen.make_params(
        mu=np.array([0.001, -0.002]),
        sigma=np.array([0.01, 0.04]),
        transmat=np.array([[0.97, 0.03], [0.06, 0.94]]),
        start=np.array([0.5, 0.5]),
        df=np.array([5.0, 4.0]),
        alpha=0.08,
        beta=0.9,
    )
    layout = simulate.Layout("regime", 30, 1024, 30)
    r, _ = simulate.paths_kernel(
        params, shocks.ShockSpec().params(30), np.uint64(KEY), layout=layout
    )
    want, _ = ref.regime_returns(
        np.array([0.001, -0.002]),
        np.array([0.01, 0.04]),
        np.array([[0.97, 0.03], [0.06, 0.94]]),
        np.array([0.5, 0.5]),
        np.array([5.0, 4.0]),
        0.08,
        0.9,
        1024,
        30,
        KEY,
    )
    # float32 innovations: XLA's and NumPy's log/cos/expm1 differ by an ulp or two
    np.testing.assert_allclose(np.asarray(r), want, rtol=1e-5, atol=1e-7)
    # a long single-regime run: fat tails and volatility clustering
    calm = regime_gen.make_params(
        np.array([0.0]), np.array([0.02]), np.eye(1), np.ones(1), df=5.0, alpha=0.1, beta=0.85
    )
    lay = simulate.Layout("regime", 2000, 1024, 2000)
    x = np.asarray(
        simulate.paths_kernel(calm, shocks.ShockSpec().params(2000), np.uint64(1), layout=lay)[0]
    )
    z = (x - x.mean()) / x.std()
    assert np.mean(z**4) - 3 > 2.0  # t(5) alone has excess kurtosis 6; GARCH adds more
    assert abs(x.std() - 0.02) / 0.02 < 0.05  # unit-mean GARCH keeps the regime's sigma
    a = np.abs(x) - np.abs(x).mean()
    acf_abs = [np.sum(a[:, k:] * a[:, :-k]) / np.sum(a * a) for k in (1, 2, 5)]
    acf_raw = np.sum(x[:, 1:] * x[:, :-1]) / np.sum(x * x)
    assert min(acf_abs) > 0.05 and abs(acf_raw) < 0.01
    # switching regimes alone also clusters volatility (no GARCH)
    two = regime_gen.make_params(
        np.zeros(2),
        np.array([0.01, 0.05]),
        np.array([[0.98, 0.02], [0.02, 0.98]]),
        np.array([0.5, 0.5]),
        alpha=0.0,
        beta=0.0,
    )
    lay = simulate.Layout("regime", 1000, 1024, 1000, gaussian=True)
    y = np.asarray(
        simulate.paths_kernel(two, shocks.ShockSpec().params(1000), np.uint64(2), layout=lay)[0]
    )
    b = np.abs(y) - np.abs(y).mean()
    assert np.sum(b[:, 1:] * b[:, :-1]) / np.sum(b * b) > 0.1


def test_bailey_t_has_the_student_t_distribution() -> None:
    from scipy import stats

    u = (np.arange(20000) + 0.5) / 20000
    rng = np.random.default_rng(0)
    z = np.asarray(regime_gen.heavy_tail(u, rng.uniform(size=u.size), np.float64(4.0)))
    # unit variance t(4): compare with the scaled t(4) law
    ks = stats.kstest(z / np.sqrt(0.5), stats.t(4).cdf)
    assert ks.pvalue > 0.01


def test_es99_and_drawdowns_on_btc_agree_with_arch_within_monte_carlo_error() -> None:
    from arch.bootstrap import CircularBlockBootstrap

    src = _btc_returns()[-2000:]
    block = round(bootstrap.politis_white(src)[1])
    horizon, n = 365, 6000
    job = _job(src, n, horizon, block=float(block), seed=11)
    ours = simulate.finalize(simulate.run_chunks(job, 0, job.n_chunks), job.layout)
    # arch: one bootstrap index set per path, statistics in NumPy
    cbb = CircularBlockBootstrap(block, np.zeros(src.size), seed=5)
    rows = []
    for _ in range(n):
        idx = cbb.update_indices()
        reps = math.ceil(horizon / src.size)
        rows.append(src[np.tile(idx, reps)[:horizon]] if reps > 1 else src[idx[:horizon]])
    paths = np.array(rows)
    eq = np.cumprod(1 + paths, axis=1)
    term = eq[:, -1] - 1
    dd = np.minimum((eq / np.maximum.accumulate(np.maximum(eq, 1), axis=1) - 1).min(1), 0)

    def batch_se(stat: object, values: np.ndarray) -> float:
        groups = np.array_split(values, 20)
        return float(np.std([stat(g) for g in groups], ddof=1) / np.sqrt(20))  # type: ignore[operator]

    def es99(v: np.ndarray) -> float:
        q = np.quantile(v, 0.01)
        return float(v[v <= q].mean())

    se = batch_se(es99, term) * math.sqrt(2)  # two independent estimates
    assert abs(ours["horizon_return"]["es_99"] - es99(term)) < 4 * se
    for p in simulate.PERCENTILES:
        q = np.percentile(dd, p)
        se = batch_se(lambda g, p=p: np.percentile(g, p), dd) * math.sqrt(2)
        assert abs(ours["max_drawdown"][f"p{p}"] - q) < 4 * se, p


def test_horizon_fits_the_packed_counters() -> None:
    # time under water, the longest spell and the current spell share one int64 per path
    # (20 bits each): a longer horizon is refused before anything is compiled
    simulate.Layout("bootstrap", simulate.MAX_STEPS, 1024, 52)
    with pytest.raises(SpecError, match="horizon"):
        simulate.Layout("bootstrap", simulate.MAX_STEPS + 1, 1024, 52)
