"""The supervisor as a real Ray actor, on SQLite and Postgres, with the synthetic market.

Expected candle counts come from the wall clock and the interval arithmetic, not from squall:
after catching up, a series holds every closed bar from the backfill start to now.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray

from ingestion.config import IngestConfig
from ingestion.supervisor import get_or_create
from storage.candles import CandleRepository, candles_to_frame
from storage.engine import make_engine, session_factory, transaction

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="squall-tests")
    yield
    ray.shutdown()


def config(database_url: str, **overrides: Any) -> IngestConfig:
    base: dict[str, Any] = {
        "database_url": database_url,
        "coins": ("BTC",),
        "intervals": ("1h", "1d"),
        "data_source": "synthetic",
        "backfill_days": 4.0,
        "derivatives_period_s": 5.0,
    }
    return IngestConfig(**{**base, **overrides})


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def closed_bars(step: int, backfill_s: int, now: float) -> list[int]:
    """Open times of every closed bar from the backfill start up to ``now``."""
    first = (int(now) - backfill_s) // step * step
    last = (int(now) // step - 1) * step
    return list(range(first, last + 1, step))


def stored_ts(database_url: str, coin: str, interval: str) -> list[int]:
    engine = make_engine(database_url)
    try:
        with session_factory(engine)() as s:
            return CandleRepository(s).frame(coin, interval)["ts"].tolist()
    finally:
        engine.dispose()


def unique(prefix: str) -> str:
    """A fresh actor name: ``ray.kill`` releases a name asynchronously, so the next test
    (the other database) must not get-or-create the previous test's dying actor."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def stop(actor: Any) -> None:
    ray.get(actor.stop.remote(), timeout=60)
    ray.kill(actor, no_restart=True)


def test_catches_up_reports_and_stops(ray_runtime: None, database_url: str) -> None:
    cfg = config(database_url)
    name = unique("sup-catchup")
    actor = get_or_create(cfg, name=name)
    try:
        assert get_or_create(cfg, name=name)._actor_id == actor._actor_id  # one only
        expected = closed_bars(3600, 4 * 86400, time.time())
        wait_for(
            lambda: stored_ts(database_url, "BTC", "1h")[-1:] >= expected[-1:],
            60,
            "the 1h backfill",
        )
        assert stored_ts(database_url, "BTC", "1h")[: len(expected)] == expected
        # The jobs run concurrently (one writer on SQLite): the daily series may land later.
        daily = closed_bars(86400, 4 * 86400, time.time())
        wait_for(
            lambda: stored_ts(database_url, "BTC", "1d")[-1:] >= daily[-1:],
            60,
            "the 1d backfill",
        )
        assert stored_ts(database_url, "BTC", "1d")[: len(daily)] == daily
        status = ray.get(actor.status.remote(), timeout=30)
        assert status["running"] and status["role"] == "writer" and status["stalled"] == []
        jobs = {j["job"]: j for j in status["jobs"]}
        assert set(jobs) == {"candles:BTC:1h", "candles:BTC:1d", "derivatives:BTC"}
        hourly = jobs["candles:BTC:1h"]
        assert hourly["consecutive_failures"] == 0 and hourly["written_total"] >= len(expected)
        assert 0 <= hourly["age_s"] <= hourly["allowed_age_s"] == 3600 + 90
        wait_for(
            lambda: ray.get(actor.status.remote())["jobs"][-1]["runs"] >= 1,
            30,
            "the derivatives job",
        )
        stopped = ray.get(actor.stop.remote(), timeout=60)
        assert not stopped["running"] and stopped["role"] == "stopped"
    finally:
        ray.kill(actor, no_restart=True)


def test_a_series_of_another_source_is_a_job_error_not_a_crash(
    ray_runtime: None, database_url: str
) -> None:
    """BTC 1d holds imported file rows: its synthetic loop is refused, reported in the job's
    status and gap check, and retried; the other loops carry on and nothing is written."""
    day = (int(time.time()) // 86400 - 3) * 86400
    row = {
        "coin": "BTC",
        "interval": "1d",
        "open": 1.0,
        "high": 2.0,
        "low": 0.5,
        "close": 1.5,
        "volume_base": 3.0,
        "volume_quote": None,
        "trade_count": None,
        "source": "file:ohlcv6",
    }
    engine = make_engine(database_url)
    try:
        with transaction(session_factory(engine)) as s:
            CandleRepository(s).upsert(candles_to_frame([{**row, "ts": day}]))
    finally:
        engine.dispose()
    actor = get_or_create(config(database_url), name=unique("sup-source"))
    try:
        expected = closed_bars(3600, 4 * 86400, time.time())
        wait_for(
            lambda: stored_ts(database_url, "BTC", "1h")[-1:] >= expected[-1:],
            60,
            "the 1h backfill",
        )

        def daily_job() -> dict[str, Any]:
            jobs = ray.get(actor.status.remote(), timeout=30)["jobs"]
            return next(j for j in jobs if j["job"] == "candles:BTC:1d")

        wait_for(lambda: daily_job()["consecutive_failures"] >= 2, 60, "two refused runs")
        status = ray.get(actor.status.remote(), timeout=30)
        assert status["running"] and status["role"] == "writer"
        daily = daily_job()
        assert daily["last_error"].startswith(
            "SourceConflictError: BTC 1d belongs to source 'file' (1 row,"
        )
        assert daily["written_total"] == 0
        (check,) = [g for g in status["gap_checks"] if g["job"] == "candles:BTC:1d"]
        assert "belongs to source 'file'" in check["error"]
        assert stored_ts(database_url, "BTC", "1d") == [day]
        stop(actor)
    finally:
        ray.kill(actor, no_restart=True)


def test_repeated_kills_mid_write_lose_and_duplicate_nothing(
    ray_runtime: None, database_url: str
) -> None:
    cfg = config(database_url, intervals=("1m",), backfill_days=20.0)  # 28,800 bars to write
    actor = get_or_create(cfg, name=unique("sup-kill"))
    try:
        for _ in range(4):
            time.sleep(1.5)
            ray.kill(actor, no_restart=False)  # the actor restarts and resumes from the DB
        expected_last = closed_bars(60, 20 * 86400, time.time())[-1]
        wait_for(
            lambda: stored_ts(database_url, "BTC", "1m")[-1:] >= [expected_last],
            120,
            "the 1m backfill after kills",
        )
        stored = stored_ts(database_url, "BTC", "1m")
        assert len(stored) == len(set(stored))  # no duplicates
        assert stored == list(range(stored[0], stored[-1] + 60, 60))  # no holes
        assert stored[0] <= closed_bars(60, 20 * 86400, time.time() - 600)[0] + 600
    finally:
        stop(actor)


def test_two_supervisors_one_database_exactly_one_writes(
    ray_runtime: None, database_url: str
) -> None:
    cfg = config(database_url, standby_retry_s=0.5)
    first = get_or_create(cfg, name=unique("sup-a"))
    second = get_or_create(cfg, name=unique("sup-b"))
    try:

        def roles() -> list[str]:
            return sorted(
                ray.get([a.status.remote() for a in (first, second)], timeout=30)[i]["role"]
                for i in range(2)
            )

        wait_for(lambda: roles() == ["standby", "writer"], 30, "one writer and one standby")
        statuses = ray.get([a.status.remote() for a in (first, second)])
        writer, standby = (first, second) if statuses[0]["role"] == "writer" else (second, first)
        standby_status = ray.get(standby.status.remote())
        assert all(j["runs"] == 0 for j in standby_status["jobs"])  # the standby wrote nothing
        stop(writer)  # releasing the lock hands over to the standby
        wait_for(lambda: ray.get(standby.status.remote())["role"] == "writer", 30, "hand-over")
    finally:
        for actor in (first, second):
            try:
                stop(actor)
            except Exception:
                ray.kill(actor, no_restart=True)
