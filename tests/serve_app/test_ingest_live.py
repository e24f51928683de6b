"""Live ingestion end to end: the supervisor on real Ray, the real Binance client, a fake
exchange on loopback that follows the wall clock, and the API's probes.

Scenario: catch up; the exchange goes down (connections refused) → the 1m job counts
consecutive failures and stalls, ``/ready`` answers 503 naming it while ``/live`` stays 200;
the exchange comes back → the hole is backfilled and every closed bar is stored exactly once
with the exchange's values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import ray
from fastapi.testclient import TestClient

from ingestion.config import IngestConfig
from ingestion.supervisor import get_or_create
from serve_app.api import create_app
from serve_app.ingest import stop_supervisor
from serve_app.settings import Settings
from storage.candles import CandleRepository
from storage.engine import make_engine, session_factory
from tests.fakes.exchange import FakeExchange, synthetic_series

pytestmark = pytest.mark.ray
MINUTE_MS = 60_000


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="squall-live")
    yield
    ray.shutdown()


@pytest.fixture
def exchange() -> Iterator[FakeExchange]:
    start = (int(time.time() * 1000) // MINUTE_MS - 180) * MINUTE_MS  # 3 h of history
    series = synthetic_series("1m", 300, seed=11, price=60_000.0, start_ms=start)  # +2 h ahead
    fake = FakeExchange()
    fake.add_series("spot", "BTCUSDT", series)
    fake.add_series("um", "BTCUSDT", series)
    fake.follow_wall_clock()
    fake.start()
    yield fake
    fake.stop()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stored(database_url: str) -> Any:
    engine = make_engine(database_url)
    try:
        with session_factory(engine)() as s:
            return CandleRepository(s).frame("BTC", "1m")
    finally:
        engine.dispose()


def test_outage_stalls_then_backfills_without_loss(
    ray_runtime: None, database_url: str, exchange: FakeExchange
) -> None:
    config = IngestConfig(
        database_url=database_url,
        coins=("BTC",),
        intervals=("1m",),
        data_source="binance",
        binance_spot_url=exchange.base_url,
        binance_futures_url=exchange.base_url,
        binance_timeout_s=1.0,
        binance_requests_per_second=200.0,
        backfill_days=2 / 24,
        grace_s=10.0,  # above the 2 s fetch delay after each bar close
        derivatives_period_s=5.0,
        retry_base_s=0.5,
    )
    actor = get_or_create(config)
    settings = Settings(database_url=database_url, coins=["BTC"], intervals=["1m"])
    client = TestClient(create_app(settings))
    try:

        def caught_up() -> bool:  # /ready alone is 200 before the supervisor has started
            ingestion = client.get("/health").json()["ingestion"]
            job = next((j for j in ingestion["jobs"] if j["job"] == "candles:BTC:1m"), None)
            return (
                ingestion["role"] == "writer" and job is not None and job["latest_ts"] is not None
            )

        wait_for(caught_up, 60, "the catch-up")
        assert client.get("/ready").status_code == 200
        health = client.get("/health").json()
        job = next(j for j in health["ingestion"]["jobs"] if j["job"] == "candles:BTC:1m")
        assert health["ingestion"]["role"] == "writer" and job["consecutive_failures"] == 0

        exchange.down("refuse")

        def stalled() -> bool:
            ingestion = client.get("/health").json()["ingestion"]
            job = next(j for j in ingestion["jobs"] if j["job"] == "candles:BTC:1m")
            return job["stalled"] and job["consecutive_failures"] >= 1

        wait_for(stalled, 150, "the 1m job to stall")
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "candles:BTC:1m" in ready.json()["message"]
        assert client.get("/live").status_code == 200
        job = next(
            j
            for j in client.get("/health").json()["ingestion"]["jobs"]
            if j["job"] == "candles:BTC:1m"
        )
        assert job["consecutive_failures"] >= 1 and job["last_error"]
        assert job["stalled_by_s"] > 0 and job["age_s"] > job["allowed_age_s"] == 70

        exchange.up()
        wait_for(lambda: client.get("/ready").status_code == 200, 90, "recovery")
        frame = stored(database_url)
        ts = frame["ts"].to_numpy()
        assert len(ts) == len(set(ts.tolist()))  # nothing duplicated
        assert (np.diff(ts) == 60).all()  # nothing missing: the outage was backfilled
        last_closed = (int(time.time()) // 60 - 1) * 60
        assert ts[-1] >= last_closed - 60
        # every stored bar carries the exchange's values (the fake's strings parsed)
        series = exchange._series[("spot", "BTCUSDT")]["1m"]
        index = {int(t) // 1000: i for i, t in enumerate(series.open_time)}
        rows = [index[int(t)] for t in ts]
        np.testing.assert_array_equal(frame["close"].to_numpy(), series.values[rows, 3])
        np.testing.assert_array_equal(frame["volume_base"].to_numpy(), series.values[rows, 4])
    finally:
        client.close()
        stop_supervisor()
        if ray.is_initialized():
            ray.kill(actor, no_restart=True)
