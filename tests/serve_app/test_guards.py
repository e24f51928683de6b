"""Auth, the body cap and the cap on asynchronous runs (``serve_app/api/guards.py``), through
the app: 401 / 403 / 200 for a bearer token, an ``X-API-Key`` and a keys file, reads open or
closed by a setting, 413 before parsing with and without a Content-Length, 503 when too many
runs are queued or running. The overload test (real HTTP) is ``test_overload.py``."""

from __future__ import annotations

import http.client
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from serve_app.api import create_app
from serve_app.observability import configure_logging
from serve_app.runner import auth_line, replica_settings
from serve_app.settings import Settings
from squall import AuthError, Client
from storage.engine import make_engine, session_factory, transaction
from storage.migrate import upgrade
from storage.runs import RunRepository
from tests.serve_app.live_server import uvicorn_app

TOKEN = "s3cret-token-for-tests-0123456789"
SIM = {"returns": [0.01, -0.02, 0.015, -0.005, 0.007] * 20, "horizon": 5, "paths": 200}


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('guards') / 'squall.db'}"
    upgrade(url)
    return url


def make_client(db_url: str, **settings: Any) -> TestClient:
    values: dict[str, Any] = {
        "database_url": db_url,
        "coins": ["BTC"],
        "intervals": ["1d"],
        "ingest_enabled": False,
        "log_level": "WARNING",
        **settings,
    }
    return TestClient(create_app(Settings(**values), configure_logs=False, background=False))


@pytest.fixture(scope="module")
def guarded(db_url: str) -> Iterator[TestClient]:
    with make_client(db_url, api_token=TOKEN) as client:
        yield client


# ------------------------------------------------------------------------------- auth
def test_without_a_token_setting_nothing_is_asked(db_url: str) -> None:
    with make_client(db_url) as client:
        assert client.post("/risk/simulate", json=SIM).status_code == 200
        assert client.get("/market/coins").status_code == 200


def test_a_mutation_without_credentials_is_401_with_www_authenticate(guarded: TestClient) -> None:
    r = guarded.post("/risk/simulate", json=SIM)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    body = r.json()
    assert body["error"] == "unauthorized" and "X-API-Key" in body["message"]
    assert TOKEN not in r.text
    # another scheme is no credential either
    r = guarded.post("/risk/simulate", json=SIM, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401
    assert guarded.delete("/runs/nope").status_code == 401


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"X-API-Key": TOKEN + "x"}],
)
def test_a_wrong_token_is_403(guarded: TestClient, headers: dict[str, str]) -> None:
    r = guarded.post("/risk/simulate", json=SIM, headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert TOKEN not in r.text


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {TOKEN}"}, {"X-API-Key": TOKEN}])
def test_the_right_token_is_let_through(guarded: TestClient, headers: dict[str, str]) -> None:
    r = guarded.post("/risk/simulate", json=SIM, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["paths"] == 200
    # the route's own checks still answer after auth
    bad = guarded.post("/risk/simulate", json={**SIM, "paths": 0}, headers=headers)
    assert bad.status_code == 422
    missing = guarded.delete("/runs/no-such-run", headers=headers)
    assert missing.status_code == 404


def test_reads_stay_open_by_default(guarded: TestClient) -> None:
    assert guarded.get("/market/coins").status_code == 200
    assert guarded.get("/runs").status_code == 200


def test_reads_closed_by_setting_except_probes_and_pages(db_url: str) -> None:
    with make_client(db_url, api_token=TOKEN, auth_reads=True) as client:
        assert client.get("/market/coins").status_code == 401
        assert client.get("/runs", headers={"X-API-Key": "nope"}).status_code == 403
        assert client.get("/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        for open_path in ("/live", "/metrics", "/openapi.json", "/docs", "/ui"):
            assert client.get(open_path).status_code == 200, open_path


def test_keys_file_tokens_and_rotation(db_url: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# team keys\nkey-alpha-111\n\n  key-beta-222  \n")
    with make_client(db_url, api_keys_file=str(keys)) as client:
        assert client.post("/risk/simulate", json=SIM).status_code == 401
        for key in ("key-alpha-111", "key-beta-222"):
            assert client.post("/risk/simulate", json=SIM, headers={"X-API-Key": key}).is_success
        comment = {"X-API-Key": "# team keys"}
        assert client.post("/risk/simulate", json=SIM, headers=comment).status_code == 403
        keys.write_text("key-gamma-3333\n")  # rotated: read again without a restart
        rotated = {"Authorization": "Bearer key-gamma-3333"}
        assert client.post("/risk/simulate", json=SIM, headers=rotated).status_code == 200
        old = {"X-API-Key": "key-alpha-111"}
        assert client.post("/risk/simulate", json=SIM, headers=old).status_code == 403


def test_token_is_never_logged(db_url: str) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    try:
        with make_client(db_url, api_token=TOKEN) as client:
            client.post("/risk/simulate", json=SIM, headers={"Authorization": f"Bearer {TOKEN}"})
            client.post("/risk/simulate", json=SIM, headers={"X-API-Key": TOKEN})
            client.post("/risk/simulate", json=SIM, headers={"X-API-Key": "wrong-" + TOKEN})
    finally:
        configure_logging("WARNING")
        logging.getLogger().setLevel(logging.WARNING)
    logged = stream.getvalue()
    assert '"path": "/risk/simulate"' in logged or '"path":"/risk/simulate"' in logged
    assert TOKEN not in logged
    settings = Settings(api_token=TOKEN)
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump(mode="json"))


def test_replicas_get_the_token_and_squall_up_warns_when_exposed() -> None:
    exposed = Settings(api_host="0.0.0.0")
    assert auth_line(exposed).startswith("WARNING") and "SQUALL_API_TOKEN" in auth_line(exposed)
    assert "off (loopback only" in auth_line(Settings(api_host="127.0.0.1"))
    assert "off (loopback only" in auth_line(Settings(api_host="::1"))
    assert "required" in auth_line(Settings(api_host="0.0.0.0", api_token=TOKEN))
    assert Settings(**replica_settings(Settings(api_token=TOKEN))).api_token is not None
    rebuilt = Settings(**replica_settings(Settings(api_token=TOKEN)))
    assert rebuilt.api_token is not None and rebuilt.api_token.get_secret_value() == TOKEN


def test_python_client_sends_the_token_of_the_environment(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(database_url=db_url, coins=["BTC"], intervals=["1d"], api_token=TOKEN)
    with uvicorn_app(settings) as base:
        monkeypatch.delenv("SQUALL_API_TOKEN", raising=False)
        with Client(base) as anonymous, pytest.raises(AuthError) as refused:
            anonymous.request("POST", "/risk/simulate", json=SIM)
        assert refused.value.status == 401
        monkeypatch.setenv("SQUALL_API_TOKEN", TOKEN)
        with Client(base) as client:
            assert client.request("POST", "/risk/simulate", json=SIM).status_code == 200
        with Client(base, token="wrong") as wrong, pytest.raises(AuthError) as bad:
            wrong.request("POST", "/risk/simulate", json=SIM)
        assert bad.value.status == 403


# ----------------------------------------------------------------------------- 413
def test_body_over_the_cap_is_413_by_content_length(db_url: str) -> None:
    with make_client(db_url, max_body_bytes=4096) as client:
        small = client.post("/risk/simulate", json=SIM)
        assert small.status_code == 200
        big = {**SIM, "returns": [0.001] * 2000}
        r = client.post("/risk/simulate", json=big)
        assert r.status_code == 413
        body = r.json()
        assert body["error"] == "body_too_large" and body["max_body_bytes"] == 4096
        assert body["request_id"] == r.headers["x-request-id"]


def test_body_over_the_cap_is_413_when_streamed_without_length(db_url: str) -> None:
    settings = Settings(database_url=db_url, coins=["BTC"], intervals=["1d"], max_body_bytes=4096)
    payload = orjson.dumps({**SIM, "returns": [0.001] * 2000})
    fits = orjson.dumps(SIM)

    def chunked(port: int, data: bytes) -> tuple[int, bytes, str | None]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            pieces = (data[i : i + 1000] for i in range(0, len(data), 1000))
            conn.request(
                "POST",
                "/risk/simulate",
                body=pieces,
                headers={"Content-Type": "application/json"},
                encode_chunked=True,
            )
            response = conn.getresponse()
            return response.status, response.read(), response.getheader("Content-Length")
        finally:
            conn.close()

    with uvicorn_app(settings) as base:
        port = int(base.rsplit(":", 1)[1])
        status, body, _ = chunked(port, payload)
        assert status == 413, body
        assert orjson.loads(body)["error"] == "body_too_large"
        status, body, _ = chunked(port, fits)  # a chunked body under the cap is served
        assert status == 200, body
        assert orjson.loads(body)["result"]["paths"] == 200


# ------------------------------------------------------------------- async run cap
def test_async_runs_beyond_the_cap_are_503_with_retry_after(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with transaction(sessions) as session:  # two runs that have not finished
        repo = RunRepository(session)
        ids = [
            repo.add("simulation", {}, request_hash="h", code_version="t", status=status)
            for status in ("queued", "running")
        ]
    with make_client(url, max_active_runs=2) as client:
        r = client.post("/risk/simulate", json={**SIM, "mode": "async"})
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["error"] == "too_many_runs" and body["max_active_runs"] == 2
        assert body["active_runs"] == 2 and int(r.headers["retry-after"]) >= 1
        with transaction(sessions) as session:
            repo = RunRepository(session)
            assert repo.count() == 2  # nothing recorded for the refused one
            repo.update(ids[0], status="cancelled", finished_at=1)
        accepted = client.post("/risk/simulate", json={**SIM, "mode": "async"})
        assert accepted.status_code == 202, accepted.text
    engine.dispose()
