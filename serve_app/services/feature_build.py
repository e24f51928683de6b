"""Bulk feature materialisation on Ray Data, recorded as a run (kind ``features``).

The driver plans, per (coin, interval), which blocks of bars need features (all of them with
``full``, else the tail); the work items are chunks of consecutive blocks; Ray Data maps them
over the cluster, each task reading its candles (plus look-back), computing with the JAX
kernels and writing its rows back. Progress is counted in blocks (2,048 bars each) and the
rows written are the run's summary. ``squall features build`` and the Ray job
``python -m serve_app.jobs.features_build`` both call :func:`build`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

from serve_app.execution.runs import RunContext
from serve_app.services.features import materialize_blocks, plan_blocks
from serve_app.services.runs import fail_run, start_run
from serve_app.settings import Settings
from storage.engine import make_engine, session_factory, transaction
from storage.runs import RunRepository

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
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Plan, record and run the build; returns a summary (run id, rows written per series,
    seconds). ``on_progress(blocks done, blocks total)`` follows it (the CLI's bar)."""
    import ray

    started = time.perf_counter()
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    items: list[dict[str, Any]] = []
    request = {"coins": list(coins or settings.coins), "full": full,
               "intervals": list(intervals or settings.intervals)}  # fmt: skip
    try:
        for coin in coins or settings.coins:
            for interval in intervals or settings.intervals:
                blocks = plan_blocks(sessions, coin, interval, full=full)
                for i in range(0, len(blocks), BLOCKS_PER_TASK):
                    chunk = blocks[i : i + BLOCKS_PER_TASK]
                    items.append(
                        {"coin": coin, "interval": interval, "first": chunk[0], "last": chunk[-1]}
                    )
        total = sum(int(i["last"]) - int(i["first"]) + 1 for i in items)
        run_id, _ = start_run(
            sessions, "features", request, progress={"done": 0, "total": total, "unit": "blocks"}
        )
        per_series: dict[str, int] = {}
        done = 0
        ctx = RunContext(sessions, run_id, heartbeat_s=settings.run_heartbeat_s, unit="blocks")
        try:
            with ctx:
                if items:
                    if not ray.is_initialized():
                        ray.init(address=settings.ray_address, include_dashboard=False)
                    dataset = ray.data.from_items(items).map_batches(
                        cast(Any, _build_batch),  # Ray's stubs do not model fn_kwargs
                        batch_size=1,
                        fn_kwargs={"database_url": settings.database_url},
                        # SQLite has one writer: one task at a time; Postgres takes them all
                        concurrency=1 if settings.database_url.startswith("sqlite") else None,
                    )
                    for row in dataset.iter_rows():
                        ctx.check()
                        key = f"{row['coin']}:{row['interval']}"
                        per_series[key] = per_series.get(key, 0) + int(row["written"])
                        done += int(row["last"]) - int(row["first"]) + 1
                        ctx.progress(done, total)
                        if on_progress is not None:
                            on_progress(done, total)
        except BaseException as exc:
            fail_run(sessions, run_id, exc, started)
            raise
        summary = {
            "run_id": run_id,
            "rows_written": sum(per_series.values()),
            "series": per_series,
            "tasks": len(items),
            "seconds": round(time.perf_counter() - started, 3),
        }
        with transaction(sessions) as session:
            RunRepository(session).update(
                run_id,
                status="succeeded",
                summary={k: v for k, v in summary.items() if k != "run_id"},
                progress={"done": total, "total": total, "unit": "blocks"},
                duration_s=time.perf_counter() - started,
                finished_at=int(time.time()),
            )
        return summary
    finally:
        engine.dispose()
