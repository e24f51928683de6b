"""``/metrics`` scraped while ingestion runs: the supervisor on real Ray with the synthetic
market (two coins × two intervals), the app in process, the exposition parsed with
prometheus_client's own text parser.

Expected values come from outside the counters: candles inserted = the closed bars from the
backfill start to now (interval arithmetic) = the rows in the database; a recorded backtest
appears in the run counts and the duration histogram.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from ingestion.config import IngestConfig
from ingestion.supervisor import find, get_or_create
from serve_app.api import create_app
from serve_app.ingest import stop_supervisor
from serve_app.settings import Settings
from storage.engine import make_engine
from storage.migrate import upgrade

pytestmark = pytest.mark.ray
COINS = ("BTC", "ETH")
INTERVALS = ("1h", "4h")
STEP = {"1h": 3600, "4h": 14_400}
BACKFILL_DAYS = 3.0


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="squall-metrics")
    yield
    ray.shutdown()


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    """The sample of ``name`` whose labels include ``labels`` (exactly one), or None."""
    hits = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    assert len(hits) <= 1, (name, labels, hits)
    return hits[0] if hits else None


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_metrics_carry_ingestion_and_run_counters(ray_runtime: None, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'squall.db'}"
    upgrade(url)
    config = IngestConfig(
        database_url=url,
        coins=COINS,
        intervals=INTERVALS,
        data_source="synthetic",
        backfill_days=BACKFILL_DAYS,
        derivatives_period_s=0.5,
    )
    settings = Settings(
        database_url=url, coins=list(COINS), intervals=list(INTERVALS), ingest_enabled=True
    )
    client = TestClient(create_app(settings, configure_logs=False, background=False))
    actor = get_or_create(config, autostart=False)
    try:
        assert ray.get(actor.ping.remote(), timeout=60) == "pong"  # its process is up
        before = scrape(client)
        assert value(before, "squall_ingest_supervisor_up") == 1.0
        for coin in COINS:
            for interval in INTERVALS:
                job = f"candles:{coin}:{interval}"
                assert value(before, "jobs_ok_total", job=job, source="synthetic") == 0
                assert value(before, "jobs_failed_total", job=job) == 0
                assert (
                    value(
                        before,
                        "candles_inserted_total",
                        coin=coin,
                        interval=interval,
                        source="synthetic",
                    )
                    == 0
                )
        ray.get(actor.start.remote(), timeout=30)
        started = time.time()

        def caught_up() -> bool:
            s = scrape(client)
            return all(
                (value(s, "jobs_ok_total", job=f"candles:{c}:{i}") or 0) >= 1
                for c in COINS
                for i in INTERVALS
            )

        wait_for(caught_up, 60, "every candle job's first run")
        first = scrape(client)
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                rows = dict(
                    conn.execute(
                        text("SELECT coin || ':' || \"interval\", COUNT(*) FROM candles GROUP BY 1")
                    ).all()
                )
        finally:
            engine.dispose()
        for coin in COINS:
            for interval in INTERVALS:
                step = STEP[interval]
                # every closed bar since the backfill start (now may have crossed one close)
                first_bar = (int(started) - int(BACKFILL_DAYS * 86400)) // step * step
                last_bar = (int(started) // step - 1) * step
                expected = (last_bar - first_bar) // step + 1
                inserted = value(first, "candles_inserted_total", coin=coin, interval=interval)
                assert inserted == rows[f"{coin}:{interval}"]
                assert abs(inserted - expected) <= 1, (coin, interval, inserted, expected)
                labels = {"job": f"candles:{coin}:{interval}", "kind": "candles", "coin": coin}
                assert value(first, "jobs_failed_total", **labels) == 0
                assert value(first, "squall_ingest_stalls_total", **labels) == 0
                assert value(first, "squall_ingest_stalled_by_seconds", **labels) == 0
                age = value(first, "squall_ingest_age_seconds", **labels)
                assert age is not None and 0 <= age <= step + 5

        # the derivatives loops run every 0.5 s: their counters move between two scrapes
        def derivatives_ok() -> float:
            return value(scrape(client), "jobs_ok_total", job="derivatives:BTC", interval="") or 0

        wait_for(lambda: derivatives_ok() >= 1, 60, "the derivatives job's first run")
        ok_first = derivatives_ok()
        wait_for(lambda: derivatives_ok() >= ok_first + 2, 20, "the derivatives counter to move")
        # a recorded backtest shows in the run counts and the duration histogram
        done = client.post(
            "/backtest/run",
            json={
                "coin": "BTC",
                "interval": "1h",
                "strategy": "ema_cross",
                "params": {"fast": 5, "slow": 20},
            },
        )
        assert done.status_code == 200, done.text
        after = scrape(client)
        assert value(after, "squall_runs", kind="backtest", status="succeeded") == 1
        assert value(after, "squall_run_duration_seconds_count", kind="backtest") == 1
        assert value(after, "squall_run_duration_seconds_bucket", kind="backtest", le="+Inf") == 1
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                recorded = conn.execute(text("SELECT duration_s FROM backtest_runs")).scalar_one()
        finally:
            engine.dispose()
        total = value(after, "squall_run_duration_seconds_sum", kind="backtest")
        assert total == pytest.approx(recorded)
        le = [
            float(dict(ls)["le"])
            for (n, ls), v in after.items()
            if n == "squall_run_duration_seconds_bucket" and dict(ls)["le"] != "+Inf" and v == 1
        ]
        assert le and min(le) >= recorded  # the first bucket holding it is at or above it
        # the replica's own HTTP series are still there
        assert value(after, "squall_http_requests_total", route="/metrics", status="200")
    finally:
        stop_supervisor()
        assert find() is None
