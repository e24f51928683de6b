"""The API under a real local Ray Serve, over real HTTP (one Ray start for the module)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from storage.migrate import head_revision, upgrade
from tests.serve_app.factories import HOUR, T0, candle, seed

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
ROWS = [candle("BTC", "1h", T0 + i * HOUR, i) for i in range(3)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ray = pytest.importorskip("ray")
    from ray import serve

    from serve_app.deployment import SquallAPI

    url = f"sqlite:///{tmp_path_factory.mktemp('serve') / 'squall.db'}"
    upgrade(url)
    seed(url, ROWS)
    port = _free_port()
    # Replicas import squall from the checkout even when it is not pip-installed.
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = {"database_url": url, "coins": ["BTC"], "intervals": ["1h"],
                    "log_level": "WARNING", "ingest_enabled": False}  # fmt: skip
        app = SquallAPI.options(num_replicas=1).bind(settings)
        serve.run(app, name="squall-test", route_prefix="/", blocking=False)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 45
        while True:
            try:
                if httpx.get(f"{base}/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the Serve app did not answer /live within 45 s")
            time.sleep(0.25)
        yield base
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def test_live_and_ready(base_url: str) -> None:
    live = httpx.get(f"{base_url}/live")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = httpx.get(f"{base_url}/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "revision": head_revision()}


def test_candles_values_over_http(base_url: str) -> None:
    response = httpx.get(
        f"{base_url}/market/candles", params={"coin": "btc", "interval": "1h", "limit": 2}
    )
    assert response.status_code == 200
    assert response.json() == {
        "coin": "BTC", "interval": "1h", "quote_asset": "USDT", "count": 2,
        "candles": [
            {"ts": "2024-03-01T01:00:00Z", "ts_unix": 1709254800, "open": 101.0,
             "high": 103.0, "low": 100.0, "close": 102.0, "volume_base": 11.0,
             "volume_quote": 1001.0, "trade_count": 51},
            {"ts": "2024-03-01T02:00:00Z", "ts_unix": 1709258400, "open": 102.0,
             "high": 104.0, "low": 101.0, "close": 103.0, "volume_base": 12.0,
             "volume_quote": 1002.0, "trade_count": 52},
        ],
    }  # fmt: skip


def test_request_id_is_echoed_once_and_used_in_errors(base_url: str) -> None:
    response = httpx.get(
        f"{base_url}/market/candles",
        params={"coin": "XRP", "interval": "1h"},
        headers={"X-Request-ID": "serve-test-1"},
    )
    assert response.status_code == 404
    assert response.headers.get_list("x-request-id") == ["serve-test-1"]
    body = response.json()
    assert body["error"] == "unknown_coin" and body["request_id"] == "serve-test-1"
    generated = httpx.get(f"{base_url}/live").headers.get_list("x-request-id")
    assert len(generated) == 1 and generated[0]


def test_health_sees_the_ray_cluster(base_url: str) -> None:
    body = httpx.get(f"{base_url}/health").json()
    assert body["database"]["ok"] is True
    assert body["ray"]["cluster_resources"]["CPU"] == 2.0
    assert body["series"][0]["latest_ts"] == "2024-03-01T02:00:00Z"
