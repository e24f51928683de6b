"""Stress simulation: squall's kernels vs arch, vectorised NumPy and hmmlearn, in one run.

What is measured (source: the last ``--source`` (2,000) real BTC daily simple returns from
``../shared/data``, or Student-t returns when the folder is absent; horizon ``--horizon`` 365):

(a) circular block bootstrap with every output (max-drawdown percentiles, VaR/ES_99, ruin,
    time under water, equity fan, terminal summary) for 100,000 and 1,000,000 paths, block
    length by Politis-White:
    * squall in this process (chunks one after another, one core) and through
      ``serve_app.execution.chunks`` as 2 Ray tasks (``ray.init(num_cpus=2)``); the first call of a
      new
      shape (compile) is timed apart;
    * ``arch.bootstrap.CircularBlockBootstrap`` (one ``update_indices`` per path) with the
      statistics in NumPy: timed on ``--arch-paths`` (2,000) paths and scaled linearly
      (marked *scaled*);
    * a vectorised NumPy implementation (block starts from ``Generator.integers``, a
      ``paths x horizon`` gather, ``cumprod``, ``maximum.accumulate``, ``np.quantile``), in
      chunks of 25,000 paths: timed on 100,000 paths, the 1M figure scaled (*scaled*) unless
      ``--numpy-full``;
(b) the regime-switching generator (2-state Student-t HMM fitted to the source, GARCH
    clustering) with every output, 100,000 paths, vs a NumPy time loop (``standard_t``,
    the same model and statistics, vectorised over paths, loop over time);
(c) end to end: ``POST /risk/simulate`` of 1,000,000 paths (the same source as a JSON list)
    through Ray Serve (``serve.run`` of ``serve_app.deployment.SquallAPI`` with the replica
    options of ``serve_config.yaml``, SQLite registry in a temporary folder): one warm-up
    request (workers import JAX and compile), then ``--requests`` (3) timed, best shown;
(d) HMM fit on ``--hmm-obs`` (5,000) real BTC 4h log returns, 2 states, ``--restarts`` (4)
    starts, tol 1e-4: ``compute.simulation.hmm.fit`` (warm; compile apart) vs hmmlearn
    ``GaussianHMM``
    fitted once per start (same tolerance and iteration cap).

Historical VaR/ES and correlation vs pandas belong to the risk engine's own benchmark.

Targets (PASS/FAIL): bootstrap >= 500 M path-steps/s (Ray, 1M paths), >= 50x arch, >= 6x
vectorised NumPy, compile <= 1 s per shape; end to end 1M paths < 3 s; regime generator >=
1.3x the NumPy loop; HMM fit no slower than hmmlearn. The box is shared: the load average
is printed before and after.

Run (repository root)::

    python -m benchmarks.bench_simulate
    python -m benchmarks.bench_simulate --quick        # 100k only, no Serve
    python -m benchmarks.bench_simulate --parts c      # only the end-to-end request
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
PCTS = (5, 25, 50, 75, 95, 99)
results: list[tuple[str, float, float, bool]] = []


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def target(name: str, value: float, goal: float, higher: bool = True) -> None:
    results.append((name, value, goal, value >= goal if higher else value <= goal))


def load_source(n: int) -> tuple[np.ndarray, str]:
    path = DATA / "binance_spot_BTCUSDT_1d_2017-2026.csv"
    if path.is_file():
        import pandas as pd

        close = pd.read_csv(path)["close"].to_numpy()[:-1]
        r = np.diff(close) / close[:-1]
        return r[-n:], f"BTC daily, last {n} returns"
    return np.random.default_rng(0).standard_t(4, n) * 0.03, "Student-t(4) x 0.03 (no data)"


# --------------------------------------------------------------------------- NumPy stats
def numpy_stats(eq: np.ndarray, fan_idx: np.ndarray, ruin: float) -> dict[str, np.ndarray]:
    """Per-path statistics of an equity matrix (P, H), all vectorised."""
    peak = np.maximum.accumulate(np.maximum(eq, 1.0), axis=1)
    under = eq < peak
    spell = np.zeros(eq.shape[0], np.int64)
    longest = np.zeros(eq.shape[0], np.int64)
    for t in range(eq.shape[1]):
        spell = np.where(under[:, t], spell + 1, 0)
        np.maximum(longest, spell, out=longest)
    return {
        "terminal": eq[:, -1] - 1,
        "mdd": np.minimum((eq / peak - 1).min(axis=1), 0),
        "uw": under.sum(axis=1),
        "longest": longest,
        "ruined": eq.min(axis=1) < ruin,
        "fan": eq[:, fan_idx].astype(np.float32),
    }


def numpy_reduce(parts: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    term = cat["terminal"]
    var = np.quantile(term, 0.01)
    return {
        "mdd": np.percentile(cat["mdd"], PCTS),
        "var_99": var,
        "es_99": term[term <= var].mean(),
        "ruin": cat["ruined"].mean(),
        "uw": (cat["uw"].mean(), np.median(cat["uw"]), np.percentile(cat["uw"], 95)),
        "longest": cat["longest"].max(),
        "fan": np.percentile(cat["fan"], (1, 5, 25, 50, 75, 95, 99), axis=0),
        "terminal": (term.mean(), term.std(ddof=1), np.percentile(term, (1, 5, 50, 95, 99))),
    }


def numpy_cbb(
    src: np.ndarray,
    block: int,
    paths: int,
    horizon: int,
    fan_idx: np.ndarray,
    seed: int,
    chunk: int = 25_000,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = src.size
    nb = -(-horizon // block)
    offs = np.arange(block)
    parts = []
    for start in range(0, paths, chunk):
        p = min(chunk, paths - start)
        starts = rng.integers(0, n, (p, nb))
        idx = ((starts[:, :, None] + offs) % n).reshape(p, -1)[:, :horizon]
        eq = np.cumprod(1 + src[idx], axis=1)
        parts.append(numpy_stats(eq, fan_idx, 0.5))
    return numpy_reduce(parts)


def arch_cbb(
    src: np.ndarray, block: int, paths: int, horizon: int, fan_idx: np.ndarray, seed: int
) -> dict[str, Any]:
    from arch.bootstrap import CircularBlockBootstrap

    cbb = CircularBlockBootstrap(block, src, seed=seed)
    rows = np.empty((paths, horizon))
    reps = -(-horizon // src.size)
    for i in range(paths):
        idx = cbb.update_indices()
        rows[i] = src[np.tile(idx, reps)[:horizon]]
    return numpy_reduce([numpy_stats(np.cumprod(1 + rows, axis=1), fan_idx, 0.5)])


# ------------------------------------------------------------------------- (a) bootstrap
def bench_bootstrap(src: np.ndarray, args: argparse.Namespace, sizes: list[int]) -> None:
    from compute.simulation import bootstrap, shocks
    from compute.simulation import paths as simulate
    from serve_app.execution import chunks as fanout

    block = max(1, round(bootstrap.politis_white(src)[1]))
    log(f"block length (Politis-White, circular): {block}")
    spec = shocks.ShockSpec()
    print(
        f"\n(a) circular block bootstrap, {src.size} returns, horizon {args.horizon}, "
        f"block {block}, all outputs (path-steps/s = paths x horizon / wall s)"
    )
    print(f"{'paths':>10} {'implementation':<34} {'seconds':>9} {'M path-steps/s':>15}")

    def job(paths: int) -> simulate.Job:
        layout = simulate.Layout(
            "bootstrap",
            args.horizon,
            simulate.chunk_size(paths),
            simulate.fan_spacing(args.horizon, 52),
        )
        return simulate.Job(
            layout,
            bootstrap.make_params(src, float(block)),
            spec.params(args.horizon),
            0.5,
            1,
            paths,
        )

    probe = job(sizes[0])
    from compute.simulation import prng

    prng.chunk_keys(1, 0, 1)  # JAX start-up and the key function: not the kernel's compile
    t0 = time.perf_counter()
    fanout.run_local(simulate.Job(*probe[:5], probe.layout.chunk))  # one chunk: compile
    first = time.perf_counter() - t0
    one_chunk = best_of(lambda: fanout.run_local(simulate.Job(*probe[:5], probe.layout.chunk)), 3)
    compile_s = first - one_chunk
    print(f"{'':>10} compile of one shape: {compile_s:.2f} s (first call {first:.2f} s)")
    target("bootstrap compile per shape (s)", compile_s, 1.0, higher=False)
    fan_idx = np.array(probe.layout.fan_steps) - 1
    arch_cbb(src, block, 50, args.horizon, fan_idx, 3)  # warm arch and NumPy up (imports)
    numpy_cbb(src, block, 1000, args.horizon, fan_idx, 4)
    rate: dict[str, float] = {}
    import ray

    for paths in sizes:
        steps = paths * args.horizon
        j = job(paths)
        local = best_of(lambda j=j: simulate.finalize(fanout.run_local(j), j.layout), 2)
        fanout.run(j, tasks=2)  # warm the workers for this shape
        dist = best_of(lambda j=j: simulate.finalize(fanout.run(j, tasks=2), j.layout), 2)
        a_paths = min(args.arch_paths, paths)
        a = best_of(lambda n=a_paths: arch_cbb(src, block, n, args.horizon, fan_idx, 3), 1)
        arch_s = a * paths / a_paths
        np_paths = paths if (args.numpy_full or paths <= 100_000) else 100_000
        b = best_of(lambda n=np_paths: numpy_cbb(src, block, n, args.horizon, fan_idx, 4), 1)
        np_s = b * paths / np_paths
        for name, s in (
            ("squall, 1 process (local chunks)", local),
            ("squall, Ray fan-out, 2 tasks", dist),
            (f"arch CBB + NumPy ({'scaled' if a_paths < paths else 'full'})", arch_s),
            (f"vectorised NumPy ({'scaled' if np_paths < paths else 'full'})", np_s),
        ):
            print(f"{paths:>10,} {name:<34} {s:>9.3f} {steps / s / 1e6:>15.0f}")
        rate[f"{paths}"] = steps / dist
        print(
            f"{'':>10} ratios: squall(Ray) / arch = {arch_s / dist:.0f}x, / NumPy = "
            f"{np_s / dist:.1f}x; squall(1 process) / NumPy = {np_s / local:.1f}x"
        )
        if paths == sizes[-1]:
            target(f"bootstrap {paths:,} paths (M path-steps/s)", steps / dist / 1e6, 500)
            target("bootstrap vs arch (x)", arch_s / dist, 50)
            target("bootstrap vs vectorised NumPy (x)", np_s / dist, 6)
    del ray


# ------------------------------------------------------------------- (b) regime generator
def numpy_regime(
    mu: np.ndarray,
    sigma: np.ndarray,
    trans: np.ndarray,
    start: np.ndarray,
    df: np.ndarray,
    alpha: float,
    beta: float,
    paths: int,
    horizon: int,
    fan_idx: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    """The same model as compute.simulation.markov, a NumPy loop over time (vectorised over
    paths)."""
    rng = np.random.default_rng(seed)
    cum = np.cumsum(trans, axis=1)
    state = np.searchsorted(np.cumsum(start), rng.random(paths))
    g = np.ones(paths)
    z2 = np.ones(paths)
    eq = np.ones(paths)
    peak = np.ones(paths)
    mdd = np.zeros(paths)
    low = np.ones(paths)
    uw = np.zeros(paths, np.int64)
    spell = np.zeros(paths, np.int64)
    longest = np.zeros(paths, np.int64)
    fan = np.empty((paths, len(fan_idx)), np.float32)
    k = 0
    for t in range(horizon):
        if t:
            u = rng.random(paths)
            state = (u[:, None] > cum[state][:, :-1]).sum(axis=1)
        g = (1 - alpha - beta) + alpha * z2 + beta * g
        nu = df[state]
        z = rng.standard_t(nu) * np.sqrt((nu - 2) / nu)
        eq = eq * (1 + np.maximum(mu[state] + sigma[state] * np.sqrt(g) * z, -1))
        z2 = z * z
        np.maximum(peak, eq, out=peak)
        under = eq < peak
        uw += under
        spell = np.where(under, spell + 1, 0)
        np.maximum(longest, spell, out=longest)
        np.minimum(mdd, eq / peak - 1, out=mdd)
        np.minimum(low, eq, out=low)
        if k < len(fan_idx) and t == fan_idx[k]:
            fan[:, k] = eq
            k += 1
    return numpy_reduce(
        [
            {
                "terminal": eq - 1,
                "mdd": mdd,
                "uw": uw,
                "longest": longest,
                "ruined": low < 0.5,
                "fan": fan,
            }
        ]
    )


def bench_regime(src: np.ndarray, args: argparse.Namespace) -> None:
    from compute.simulation import hmm, shocks
    from compute.simulation import markov as regime_gen
    from compute.simulation import paths as simulate
    from serve_app.execution import chunks as fanout

    fit = hmm.fit(src, 2, emission="student_t", restarts=2)
    params = regime_gen.make_params(
        fit.mu, fit.volatility, fit.trans, fit.last_probs, df=fit.df, alpha=0.05, beta=0.9
    )
    paths = args.regime_paths
    layout = simulate.Layout(
        "regime", args.horizon, simulate.chunk_size(paths), simulate.fan_spacing(args.horizon, 52)
    )
    job = simulate.Job(layout, params, shocks.ShockSpec().params(args.horizon), 0.5, 1, paths)
    fanout.run_local(simulate.Job(*job[:5], layout.chunk))
    ours = best_of(lambda: simulate.finalize(fanout.run_local(job), layout), 2)
    fan_idx = np.array(layout.fan_steps) - 1
    base = best_of(
        lambda: numpy_regime(
            fit.mu,
            fit.volatility,
            fit.trans,
            fit.last_probs,
            fit.df,
            0.05,
            0.9,
            paths,
            args.horizon,
            fan_idx,
            5,
        ),
        1,
    )
    steps = paths * args.horizon
    print(
        f"\n(b) regime-switching generator (2-state Student-t HMM, GARCH), {paths:,} paths x "
        f"{args.horizon}, all outputs, one process"
    )
    print(f"{'squall (Bailey t, counter PRNG)':<40} {ours:>8.3f} s {steps / ours / 1e6:>8.1f} M/s")
    print(f"{'NumPy time loop (standard_t)':<40} {base:>8.3f} s {steps / base / 1e6:>8.1f} M/s")
    print(f"ratio {base / ours:.1f}x")
    target("regime generator vs NumPy loop (x)", base / ours, 1.3)


# ------------------------------------------------------------------------ (c) end to end
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_serve(src: np.ndarray, args: argparse.Namespace, block: int) -> None:
    import httpx
    import ray
    import yaml
    from ray import serve

    from serve_app.deployment import SquallAPI
    from storage.migrate import upgrade

    conf = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    dep = conf["applications"][0]["deployments"][0]
    tmp = tempfile.mkdtemp(prefix="bench_sim_")
    url = f"sqlite:///{tmp}/squall.db"
    upgrade(url)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = {"database_url": url, "log_level": "WARNING", "ingest_enabled": False}
    app = SquallAPI.options(
        num_replicas=1,
        ray_actor_options=dep["ray_actor_options"],
        max_ongoing_requests=dep["max_ongoing_requests"],
    ).bind(settings)
    serve.run(app, name="bench-sim", route_prefix="/", blocking=False)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/live", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("Serve did not come up in 120 s")
        time.sleep(0.5)
    body = {
        "returns": src.tolist(),
        "horizon": args.horizon,
        "paths": args.serve_paths,
        "seed": 1,
        "bootstrap": {"block_length": block},
        "mode": "sync",
    }
    data = json.dumps(body).encode()
    with httpx.Client(timeout=300) as client:
        t0 = time.perf_counter()
        warm = client.post(
            f"{base}/risk/simulate", content=data, headers={"content-type": "application/json"}
        )
        log(f"warm-up request: {warm.status_code} in {time.perf_counter() - t0:.2f} s")
        warm.raise_for_status()
        times, timings = [], {}
        for _ in range(args.requests):
            t0 = time.perf_counter()
            r = client.post(
                f"{base}/risk/simulate", content=data, headers={"content-type": "application/json"}
            )
            times.append(time.perf_counter() - t0)
            r.raise_for_status()
            timings = r.json()["timings"]
    best = min(times)
    print(
        f"\n(c) POST /risk/simulate, {args.serve_paths:,} paths x {args.horizon} through Ray "
        f"Serve (replica {dep['ray_actor_options']}, ray.init(num_cpus=2))"
    )
    print(
        f"requests: {', '.join(f'{t:.2f}' for t in times)} s; best {best:.2f} s; server "
        f"phases of the last: " + ", ".join(f"{k} {v:.3g}" for k, v in timings.items())
    )
    target(f"end to end {args.serve_paths:,} paths over HTTP (s)", best, 3.0, higher=False)
    serve.shutdown()
    del ray


# ----------------------------------------------------------------------------- (d) HMM
def bench_hmm(args: argparse.Namespace) -> None:
    import warnings

    from hmmlearn.hmm import GaussianHMM

    from compute.simulation import hmm

    path = DATA / "binance_spot_BTCUSDT_4h_2017-2026.csv"
    if path.is_file():
        import pandas as pd

        x = np.diff(np.log(pd.read_csv(path)["close"].to_numpy()[:-1]))[-args.hmm_obs :]
    else:
        x = np.random.default_rng(1).standard_t(4, args.hmm_obs) * 0.01
    t0 = time.perf_counter()
    ours_fit = hmm.fit(x, 2, restarts=args.restarts, tol=1e-4, max_iter=200)
    first = time.perf_counter() - t0
    ours = best_of(lambda: hmm.fit(x, 2, restarts=args.restarts, tol=1e-4, max_iter=200), 3)
    best_ll = -math.inf

    def hmmlearn_fit() -> None:
        nonlocal best_ll
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for s in range(args.restarts):
                m = GaussianHMM(
                    2, covariance_type="diag", n_iter=200, tol=1e-4, min_covar=1e-12, random_state=s
                ).fit(x[:, None])
                best_ll = max(best_ll, m.score(x[:, None]))

    theirs = best_of(hmmlearn_fit, 2)
    print(
        f"\n(d) HMM fit, {x.size:,} BTC 4h log returns, 2 Gaussian states, {args.restarts} "
        f"starts, tol 1e-4"
    )
    print(
        f"squall  {ours:.3f} s warm (first call with compile {first:.2f} s), loglik "
        f"{ours_fit.loglik:.3f}, {ours_fit.n_iter} iterations"
    )
    print(f"hmmlearn {theirs:.3f} s ({args.restarts} fits), best loglik {best_ll:.3f}")
    print(f"ratio {theirs / ours:.1f}x")
    target("HMM fit vs hmmlearn (x, warm)", theirs / ours, 1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--source", type=int, default=2000)
    ap.add_argument("--horizon", type=int, default=365)
    ap.add_argument("--arch-paths", type=int, default=2000)
    ap.add_argument("--numpy-full", action="store_true")
    ap.add_argument("--regime-paths", type=int, default=100_000)
    ap.add_argument("--serve-paths", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--hmm-obs", type=int, default=5000)
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="100k paths only, no Serve")
    ap.add_argument("--parts", default="a,b,c,d", help="which of (a)-(d) to run, e.g. c,d")
    args = ap.parse_args()
    import ray

    from compute.simulation import bootstrap

    src, what = load_source(args.source)
    print(f"source: {what}; load average before: {os.getloadavg()}")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    parts = set(args.parts.split(","))
    try:
        block = max(1, round(bootstrap.politis_white(src)[1]))
        if "a" in parts:
            bench_bootstrap(src, args, [100_000] if args.quick else [100_000, 1_000_000])
        if "b" in parts:
            bench_regime(src, args)
        if "c" in parts and not args.quick:
            bench_serve(src, args, block)
        if "d" in parts:
            bench_hmm(args)
    finally:
        ray.shutdown()
    print(f"\nload average after: {os.getloadavg()}")
    print(f"\n{'target':<48} {'value':>10} {'goal':>8}  result")
    for name, value, goal, ok in results:
        print(f"{name:<48} {value:>10.2f} {goal:>8.2f}  {'PASS' if ok else 'FAIL'}")
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
