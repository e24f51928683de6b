"""Overload over real HTTP: ten times the admitted concurrency of ``POST /risk/simulate`` at
once against the app under uvicorn on loopback. Every answer is a 200 or a 503 ``busy`` with
``Retry-After`` (no 5xx of another kind, no unbounded queue), the server never computes more
than its slots at once, every admitted job finishes and is recorded, and the process's memory
stays under a stated bound."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from serve_app.settings import Settings
from storage.engine import make_engine, session_factory
from storage.migrate import upgrade
from storage.runs import RunFilter, RunRepository
from tests.serve_app.live_server import uvicorn_app

SLOTS, QUEUE = 2, 2
CLIENTS = 10 * SLOTS
RSS_BOUND_MB = 256  # growth of the process's peak RSS over its warm baseline
RETURNS = [float(x) for x in np.random.default_rng(5).standard_t(4, 500) * 0.02]
BODY = {"returns": RETURNS, "horizon": 250, "paths": 20_000, "seed": 1}


def test_ten_times_the_admitted_concurrency_gets_200_or_503(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    url = f"sqlite:///{tmp_path / 'squall.db'}"
    upgrade(url)
    settings = Settings(
        database_url=url,
        coins=["BTC"],
        intervals=["1d"],
        log_level="WARNING",
        max_concurrent_jobs=SLOTS,
        job_queue_size=QUEUE,
        job_queue_timeout_s=60,
    )
    me = psutil.Process()
    with uvicorn_app(settings) as base, httpx.Client(base_url=base, timeout=120) as warm:
        first = warm.post("/risk/simulate", json=BODY)  # compiles the kernel once
        assert first.status_code == 200, first.text
        start_s = time.monotonic()
        warm.post("/risk/simulate", json=BODY).raise_for_status()
        one_job_s = time.monotonic() - start_s
        baseline = me.memory_info().rss
        peak = baseline
        sampling = True

        def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, me.memory_info().rss)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        gate = threading.Barrier(CLIENTS)

        def call(_: int) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=120) as client:
                gate.wait()
                return client.post("/risk/simulate", json=BODY)

        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(call, range(CLIENTS)))
        wall_s = time.monotonic() - started
        sampling = False
        sampler.join()
        after = me.memory_info().rss
        statuses = Counter(r.status_code for r in answers)
        print(
            f"\noverload: {CLIENTS} clients, {SLOTS} slots + {QUEUE} queued; answers "
            f"{dict(statuses)}; one job {one_job_s:.2f}s, all {wall_s:.2f}s; RSS baseline "
            f"{baseline / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB, after "
            f"{after / 2**20:.0f} MiB"
        )
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] >= SLOTS + QUEUE and statuses[503] >= 1, statuses
        for r in answers:
            if r.status_code == 503:
                body: dict[str, Any] = r.json()
                assert body["error"] == "busy" and int(r.headers["retry-after"]) >= 1
                assert body["retry_after_s"] == int(r.headers["retry-after"])
            else:
                assert r.json()["status"] == "succeeded" and r.json()["result"]["paths"] == 20_000
        assert (peak - baseline) / 2**20 < RSS_BOUND_MB
    # every admitted job finished and was recorded: two warm-up runs and one per 200
    engine = make_engine(url)
    with session_factory(engine)() as session:
        repo = RunRepository(session)
        assert repo.count(RunFilter(kind="simulation", status="succeeded")) == 2 + statuses[200]
        assert repo.count(RunFilter(status="running")) == 0
        assert repo.count(RunFilter(status="queued")) == 0
    engine.dispose()


def test_admission_never_runs_more_than_its_slots() -> None:
    """The gate itself: with 2 slots and 3 waiting places, 12 callers at once: 5 admitted in
    turn (never more than 2 at once), 7 refused at once with BusyError."""
    import asyncio

    from serve_app.api.guards import Admission
    from storage.errors import BusyError

    gate = Admission(2, 3, timeout_s=10)
    inside = 0
    most = 0
    outcomes: list[str] = []

    async def job() -> None:
        nonlocal inside, most
        try:
            await gate.acquire()
        except BusyError:
            outcomes.append("busy")
            return
        try:
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.05)
            inside -= 1
            outcomes.append("done")
        finally:
            gate.release()

    async def main() -> None:
        await asyncio.gather(*(job() for _ in range(12)))

    asyncio.run(main())
    assert Counter(outcomes) == {"done": 5, "busy": 7}
    assert most == 2 and gate.active == 0 and gate.waiting == 0 and gate.peak == 2
