"""Soak: 1,000 backtest and simulation jobs in a row; memory must come back, the registry must
hold every run.

``python -m benchmarks.soak_runs [--jobs 1000] [--fanout-every 25]``

The API runs in this process (FastAPI's test client) on a local Ray runtime with two warm
compute workers, on a SQLite database holding real hourly BTC candles imported from
``../shared/data`` with ``squall import``. Jobs alternate a backtest (``POST /backtest/run``)
and a simulation (``POST /risk/simulate``); every ``--fanout-every``-th simulation is large
enough to be fanned out to the workers through the object store, the others run in process.
A warm-up (20 jobs on a second database) compiles the kernels first; the baseline is taken
after it. Measured before and after (after a ``gc.collect()``): this process's RSS, the warm
workers' RSS, and the Ray object store in use (plasma bytes and objects). Passes when each
memory figure ends within 10 % of its baseline (the object store: within 10 % or 1 MiB) and
the registry holds exactly ``--jobs`` runs; prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA_FILE = "binance_spot_BTCUSDT_1h_2023-06_2024-03.csv"
MIB = 1024 * 1024


def _db(folder: Path, name: str, data: Path) -> str:
    from serve_app.cli import main
    from serve_app.settings import Settings
    from storage.migrate import upgrade

    url = f"sqlite:///{folder / name}"
    upgrade(url)
    code = main(["import", str(data / DATA_FILE), "--quiet"], settings=Settings(database_url=url))
    if code:
        raise SystemExit(f"squall import failed ({code})")
    return url


def _rss(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


def _object_store() -> tuple[int, int]:
    """(bytes, objects) in Ray's object store, from Ray's memory summary."""
    import ray
    from ray._private.internal_api import memory_summary

    text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    used = re.search(r"Plasma memory usage (\d+) MiB, (\d+) objects", text)
    if used is None:
        raise RuntimeError(f"unexpected memory summary: {text[:300]}")
    return int(used.group(1)) * MIB, int(used.group(2))


def _worker_pids() -> list[int]:
    from serve_app.execution import workers

    return sorted(w["pid"] for w in workers.pool().status(wait_s=10) if "pid" in w)


def _snapshot() -> dict[str, Any]:
    gc.collect()
    store, objects = _object_store()
    pids = _worker_pids()
    return {
        "api_rss_mib": round(_rss(os.getpid()) / MIB, 1),
        "workers_rss_mib": round(sum(_rss(p) for p in pids) / MIB, 1),
        "workers": pids,
        "object_store_mib": round(store / MIB, 1),
        "object_store_objects": objects,
    }


BACKTEST = {"coin": "BTC", "interval": "1h", "strategy": "ema_cross"}


def _jobs(client: Any, n: int, fanout_every: int) -> dict[str, int]:
    counts = {"backtest": 0, "simulation": 0, "fanned_out": 0}
    for i in range(n):
        if i % 2 == 0:
            params = {"fast": 5 + i % 20, "slow": 50 + i % 7}
            r = client.post("/backtest/run", json={**BACKTEST, "params": params})
            kind = "backtest"
        else:
            k = i // 2
            big = fanout_every > 0 and k % fanout_every == 0
            body = {"backtest": BACKTEST, "horizon": 365 if big else 60, "seed": i,
                    "paths": 200_000 if big else 2_000}  # fmt: skip
            r = client.post("/risk/simulate", json=body)
            kind = "simulation"
            if big and r.status_code == 200 and r.json()["execution"]["ray"]:
                counts["fanned_out"] += 1
        if r.status_code != 200:
            raise SystemExit(f"job {i} ({kind}) answered {r.status_code}: {r.text[:300]}")
        counts[kind] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--fanout-every", type=int, default=25)
    parser.add_argument("--data", default=os.environ.get("SQUALL_SHARED_DATA"))
    args = parser.parse_args(argv)
    data = Path(args.data) if args.data else ROOT.parent / "shared" / "data"
    if not (data / DATA_FILE).is_file():
        print(f"needs {data / DATA_FILE} (set --data or SQUALL_SHARED_DATA)", file=sys.stderr)
        return 2
    os.environ.setdefault("SQUALL_WARM_UP", "false")

    import ray
    from fastapi.testclient import TestClient
    from sqlalchemy import func, select

    from serve_app.api import create_app
    from serve_app.execution import workers
    from serve_app.settings import Settings
    from storage.engine import make_engine, session_factory
    from storage.models import BacktestRun

    folder = Path(tempfile.mkdtemp(prefix="squall-soak-"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    def settings(url: str) -> Settings:
        return Settings(
            database_url=url, coins=["BTC"], intervals=["1h"], ingest_enabled=False,
            compute_workers_per_node=2, log_level="WARNING",
        )  # fmt: skip

    try:
        warm_url = _db(folder, "warm.db", data)
        with TestClient(create_app(settings(warm_url), configure_logs=False)) as client:
            _jobs(client, 20, 5)
        url = _db(folder, "soak.db", data)
        with TestClient(create_app(settings(url), configure_logs=False)) as client:
            baseline = _snapshot()
            started = time.perf_counter()
            counts = _jobs(client, args.jobs, args.fanout_every)
            wall = time.perf_counter() - started
            end = _snapshot()
        engine = make_engine(url)
        try:
            with session_factory(engine)() as session:
                runs = int(session.scalar(select(func.count()).select_from(BacktestRun)) or 0)
                by_kind = dict(
                    session.execute(
                        select(BacktestRun.kind, func.count()).group_by(BacktestRun.kind)
                    ).all()
                )
        finally:
            engine.dispose()
    finally:
        workers.stop_workers()
        ray.shutdown()

    def within(key: str, slack: float = 0.0) -> bool:
        return bool(end[key] <= baseline[key] * 1.10 + slack)

    checks = {
        "api_rss": within("api_rss_mib"),
        "workers_rss": within("workers_rss_mib"),
        "object_store": within("object_store_mib", 1.0),
        "registry": runs == args.jobs,
    }
    figures = {
        "jobs": args.jobs,
        "wall_s": round(wall, 1),
        "jobs_per_s": round(args.jobs / wall, 1),
        **{f"{k}": v for k, v in counts.items()},
        "registry_runs": runs,
        "registry_by_kind": by_kind,
        "baseline": baseline,
        "end": end,
        "checks": checks,
        "ok": all(checks.values()),
    }
    print(json.dumps(figures))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
