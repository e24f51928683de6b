"""Walk-forward on Ray: 10 folds on 1 worker (held to one core) vs 2 workers, in one run.

What is measured
----------------
``serve_app.services.walkforward.walkforward_series`` (the service's code path: candles and regime
labels ``ray.put`` once, one Ray task per fold, bounded ``ray.wait``) on ``--bars`` synthetic
1-hour candles cut into ``--folds`` rolling folds (train ``--train``, test ``--test``), each
fold choosing among a ``--fasts`` x ``--slows`` EMA-crossover grid by Sharpe:

* in-process (no Ray), for reference;
* Ray with ``num_cpus=1``: one task at a time, its worker pinned to one core
  (``sched_setaffinity`` in the worker setup hook) and XLA/BLAS single-threaded;
* Ray with ``num_cpus=2``: two tasks at a time, same single-threaded XLA.

Each Ray configuration is a fresh runtime; ``--warmup`` untimed passes first compile the
kernels in the workers (a fresh worker imports JAX and compiles: ~1 s), then the best of
``--repeats`` timed passes is kept. Parallel efficiency = T(1 worker) / (2 x T(2 workers));
target >= 0.80. The numbers of every configuration must be identical (checked).

Run (repository root)::

    python -m benchmarks.bench_walkforward
    python -m benchmarks.bench_walkforward --folds 10 --repeats 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

SINGLE_THREAD = {
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
TARGET = 0.80


def pin_one_core() -> None:
    """Worker setup hook of the 1-worker case: this process may use core 0 only."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def make_case(args: argparse.Namespace) -> tuple[Any, list[dict[str, Any]], Any, Any]:
    from compute.backtest.strategies import validate_strategy
    from serve_app.services.backtest import engine_config
    from serve_app.services.inputs import SeriesData
    from serve_app.services.requests.backtest import CostsAndSizing, FoldSpec

    n = args.train + args.folds * args.test
    rng = np.random.default_rng(7)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    ts = 1_700_000_000 // 3600 * 3600 + np.arange(n, dtype=np.int64) * 3600
    data = SeriesData("BTC", "1h", ts, open_, high, low, close, np.ones(n), None, 0, "bench", 0)
    grid = [
        validate_strategy("ema_cross", {"fast": f, "slow": s})
        for f in args.fasts
        for s in args.slows
        if f < s
    ]
    spec = FoldSpec(train_bars=args.train, test_bars=args.test)
    config = engine_config(CostsAndSizing(fee_bps=10), "1h")
    return data, grid, spec, config


def timed(
    case: tuple[Any, ...], use_ray: bool, warmup: int, repeats: int
) -> tuple[float, list[float], dict[str, Any]]:
    from serve_app.services.walkforward import walkforward_series

    data, grid, spec, config = case
    report: dict[str, Any] = {}
    for _ in range(warmup):
        walkforward_series(data, "ema_cross", grid, spec, config, use_ray=use_ray)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        report = walkforward_series(data, "ema_cross", grid, spec, config, use_ray=use_ray)
        times.append(time.perf_counter() - t0)
    return min(times), times, report


def with_ray(case: tuple[Any, ...], cpus: int, args: argparse.Namespace) -> tuple[Any, ...]:
    import ray

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runtime_env: dict[str, Any] = {"env_vars": {**SINGLE_THREAD, "PYTHONPATH": root}}
    if cpus == 1:
        runtime_env["worker_process_setup_hook"] = pin_one_core
    ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)
    try:
        return timed(case, True, args.warmup, args.repeats)
    finally:
        ray.shutdown()


def fingerprint(report: dict[str, Any]) -> list[Any]:
    return [(f["chosen_params"], f["oos_metrics"]) for f in report["folds"]]


def load() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--train", type=int, default=4000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--fasts", type=int, nargs="+", default=[5, 8, 12, 20, 30, 40])
    p.add_argument("--slows", type=int, nargs="+", default=[50, 80, 100, 150, 200, 300])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-inprocess", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    os.environ.update(SINGLE_THREAD)  # the driver too (in-process reference)

    case = make_case(args)
    n_grid = len(case[1])
    out: dict[str, Any] = {
        "bars": len(case[0]),
        "folds": args.folds,
        "grid": n_grid,
        "cpu_count": os.cpu_count(),
        "load_before": load(),
    }
    log = sys.stderr if args.json else sys.stdout
    print(
        f"walk-forward: {out['bars']} bars, {args.folds} folds (train {args.train}, test "
        f"{args.test}), {n_grid} parameter sets per fold",
        file=log,
        flush=True,
    )
    reports = {}
    if not args.skip_inprocess:
        best, times, reports["inprocess"] = timed(case, False, 1, args.repeats)
        out["inprocess_s"] = best
        print(f"  in-process        {best:8.3f} s  (all: {times})", file=log, flush=True)
    for cpus in (1, 2):
        best, times, reports[f"ray{cpus}"] = with_ray(case, cpus, args)
        out[f"ray_{cpus}_worker_s"] = best
        out[f"ray_{cpus}_worker_all_s"] = times
        print(f"  Ray, {cpus} worker(s)  {best:8.3f} s  (all: {[round(t, 3) for t in times]})",
              file=log, flush=True)  # fmt: skip
    out["speedup"] = out["ray_1_worker_s"] / out["ray_2_worker_s"]
    out["efficiency"] = out["speedup"] / 2.0
    prints = {k: fingerprint(v) for k, v in reports.items()}
    out["identical"] = all(v == prints["ray1"] for v in prints.values())
    out["load_after"] = load()
    out["pass"] = out["efficiency"] >= TARGET and out["identical"]
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(
            f"  speedup 2 vs 1 worker: {out['speedup']:.2f}x, parallel efficiency "
            f"{out['efficiency']:.0%} (target >= {TARGET:.0%}) -> "
            f"{'PASS' if out['pass'] else 'FAIL'}; results identical: {out['identical']}; "
            f"load average before/after {out['load_before']:.1f}/{out['load_after']:.1f} "
            f"on {out['cpu_count']} cores"
        )
    return 0 if out["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
