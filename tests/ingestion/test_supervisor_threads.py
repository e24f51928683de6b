"""The supervisor answers ``status()`` while every loop is stuck in its provider.

During an exchange outage each loop's thread sleeps through the provider's retry backoff. With
asyncio's default executor (CPUs + 4 threads: 6 on a 2-core machine) nine loops would fill it
and ``status()`` (its lag refresh runs in a thread too) would wait behind them, so ``/ready``
could not say which jobs stall. The supervisor sizes the executor to its loops plus spares.
Runs the supervisor object in a plain event loop (no Ray: the actor is this class).
"""

from __future__ import annotations

import asyncio
import threading
import time

from ingestion.config import IngestConfig
from ingestion.jobs import Job
from ingestion.supervisor import SPARE_THREADS, IngestionSupervisor


def test_status_answers_while_every_loop_blocks(database_url: str) -> None:
    config = IngestConfig(
        database_url=database_url,
        coins=("BTC", "ETH", "SOL"),
        intervals=("1m", "5m"),
        data_source="synthetic",
        backfill_days=0.01,
    )
    release = threading.Event()
    entered: set[str] = set()
    lock = threading.Lock()

    def stuck(job: Job) -> int:
        with lock:
            entered.add(job.stats.job)
        release.wait(30)  # a provider sleeping through its backoff
        return 0

    async def scenario() -> tuple[float, int, int]:
        sup = IngestionSupervisor(config, autostart=False)
        for job in sup.jobs:
            job.run_once = lambda job=job: stuck(job)  # type: ignore[method-assign]
        await sup.start()
        deadline = time.monotonic() + 30
        while len(entered) < len(sup.jobs):
            assert time.monotonic() < deadline, f"only {len(entered)} loops got a thread"
            await asyncio.sleep(0.05)
        t0 = time.monotonic()
        status = await asyncio.wait_for(sup.status(), timeout=5)
        took = time.monotonic() - t0
        release.set()
        await sup.stop(timeout_s=30)
        return took, len(status["jobs"]), len(sup.jobs)

    took, reported, jobs = asyncio.run(scenario())
    assert jobs == 3 * 2 + 3 > 2 + 4  # more loops than asyncio's default pool on 2 cores
    assert reported == jobs and took < 2.0  # well inside the API's 2 s status timeout
    assert SPARE_THREADS >= 1
