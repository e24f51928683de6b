"""Live ingestion through ccxt end to end: 3 coins x 2 intervals, configured the way a user
does it (``SQUALL_DATA_SOURCE=ccxt``, ``SQUALL_CCXT_URLS`` on the ``Settings`` object), the
supervisor on real Ray running a real ccxt ``binance`` exchange object against a fake exchange
on loopback that follows the wall clock, and the API's probes.

Scenario, the same guarantees as the direct Binance provider's (``test_ingest_live``): catch
up through a burst of 429s (with ``Retry-After``) and 503s; the exchange goes down
(connections refused) -> every 1m job counts failures and stalls, ``/ready`` answers 503
naming them while ``/live`` stays 200; the exchange comes back -> the holes are backfilled
and every closed bar of all six series is stored exactly once with the exchange's values.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import ccxt
import numpy as np
import pytest
import ray
from fastapi.testclient import TestClient

from ingestion.supervisor import get_or_create
from serve_app.api import create_app
from serve_app.ingest import stop_supervisor
from serve_app.settings import Settings, ingest_config
from storage.candles import CandleRepository
from storage.derivatives import OpenInterestRepository
from storage.engine import make_engine, session_factory
from storage.snapshots import SnapshotRepository
from tests.fakes.exchange import FakeExchange, Series, synthetic_series

pytestmark = pytest.mark.ray
COINS = ("BTC", "ETH", "SOL")
INTERVALS = ("1m", "5m")
STEP = {"1m": 60, "5m": 300}
PRICES = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="squall-ccxt")
    yield
    ray.shutdown()


@pytest.fixture
def exchange() -> Iterator[FakeExchange]:
    """3 h of history and 2 h ahead for each coin: spot 1m and 5m, and a USDT-M perpetual."""
    start_ms = (int(time.time()) // 300 - 36) * 300 * 1000  # 5m-aligned, 3 h back
    fake = FakeExchange()
    for k, coin in enumerate(COINS):
        for interval in INTERVALS:
            bars = 5 * 3600 // STEP[interval]
            series = synthetic_series(
                interval, bars, seed=20 + k, price=PRICES[coin], start_ms=start_ms
            )
            fake.add_series("spot", f"{coin}USDT", series)
            if interval == "1m":
                fake.add_series("um", f"{coin}USDT", series)
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


def read(database_url: str, fn: Callable[[Any], Any]) -> Any:
    engine = make_engine(database_url)
    try:
        with session_factory(engine)() as s:
            return fn(s)
    finally:
        engine.dispose()


def jobs(client: TestClient) -> dict[str, dict[str, Any]]:
    """The supervisor's jobs by name (it must answer: a loop stuck in its provider's backoff
    must not keep ``status()`` waiting, see ``test_supervisor_threads``)."""
    ingestion = client.get("/health").json()["ingestion"]
    assert ingestion["reason"] is None, ingestion["reason"]
    return {j["job"]: j for j in ingestion["jobs"]}


def test_three_coins_two_intervals_stall_then_backfill_without_loss(
    ray_runtime: None, database_url: str, exchange: FakeExchange
) -> None:
    urls = {k: exchange.base_url + urlsplit(v).path for k, v in ccxt.binance().urls["api"].items()}
    settings = Settings(
        database_url=database_url,
        coins=list(COINS),
        intervals=list(INTERVALS),
        data_source="ccxt",
        ccxt_exchange="binance",
        ccxt_market="spot",
        ccxt_urls=urls,
        ccxt_timeout_s=1.0,
        backfill_days=2 / 24,
        ingest_grace_s=10.0,  # above the 2 s fetch delay after each bar close
        derivatives_period_s=5.0,
    )
    config = dataclasses.replace(ingest_config(settings), retry_base_s=0.5)
    assert config.data_source == "ccxt" and config.ccxt_urls == urls
    exchange.rate_limit(3, retry_after_s=0.3)  # the first requests are told to slow down
    exchange.fail(3, 503)
    started = time.time()
    actor = get_or_create(config)
    client = TestClient(create_app(settings))
    try:
        wait_for(lambda: caught_up(database_url, client), 120, "the catch-up of all six series")
        assert client.get("/ready").status_code == 200
        statuses = [r.status for r in exchange.requests]
        assert statuses.count(429) == 3 and statuses.count(503) == 3  # all retried through

        exchange.down("refuse")
        minute_jobs = [f"candles:{c}:1m" for c in COINS]

        def stalled() -> bool:
            now = jobs(client)
            return all(
                now[j]["stalled"] and now[j]["consecutive_failures"] >= 1 for j in minute_jobs
            )

        wait_for(stalled, 150, "every 1m job to stall")
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert all(j in ready.json()["message"] for j in minute_jobs)
        assert client.get("/live").status_code == 200
        for name in minute_jobs:
            job = jobs(client)[name]
            assert "ccxt:binance" in job["last_error"] and "NetworkError" in job["last_error"]
            assert job["stalled_by_s"] > 0 and job["age_s"] > job["allowed_age_s"] == 70

        exchange.up()
        wait_for(lambda: client.get("/ready").status_code == 200, 120, "recovery")
        for coin in COINS:
            for interval in INTERVALS:
                check_series(database_url, exchange, coin, interval, started)
            check_derivatives(database_url, exchange, coin)
    finally:
        client.close()
        stop_supervisor()
        if ray.is_initialized():
            ray.kill(actor, no_restart=True)


def caught_up(database_url: str, client: TestClient) -> bool:
    """Every series holds its newest closed bar, every job ran and none is failing."""
    ingestion = client.get("/health").json()["ingestion"]
    if ingestion is None or ingestion["role"] != "writer" or ingestion["data_source"] != "ccxt":
        return False
    if not all(j["runs"] >= 1 and j["consecutive_failures"] == 0 for j in ingestion["jobs"]):
        return False
    now = int(time.time())
    latest = read(
        database_url,
        lambda s: {(c, i): CandleRepository(s).latest_ts(c, i) for c in COINS for i in INTERVALS},
    )
    return all(
        latest[(c, i)] is not None and latest[(c, i)] >= (now // STEP[i] - 1) * STEP[i] - STEP[i]
        for c in COINS
        for i in INTERVALS
    )


def check_series(
    database_url: str, fake: FakeExchange, coin: str, interval: str, started: float
) -> None:
    """Every closed bar from the backfill start on, once, with the exchange's values."""
    step = STEP[interval]
    frame = read(database_url, lambda s: CandleRepository(s).frame(coin, interval))
    ts = frame["ts"].to_numpy()
    assert ts[0] <= (int(started) - 2 * 3600) // step * step + step, (coin, interval)
    assert len(ts) == len(set(ts.tolist())), (coin, interval)  # nothing duplicated
    assert (np.diff(ts) == step).all(), (coin, interval)  # nothing missing
    assert ts[-1] >= (int(time.time()) // step - 1) * step - step, (coin, interval)
    series: Series = fake.series("spot", f"{coin}USDT", interval)
    index = {int(t) // 1000: i for i, t in enumerate(series.open_time)}
    rows = [index[int(t)] for t in ts]
    np.testing.assert_array_equal(frame["close"].to_numpy(), series.values[rows, 3])
    np.testing.assert_array_equal(frame["volume_base"].to_numpy(), series.values[rows, 4])
    assert frame["volume_quote"].isna().all() and frame["trade_count"].isna().all()
    assert set(frame["source"]) == {"ccxt:binance:spot"}


def check_derivatives(database_url: str, fake: FakeExchange, coin: str) -> None:
    """A snapshot with the perpetual's fields, and open-interest history from the fake."""
    snapshot = read(database_url, lambda s: SnapshotRepository(s).latest(coin))
    assert snapshot is not None and snapshot.source == "ccxt:binance:spot"
    assert snapshot.mark_price is not None and snapshot.open_interest is not None
    assert snapshot.bid is not None and snapshot.bid < snapshot.ask
    oi = read(database_url, lambda s: OpenInterestRepository(s).frame(coin))
    assert len(oi) >= 1 and (oi["ts"] % 3600 == 0).all()
    expected = [fake._oi_at(int(t) * 1000) for t in oi["ts"]]
    np.testing.assert_array_equal(oi["open_interest"].to_numpy(), expected)
