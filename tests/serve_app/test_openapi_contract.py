"""``/openapi.json`` tells the truth: every JSON route, called with a valid request on real
data, answers a body that validates against the schema the document declares for that
status code; and so do its error answers.

The list of calls covers every route of the document (a new route without a call here fails
``test_every_route_is_called``), so the contract cannot drift silently.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from ingestion.fileimport import parse_candle_file
from serve_app.api import create_app
from serve_app.settings import Settings
from storage.candles import CandleRepository
from storage.derivatives import FundingRepository, OpenInterestRepository
from storage.engine import make_engine, session_factory, transaction
from storage.migrate import upgrade
from storage.snapshots import SnapshotRepository

COINS = {"BTC": "BTCUSDT", "ETH": "ETHUSDT", "SOL": "SOLUSDT"}


@pytest.fixture(scope="module")
def client(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('contract') / 'squall.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    last = 0
    with transaction(sessions) as session:
        for coin, pair in COINS.items():
            path = next(shared_data.glob(f"binance_spot_{pair}_1d_*.csv"))
            frame = parse_candle_file(path, coin=coin, interval="1d").frame
            CandleRepository(session).upsert(frame)
            last = max(last, int(frame["ts"].iloc[-1]))
        ts = last - 86_400 * 30 + 8 * 3_600 * pd.RangeIndex(90).to_numpy()
        FundingRepository(session).upsert(
            pd.DataFrame(
                {"coin": "BTC", "ts": ts, "funding_rate": 1e-4, "mark_price": 6e4, "source": "t"}
            )
        )
        OpenInterestRepository(session).upsert(
            pd.DataFrame(
                {
                    "coin": "BTC",
                    "ts": ts,
                    "open_interest": 1e4,
                    "open_interest_quote": 6e8,
                    "source": "t",
                }
            )
        )
        SnapshotRepository(session).upsert(
            [
                {
                    "coin": "BTC",
                    "ts": last,
                    "last_price": 60_000.0,
                    "mark_price": 60_010.0,
                    "index_price": 60_000.0,
                    "source": "test",
                }
            ]
        )
    engine.dispose()
    settings = Settings(database_url=url, coins=list(COINS), intervals=["1d"], ingest_enabled=False)
    with TestClient(create_app(settings, configure_logs=False)) as c:
        yield c


def _schema(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    responses = doc["paths"][path][method]["responses"]
    declared = responses.get(str(status))
    assert declared is not None, f"{method.upper()} {path} answered {status}, not declared"
    content = declared.get("content", {})
    assert "application/json" in content, f"{method.upper()} {path} {status}: no JSON schema"
    return {**content["application/json"]["schema"], "components": doc["components"]}


def check(
    client: TestClient,
    doc: dict[str, Any],
    method: str,
    template: str,
    url: str | None = None,
    *,
    status: int = 200,
    **kwargs: Any,
) -> dict[str, Any]:
    response = client.request(method, url or template, **kwargs)
    assert response.status_code == status, f"{method} {url or template}: {response.text[:500]}"
    body = response.json()
    jsonschema.validate(body, _schema(doc, template, method.lower(), status))
    CALLED.add((method.lower(), template))
    return body  # type: ignore[no-any-return]


def check_media(
    client: TestClient,
    doc: dict[str, Any],
    method: str,
    template: str,
    url: str,
    media: str,
    **kwargs: Any,
) -> bytes:
    """A non-JSON route: 200 with the media type the document declares for it."""
    response = client.request(method, url, **kwargs)
    assert response.status_code == 200, f"{method} {url}: {response.text[:500]}"
    assert response.headers["content-type"].split(";")[0] == media, response.headers
    declared = doc["paths"][template][method.lower()]["responses"]["200"]["content"]
    assert list(declared) == [media], f"{method} {template} declares {list(declared)}"
    CALLED.add((method.lower(), template))
    return response.content


CALLED: set[tuple[str, str]] = set()
BT = {"coin": "BTC", "interval": "1d", "strategy": "ema_cross", "params": {"fast": 12}}
WF = {**BT, "grid": {"fast": [5, 10], "slow": [30, 60]}, "train_bars": 730, "test_bars": 180}
WF.pop("params")
SIM = {"backtest": BT, "horizon": 30, "paths": 2_000, "seed": 3}
SPEC = {"long_entry": "ema:{fast} > ema:{slow}", "long_exit": "ema:{fast} <= ema:{slow}",
        "params": {"fast": 12, "slow": 26}}  # fmt: skip
PF = {
    "coins": ["BTC", "ETH", "SOL"],
    "interval": "1d",
    "strategy": {"momentum": {"lookback": 30, "top_k": 2}},
    "rebalance": {"kind": "monthly"},
}
PWF = {**PF, "grid": {"lookback": [20, 60]}, "train_bars": 730, "test_bars": 365}


def test_every_json_route_answers_what_the_document_declares(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    c = lambda *a, **k: check(client, doc, *a, **k)  # noqa: E731
    c("GET", "/live")
    c("GET", "/ready")
    c("GET", "/health")
    c("GET", "/market/coins")
    c("GET", "/market/candles", "/market/candles?coin=BTC&interval=1d&limit=5")
    c("GET", "/market/snapshot", "/market/snapshot?coin=BTC")
    c("GET", "/market/gaps", "/market/gaps?coin=BTC&interval=1d")
    c("GET", "/market/microstructure", "/market/microstructure?coin=BTC&window=7d")
    c("GET", "/indicators", "/indicators?coin=BTC&interval=1d&names=ema:20,rsi:14&limit=50")
    c("GET", "/signals", "/signals?coin=BTC&interval=1d&strategy=ema_cross&limit=50")
    c("GET", "/regimes", "/regimes?coin=BTC&interval=1d&limit=50")
    c("GET", "/features", "/features?coin=BTC&interval=1d&limit=20")
    run = c("POST", "/backtest/run", json=BT)
    other = c("POST", "/backtest/run", json={**BT, "params": {"fast": 20}})
    walk = c("POST", "/backtest/walkforward", json=WF)
    queued = c("POST", "/backtest/walkforward", json={**WF, "mode": "async"}, status=202)
    c("POST", "/backtest/run", json={**BT, "mode": "async"}, status=202)
    c("GET", "/backtest/runs", "/backtest/runs?limit=5")
    c("GET", "/backtest/runs/{run_id}", f"/backtest/runs/{run['run_id']}")
    c("GET", "/backtest/compare", f"/backtest/compare?ids={run['run_id']},{other['run_id']}")
    c("POST", "/backtest/runs/{run_id}/rerun", f"/backtest/runs/{run['run_id']}/rerun")
    c("POST", "/risk/report", json={"coins": ["BTC", "ETH"], "weights": {"BTC": 0.5, "ETH": 0.5}})
    c("POST", "/risk/report", json={"run_id": run["run_id"]})
    c("GET", "/risk/correlation", "/risk/correlation?coins=BTC,ETH,SOL&rolling_window=60")
    sim = c("POST", "/risk/simulate", json=SIM)
    c("POST", "/risk/simulate", json={**SIM, "mode": "async"}, status=202)
    c("GET", "/risk/simulations/{run_id}", f"/risk/simulations/{sim['run_id']}")
    c("GET", "/runs", "/runs?kind=walkforward")
    c("GET", "/strategies")
    c("POST", "/signals", json={"coin": "BTC", "interval": "1d", "strategy": {"spec": SPEC},
                                "limit": 30})  # fmt: skip
    c("POST", "/backtest/run", json={**BT, "strategy": {"spec": SPEC}, "params": {"fast": 9}})
    folio = c("POST", "/backtest/portfolio", json=PF)
    c("POST", "/backtest/runs/{run_id}/rerun", f"/backtest/runs/{folio['run_id']}/rerun")
    c("POST", "/backtest/portfolio/walkforward", json=PWF)
    deadline = time.monotonic() + 60
    while c("GET", "/runs/{run_id}", f"/runs/{queued['run_id']}")["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # a finished run cannot be cancelled: 409 with the error body the document declares
    c("DELETE", "/runs/{run_id}", f"/runs/{queued['run_id']}", status=409)
    m = lambda *a, **k: check_media(client, doc, *a, **k)  # noqa: E731
    html = "text/html"
    m("GET", "/backtest/runs/{run_id}/report", f"/backtest/runs/{run['run_id']}/report", html)
    m("GET", "/backtest/runs/{run_id}/report", f"/backtest/runs/{walk['run_id']}/report", html)
    m("GET", "/risk/simulations/{run_id}/report", f"/risk/simulations/{sim['run_id']}/report", html)
    m("GET", "/runs/{run_id}/report", f"/runs/{sim['run_id']}/report", html)
    m("POST", "/risk/report/html", "/risk/report/html", html, json={"coins": ["BTC", "ETH"]})
    png = m(
        "GET",
        "/runs/{run_id}/charts/{name}.png",
        f"/runs/{run['run_id']}/charts/equity.png",
        "image/png",
    )
    assert png.startswith(b"\x89PNG")
    svg = m(
        "GET",
        "/runs/{run_id}/charts/{name}.svg",
        f"/runs/{sim['run_id']}/charts/fan.svg",
        "image/svg+xml",
    )
    assert b"<svg" in svg[:500]
    assert client.get("/metrics").status_code == 200  # text/plain: Prometheus' format
    CALLED.add(("get", "/metrics"))


def test_errors_answer_the_declared_error_body(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    c = lambda *a, **k: check(client, doc, *a, **k)  # noqa: E731
    c("GET", "/market/candles", "/market/candles?coin=NOPE&interval=1d", status=404)
    c("GET", "/market/candles", "/market/candles?coin=BTC&interval=7m", status=422)
    c("GET", "/indicators", "/indicators?coin=BTC&interval=1d&names=nope:3", status=422)
    c("POST", "/backtest/run", json={**BT, "strategy": "nope"}, status=422)
    bad = {"spec": {"long_entry": "ema:12 > emaa:26"}}
    c("POST", "/backtest/run", json={**BT, "strategy": bad}, status=422)
    c("POST", "/signals", json={"coin": "BTC", "interval": "1d", "strategy": bad}, status=422)
    c("POST", "/backtest/portfolio", json={**PF, "coins": ["BTC", "NOPE"]}, status=404)
    c("POST", "/backtest/run", "/backtest/run?coin=BTC", json=BT, status=400)
    c("GET", "/runs/{run_id}", "/runs/nope", status=404)
    c("DELETE", "/runs/{run_id}", "/runs/nope", status=404)
    c("POST", "/risk/simulate", json={**SIM, "paths": 10**9}, status=422)
    c("GET", "/runs/{run_id}/report", "/runs/nope/report", status=404)
    c("GET", "/runs/{run_id}/charts/{name}.png", "/runs/nope/charts/equity.png", status=404)
    sim = client.post("/risk/simulate", json=SIM).json()["run_id"]
    c("GET", "/backtest/runs/{run_id}/report", f"/backtest/runs/{sim}/report", status=422)
    c("GET", "/runs/{run_id}/charts/{name}.svg", f"/runs/{sim}/charts/nope.svg", status=404)
    c("POST", "/risk/report/html", json={"coins": ["NOPE"]}, status=404)


def test_every_route_is_called(client: TestClient) -> None:
    test_every_json_route_answers_what_the_document_declares(client)
    doc = client.get("/openapi.json").json()
    routes = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    CALLED.add(("get", "/metrics"))
    assert routes - CALLED == set(), f"routes without a contract call: {routes - CALLED}"
