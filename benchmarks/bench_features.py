"""Feature materialisation throughput into Postgres (and SQLite for comparison).

Seeds N one-minute candles (default 1,000,000) for one coin in a private Postgres schema,
then times a full build of the v1 feature set (27 columns: indicators, regimes, signals):
(1) in-process, block by block (``serve_app.services.features.materialize``), after one warm-up
call that compiles the kernels; (2) on Ray Data (``serve_app.services.feature_build.build``).
Prints feature rows per minute next to the target of 1,000,000 rows/min on this 2-core box.

    python -m benchmarks.bench_features [--rows N] [--skip-ray] [--skip-sqlite]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import text

from serve_app.services.features import BLOCK, materialize, materialize_blocks
from serve_app.settings import Settings
from storage.candles import CandleRepository
from storage.engine import make_engine, session_factory, transaction
from storage.migrate import upgrade

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TARGET_ROWS_PER_MIN = 1_000_000


def candles(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(42)
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.0008, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    wick = np.abs(rng.normal(0, 0.0004, (2, n)))
    return pd.DataFrame(
        {"coin": "BTC", "interval": "1m", "ts": 1_600_000_020 // 60 * 60 + 60 * np.arange(n),
         "open": open_, "high": np.maximum(open_, close) * (1 + wick[0]),
         "low": np.minimum(open_, close) * (1 - wick[1]), "close": close,
         "volume_base": rng.uniform(1, 50, n), "volume_quote": np.nan, "trade_count": np.nan,
         "source": "bench"}
    )  # fmt: skip


def run(url: str, n: int, use_ray: bool) -> list[tuple[str, float, int]]:
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with transaction(sessions) as s:
        CandleRepository(s).upsert(candles(n))
    results = []
    materialize_blocks(sessions, "BTC", "1m", [int(1_600_000_020 // 60 // BLOCK)])  # compile
    start = time.perf_counter()
    written = materialize(sessions, "BTC", "1m", full=True)
    results.append(("in-process", time.perf_counter() - start, written))
    if use_ray:
        import ray

        from serve_app.services.feature_build import build

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            build(Settings(database_url=url), ["BTC"], ["1m"], full=True)  # workers compile
            start = time.perf_counter()
            summary = build(Settings(database_url=url), ["BTC"], ["1m"], full=True)
            results.append(("ray-data", time.perf_counter() - start, summary["rows_written"]))
        finally:
            ray.shutdown()
    engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    rows: list[tuple[str, str, float, int]] = []
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(POSTGRES)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
        rows += [("postgres", *r) for r in run(url, args.rows, not args.skip_ray)]
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            rows += [("sqlite", *r) for r in run(url, args.rows, use_ray=False)]
    print(f"\n{'backend':9} {'mode':11} {'rows':>10} {'seconds':>8} {'rows/min':>12}  target")
    for backend, mode, seconds, written in rows:
        per_min = written / seconds * 60
        verdict = "PASS" if per_min >= TARGET_ROWS_PER_MIN else "FAIL"
        note = f">= {TARGET_ROWS_PER_MIN:,}/min: {verdict}" if backend == "postgres" else ""
        print(f"{backend:9} {mode:11} {written:>10,} {seconds:>8.2f} {per_min:>12,.0f}  {note}")


if __name__ == "__main__":
    main()
