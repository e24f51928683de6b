"""Compile the common kernels before users ask for them (in the background, at start-up).

A replica warms what its routes run in-process: the backtest engine with each built-in
strategy, the indicator pipeline for the README's items, regime labels and a small
simulation, on series of the lengths the database holds (the latest ``default_candle_limit``
rows and whole stored series, rounded to their compiled bucket). A worker warms what the
fan-outs send it: simulation chunks of the default layouts and walk-forward folds.

The kernels are compiled on synthetic data of the same shapes (results are thrown away).
With the shared compilation cache (``Settings.jax_cache_dir``) a later process loads them
from disk instead. Failures are logged, never raised: a warm-up only saves a first caller
its compile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

log = logging.getLogger("squall.warmup")

SIM_PATHS = (10_000, 20_000, 1_000_000)  # default, interactive, large (chunk 2048/4096/8192)
SIM_HORIZON = 365
SIM_SOURCES = (1_000, 3_000)  # source returns (the compiled bucket covers ~6 % around them)
INDICATOR_SPECS = ("ema:20", "ema:20,rsi:14,atr:14", "sma:20,ema:50,rsi:14,macd:12:26:9")


def _series(n: int, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0, 0.01, n)) * close
    return {
        "ts": np.arange(n, dtype=np.int64) * 86_400,
        "open": open_,
        "high": np.maximum(open_, close) + spread,
        "low": np.minimum(open_, close) - spread,
        "close": close,
        "volume": np.abs(rng.normal(1e3, 1e2, n)),
    }


def warm_backtests(lengths: Iterable[int]) -> None:
    from compute.backtest import strategies
    from compute.backtest.engine import BacktestConfig, run_backtest

    for n in sorted(set(lengths)):
        s = _series(n)
        for name in strategies.STRATEGIES:
            params = strategies.validate_strategy(name, {})
            if strategies.required_bars(name, params) > n:
                continue
            target = strategies.positions(name, params, s["open"], s["high"], s["low"], s["close"])
            run_backtest(
                s["ts"], s["open"], s["high"], s["low"], s["close"], target, BacktestConfig()
            )


def warm_indicators(lengths: Iterable[int]) -> None:
    from compute.indicators.pipeline import compute_indicators
    from compute.indicators.registry import parse_indicator_spec

    for n in sorted(set(lengths)):
        s = _series(n)
        for spec in INDICATOR_SPECS:
            requests = parse_indicator_spec(spec)
            compute_indicators(
                requests, s["open"], s["high"], s["low"], s["close"], s["volume"], s["ts"]
            )


def warm_simulations(sources: Iterable[int], paths: Iterable[int], *, chunks: int) -> None:
    """Prepare a default bootstrap simulation per source length and run ``chunks`` chunks of
    each path count's layout (a layout compiles once, whatever the number of chunks)."""
    from compute.simulation.paths import run_chunks
    from serve_app.services import simulation
    from serve_app.services.requests.simulation import SimulateRequest
    from serve_app.settings import Settings

    settings = Settings()
    rng = np.random.default_rng(11)
    for n in sorted(set(sources)):
        returns = rng.normal(0.0005, 0.02, n).tolist()
        for p in paths:
            req = SimulateRequest(returns=returns, horizon=SIM_HORIZON, paths=p, seed=1)
            prep = simulation.prepare(None, settings, req)  # type: ignore[arg-type]
            run_chunks(prep.job, 0, min(chunks, prep.job.n_chunks))


def warm_up_worker() -> float:
    """What a compute worker runs at start: simulation chunk layouts. Returns seconds."""
    t0 = time.perf_counter()
    _step("simulations", warm_simulations, SIM_SOURCES, SIM_PATHS, chunks=1)
    return time.perf_counter() - t0


MAX_LENGTHS = 3  # compiled lengths a replica warms (each costs every kernel once)


def replica_lengths(sessions: Any, settings: Any) -> list[int]:
    """Series lengths worth warming, one per compiled bucket: the default window, then the
    longest stored series of the configured coins and intervals (what a whole-history
    backtest or simulation reads), at most ``MAX_LENGTHS``."""
    from compute.core.inputs import bucket
    from storage.candles import CandleRepository

    counts: list[int] = []
    try:
        with sessions() as session:
            counts = sorted(
                (
                    cov.count
                    for cov in CandleRepository(session).coverage()
                    if cov.coin in settings.coins and 100 <= cov.count <= 100_000
                ),
                reverse=True,
            )
    except Exception as exc:  # database not there yet: warm the default window only
        log.info("warm-up could not read the stored series: %s", exc)
    chosen: dict[int, int] = {bucket(settings.default_candle_limit): settings.default_candle_limit}
    for n in counts:
        if len(chosen) >= MAX_LENGTHS:
            break
        chosen.setdefault(bucket(n), n)
    return sorted(chosen.values())


def warm_up_replica(sessions: Any, settings: Any) -> float:
    """What an API replica runs at start (see the module doc). Returns seconds."""
    t0 = time.perf_counter()
    lengths = replica_lengths(sessions, settings)
    _step("backtests", warm_backtests, lengths)
    _step("indicators", warm_indicators, [n + 60 for n in lengths])
    _step("simulations", warm_simulations, [max(31, n - 1) for n in lengths[:3]], (20_000,),
          chunks=1)  # fmt: skip
    return time.perf_counter() - t0


def _step(name: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    t0 = time.perf_counter()
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        log.warning("warm-up of %s failed: %s", name, exc)
        return
    log.info("warmed %s in %.2f s", name, time.perf_counter() - t0)


STATE: dict[str, Any] = {"state": "not started", "seconds": None}


def run_warm_up(fn: Any, cache_dir: str | None, *args: Any) -> None:
    """Run ``fn`` at a low priority, one warm-up at a time per machine (a lock file in the
    compilation cache: the second process then loads what the first compiled)."""
    import contextlib
    import fcntl
    import os
    from pathlib import Path

    with contextlib.suppress(OSError, AttributeError):  # Linux: per-thread nice
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    STATE.update(state="waiting", started_at=time.time())
    lock = None
    try:
        if cache_dir:
            path = Path(cache_dir).expanduser().resolve()
            path.mkdir(parents=True, exist_ok=True)
            lock = (path / ".warm-up.lock").open("w")
            fcntl.flock(lock, fcntl.LOCK_EX)
        STATE["state"] = "running"
        seconds = fn(*args)
        STATE.update(state="done", seconds=round(float(seconds), 2))
    except Exception as exc:  # a failed warm-up only costs a first caller its compile
        STATE.update(state="failed", error=str(exc)[:300])
        log.warning("warm-up failed: %s", exc)
    finally:
        if lock is not None:
            lock.close()


def start_in_background(fn: Any, *args: Any, cache_dir: str | None = None) -> threading.Thread:
    """Run a warm-up on a daemon thread (start-up and readiness never wait for it)."""
    thread = threading.Thread(
        target=run_warm_up, args=(fn, cache_dir, *args), name="warm-up", daemon=True
    )
    thread.start()
    return thread
