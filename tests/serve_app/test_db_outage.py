"""The database goes away for 30 s under load (a loopback proxy in front of the shared Postgres
is cut, then restored; Postgres itself keeps running for everyone else).

Real Ray ingestion (the supervisor, synthetic market, 1-minute bars) and the API in process
talk to Postgres only through the proxy while a reader thread keeps requesting candles. The
outage spans a bar close. Expected: ``/ready`` 503 within 5 s of the cut, ``/live`` 200
throughout; after the restore, ingestion resumes by itself, and the series holds every closed
bar from its backfill start to now exactly once (the expectation is interval arithmetic, and
every stored value equals the synthetic market's).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import make_url

from ingestion.config import IngestConfig, build_provider
from ingestion.supervisor import get_or_create
from serve_app.api import create_app
from serve_app.ingest import stop_supervisor
from serve_app.settings import Settings
from storage.engine import make_engine
from storage.migrate import upgrade
from tests.conftest import POSTGRES_URL, _postgres_unavailable
from tests.fakes.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.postgres]
OUTAGE_S = 30.0
BACKFILL_DAYS = 0.1  # 144 one-minute bars


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="squall-outage")
    yield
    ray.shutdown()


@pytest.fixture
def proxied_postgres() -> Iterator[tuple[str, TcpProxy, str]]:
    """(url through the proxy, the proxy, direct url) of a fresh migrated schema."""
    reason = _postgres_unavailable()
    if reason:
        pytest.skip(reason)
    schema = f"squall_outage_{uuid.uuid4().hex[:10]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in POSTGRES_URL else "?"
    direct = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    upgrade(direct)
    target = make_url(POSTGRES_URL)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432).start()
    proxied = direct.replace(f":{target.port or 5432}/", f":{proxy.port}/", 1)
    assert proxied != direct
    try:
        yield proxied, proxy, direct
    finally:
        proxy.cut()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stored(direct_url: str) -> list[tuple[Any, ...]]:
    engine = make_engine(direct_url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT ts, open, high, low, close, volume_base FROM candles "
                        "WHERE coin = 'BTC' AND \"interval\" = '1m' ORDER BY ts"
                    )
                ).all()
            )
    finally:
        engine.dispose()


def test_database_outage_under_load(
    ray_runtime: None, proxied_postgres: tuple[str, TcpProxy, str]
) -> None:
    url, proxy, direct = proxied_postgres
    config = IngestConfig(
        database_url=url,
        coins=("BTC",),
        intervals=("1m",),
        data_source="synthetic",
        backfill_days=BACKFILL_DAYS,
        derivatives_period_s=2.0,
        retry_base_s=0.5,
        grace_s=10.0,
    )
    settings = Settings(
        database_url=url,
        coins=["BTC"],
        intervals=["1m"],
        ingest_grace_s=10.0,
        db_connect_timeout_s=2,
    )
    client = TestClient(create_app(settings, configure_logs=False, background=False))
    actor = get_or_create(config)
    stop_load = threading.Event()
    answers: dict[int, int] = {}

    def load() -> None:  # a reader keeps asking for candles all along
        reader = TestClient(create_app(settings, configure_logs=False, background=False))
        while not stop_load.is_set():
            code = reader.get("/market/candles", params={"coin": "BTC", "interval": "1m"})
            answers[code.status_code] = answers.get(code.status_code, 0) + 1
            time.sleep(0.05)

    loader = threading.Thread(target=load, daemon=True)
    try:
        wait_for(lambda: client.get("/ready").status_code == 200, 90, "the catch-up")
        loader.start()
        # cut 45 s into a minute: the outage spans the next bar close
        time.sleep((45 - time.time() % 60) % 60)
        proxy.cut()
        cut_at = time.monotonic()
        to_503 = wait_for(lambda: client.get("/ready").status_code == 503, 10, "/ready 503")
        assert to_503 <= 5.0, to_503
        while time.monotonic() - cut_at < OUTAGE_S:
            assert client.get("/live").status_code == 200
            time.sleep(0.5)
        body = client.get("/ready").json()
        assert "database unreachable" in body["message"]
        proxy.restore()
        restored_at = time.monotonic()
        to_ready = wait_for(
            lambda: client.get("/ready").status_code == 200, 90, "recovery after the outage"
        )
        now = time.time()
        expected_last = (int(now) // 60 - 1) * 60

        def caught_up() -> bool:
            rows = stored(direct)
            return bool(rows) and rows[-1][0] >= expected_last

        wait_for(caught_up, 60, "ingestion to store the bars that closed during the outage")
        stop_load.set()
        loader.join(10)
        rows = stored(direct)
        status = ray.get(actor.status.remote(), timeout=10)
        # the outage really hit the candle job: its runs failed, and /metrics counted them
        scraped = client.get("/metrics").text
        failed = [
            s.value
            for f in text_string_to_metric_families(scraped)
            for s in f.samples
            if s.name == "jobs_failed_total" and s.labels["job"] == "candles:BTC:1m"
        ]
    finally:
        stop_load.set()
        stop_supervisor()
    ts = [r[0] for r in rows]
    assert len(ts) == len(set(ts))  # nothing twice
    first, last = ts[0], ts[-1]
    assert ts == list(range(first, last + 60, 60))  # nothing missing
    assert last >= expected_last
    # each stored bar is the synthetic market's bar (nothing half-written or stale)
    market = build_provider(config).fetch_candles("BTC", "1m", first, last, now=int(time.time()))
    assert market["ts"].tolist() == ts
    columns = ["open", "high", "low", "close", "volume_base"]
    assert [tuple(r[1:]) for r in rows] == [tuple(v) for v in market[columns].to_numpy()]
    job = next(j for j in status["jobs"] if j["job"] == "candles:BTC:1m")
    assert job["consecutive_failures"] == 0 and status["role"] == "writer"
    assert failed and failed[0] >= 1, failed
    # the reader got candles or a clean 503 (the database error mapped once), never a 500
    assert answers.get(200, 0) > 0 and set(answers) <= {200, 503}, answers
    print(
        f"outage {OUTAGE_S:.0f}s: /ready 503 after {to_503:.2f}s, ready again "
        f"{to_ready:.1f}s after the restore ({time.monotonic() - restored_at:.1f}s to caught up); "
        f"{len(ts)} bars stored once each, 0 missing; candle job runs failed {failed[0]:.0f}; "
        f"reader answers {answers}"
    )
