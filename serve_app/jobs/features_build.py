"""Bulk feature materialisation on Ray Data.

The driver plans, per (coin, interval), which blocks of bars need features (all of them with
``--full``, else the tail); the work items are chunks of consecutive blocks; Ray Data maps them
over the cluster, each task reading its candles (plus look-back), computing with the JAX
kernels and writing its rows back. Run it as ``squall features build`` or as a Ray job::

    ray job submit --working-dir . -- python -m serve_app.jobs.features_build --full
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from serve_app.services.features import materialize_blocks, plan_blocks
from serve_app.settings import Settings, get_settings
from storage.engine import make_engine, session_factory

BLOCKS_PER_TASK = 32  # 32 x 2048 bars: a task of a few hundred ms or more


def _build_batch(batch: dict[str, np.ndarray], database_url: str) -> dict[str, np.ndarray]:
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    written = []
    try:
        for coin, interval, first, last in zip(
            batch["coin"], batch["interval"], batch["first"], batch["last"], strict=True
        ):
            blocks = list(range(int(first), int(last) + 1))
            written.append(materialize_blocks(sessions, str(coin), str(interval), blocks))
    finally:
        engine.dispose()
    return {**batch, "written": np.asarray(written, dtype=np.int64)}


def build(
    settings: Settings,
    coins: Sequence[str] | None = None,
    intervals: Sequence[str] | None = None,
    *,
    full: bool = False,
) -> dict[str, Any]:
    """Plan and run the build; returns a summary (rows written per series, seconds)."""
    import ray

    started = time.perf_counter()
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    items: list[dict[str, Any]] = []
    try:
        for coin in coins or settings.coins:
            for interval in intervals or settings.intervals:
                blocks = plan_blocks(sessions, coin, interval, full=full)
                for i in range(0, len(blocks), BLOCKS_PER_TASK):
                    chunk = blocks[i : i + BLOCKS_PER_TASK]
                    items.append(
                        {"coin": coin, "interval": interval, "first": chunk[0], "last": chunk[-1]}
                    )
    finally:
        engine.dispose()
    per_series: dict[str, int] = {}
    if items:
        if not ray.is_initialized():
            ray.init(address=settings.ray_address, include_dashboard=False)
        dataset = ray.data.from_items(items).map_batches(
            cast(Any, _build_batch),  # Ray's stubs do not model fn_kwargs
            batch_size=1,
            fn_kwargs={"database_url": settings.database_url},
            # SQLite has a single writer: one task at a time; Postgres takes them in parallel
            concurrency=1 if settings.database_url.startswith("sqlite") else None,
        )
        for row in dataset.iter_rows():
            key = f"{row['coin']}:{row['interval']}"
            per_series[key] = per_series.get(key, 0) + int(row["written"])
    return {
        "rows_written": sum(per_series.values()),
        "series": per_series,
        "tasks": len(items),
        "seconds": round(time.perf_counter() - started, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coin", action="append", help="repeatable; default: SQUALL_COINS")
    parser.add_argument("--interval", action="append", help="repeatable; default: all configured")
    parser.add_argument("--full", action="store_true", help="recompute everything")
    args = parser.parse_args(argv)
    summary = build(get_settings(), args.coin, args.interval, full=args.full)
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
