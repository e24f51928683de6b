"""The report routes on real runs: what each page embeds is the run's JSON (as ``GET
/runs/{id}`` answers it) and the closes of the real candle file; the images are real PNG and
SVG; every error is the domain error with its code.

Real Binance daily candles (``../shared/data``) in SQLite; the runs are made by the API.
"""

from __future__ import annotations

import json
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from ingestion.fileimport import parse_candle_file
from serve_app.api import create_app
from serve_app.services.runs import start_run
from serve_app.settings import Settings
from storage.candles import CandleRepository
from storage.engine import make_engine, session_factory, transaction
from storage.migrate import upgrade
from storage.runs import RunRepository

pytestmark = pytest.mark.realdata
FILES = {
    "BTC": "binance_spot_BTCUSDT_1d_2017-2026.csv",
    "ETH": "binance_spot_ETHUSDT_1d_2017-2026.csv",
}
BT = {
    "coin": "BTC",
    "interval": "1d",
    "start": "2021-01-01T00:00:00Z",
    "end": "2024-12-31T00:00:00Z",
    "strategy": "ema_cross",
    "params": {"fast": 10, "slow": 40},
}


def payload(html: str) -> dict[str, Any]:
    """The report's embedded JSON block (specs and column-wise data sets)."""
    m = re.search(r'<script type="application/json" id="squall-report">(.*?)</script>', html, re.S)
    assert m is not None
    return json.loads(m.group(1))  # type: ignore[no-any-return]


def data_value(html: str, key: str) -> float:
    m = re.search(rf'data-key="{key}"[^>]*data-value="([^"]+)"', html)
    assert m is not None, key
    return float(m.group(1))


def file_closes(data: Path, name: str) -> pd.Series:
    """The closes of a real file, read with pandas alone (the independent reference)."""
    raw = pd.read_csv(data / name)
    ts = (pd.to_datetime(raw["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(
        seconds=1
    )
    return pd.Series(raw["close"].to_numpy(float), index=ts.to_numpy())


@pytest.fixture(scope="module")
def app(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    url = f"sqlite:///{tmp_path_factory.mktemp('report-routes') / 'squall.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        for coin, name in FILES.items():
            frame = parse_candle_file(shared_data / name, coin=coin, interval="1d").frame
            CandleRepository(session).upsert(frame)
    settings = Settings(database_url=url, coins=list(FILES), intervals=["1d"], ingest_enabled=False)
    with TestClient(create_app(settings, configure_logs=False, background=False)) as client:
        yield client, sessions
    engine.dispose()


@pytest.fixture(scope="module")
def client(app: Any) -> TestClient:
    return app[0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def backtest(client: TestClient) -> dict[str, Any]:
    r = client.post("/backtest/run", json=BT)
    assert r.status_code == 200, r.text
    full = client.get(f"/runs/{r.json()['run_id']}", params={"equity_points": 100_000})
    return full.json()  # type: ignore[no-any-return]


def test_backtest_page_embeds_the_run_and_the_closes_of_its_window(
    client: TestClient, backtest: dict[str, Any], shared_data: Path
) -> None:
    run_id = backtest["run_id"]
    r = client.get(f"/backtest/runs/{run_id}/report")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    html = r.text
    assert "https://" not in html.split('id="squall-report"')[1]  # no URL in the data
    data = payload(html)["datasets"]
    curve = data["curve"]
    eq = backtest["equity"]
    assert curve["equity"][-1] == eq["equity"][-1]
    assert curve["t"][-1] == eq["ts_unix"][-1] * 1000
    assert min(curve["drawdown"]) == pytest.approx(backtest["metrics"]["max_drawdown"], rel=1e-12)
    assert data_value(html, "max_drawdown") == backtest["metrics"]["max_drawdown"]
    # buy-and-hold = capital x close / first close, closes from the real file (pandas)
    closes = file_closes(shared_data, FILES["BTC"])
    t = np.asarray(curve["t"]) // 1000
    want = closes.loc[t].to_numpy() / closes.loc[t[0]] * backtest["metrics"]["initial_capital"]
    np.testing.assert_allclose(np.asarray(curve["benchmark"], float), want, rtol=1e-12)
    assert "no prices" not in html.lower()
    # the same page from the any-kind route
    assert client.get(f"/runs/{run_id}/report").text == html


def test_walkforward_and_simulation_pages(client: TestClient) -> None:
    wf = client.post(
        "/backtest/walkforward",
        json={
            **{k: v for k, v in BT.items() if k != "params"},
            "grid": {"fast": [5, 10], "slow": [30, 60]},
            "train_bars": 365,
            "test_bars": 180,
        },
    ).json()
    html = client.get(f"/backtest/runs/{wf['run_id']}/report").text
    assert payload(html)["datasets"]["curve"]["equity"][-1] == wf["oos"]["equity"]["equity"][-1]
    assert data_value(html, "max_drawdown") == wf["oos"]["metrics"]["max_drawdown"]
    sim = client.post(
        "/risk/simulate", json={"backtest": BT, "horizon": 60, "paths": 5_000, "seed": 11}
    ).json()
    page = client.get(f"/risk/simulations/{sim['run_id']}/report")
    assert page.status_code == 200
    res = sim["result"]
    assert data_value(page.text, "ruin_probability") == res["ruin_probability"]
    assert data_value(page.text, "var_99") == res["horizon_return"]["var_99"]
    assert f"{res['paths']:,d} paths" in page.text


def test_risk_page_draws_the_correlation_of_the_same_window(client: TestClient) -> None:
    body = {
        "coins": ["BTC", "ETH"],
        "window": 365,
        "end": "2025-06-30T00:00:00Z",
        "weights": {"BTC": 0.6, "ETH": 0.4},
    }
    r = client.post("/risk/report/html", json=body, params={"download": "true"})
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="squall-risk.html"'
    corr = client.get(
        "/risk/correlation", params={"coins": "BTC,ETH", "window": 365, "end": body["end"]}
    ).json()
    data = payload(r.text)["datasets"]
    c = data["correlation"]
    cells = {(a, b): v for a, b, v in zip(c["a"], c["b"], c["rho"], strict=True)}
    assert cells[("BTC", "ETH")] == corr["matrix"][0][1]
    # the same numbers as POST /risk/report
    rep = client.post("/risk/report", json=body).json()
    assert rep["n_returns"] == corr["n_returns"] == 365
    assert f"{rep['n_returns']:,d} 1d returns" in r.text


def _png_size(blob: bytes) -> tuple[int, int]:
    assert blob[:8] == b"\x89PNG\r\n\x1a\n" and blob[12:16] == b"IHDR"
    return struct.unpack(">II", blob[16:24])


def test_charts_as_png_and_svg(client: TestClient, backtest: dict[str, Any]) -> None:
    run_id = backtest["run_id"]
    png = client.get(f"/runs/{run_id}/charts/equity.png", params={"width": 600, "scale": 1})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    width, height = _png_size(png.content)
    assert 600 <= width <= 700 and height > 100  # the chart plus its axis labels
    assert _png_size(client.get(f"/runs/{run_id}/charts/equity.png").content)[0] >= 2 * 860
    svg = client.get(f"/runs/{run_id}/charts/drawdown.svg", params={"download": True})
    assert svg.headers["content-type"] == "image/svg+xml"
    assert svg.headers["content-disposition"].endswith(f'-{run_id}-drawdown.svg"')
    root = ET.fromstring(svg.content)
    assert root.tag.endswith("svg")
    texts = [t.text or "" for t in root.iter() if t.tag.endswith("text")]
    mdd = backtest["metrics"]["max_drawdown"]
    assert any(f"{mdd * 100:.2f}%".replace("-", "\u2212") in t for t in texts), texts


def test_errors_name_what_to_fix(app: Any, backtest: dict[str, Any]) -> None:
    client, sessions = app
    r = client.get("/runs/nope/report")
    assert r.status_code == 404 and r.json()["error"] == "run_not_found"
    r = client.get(f"/runs/{backtest['run_id']}/charts/nope.png")
    assert r.status_code == 404 and r.json()["error"] == "unknown_chart"
    assert "equity" in r.json()["charts"] and "equity" in r.json()["message"]
    assert client.get(f"/runs/{backtest['run_id']}/charts/Bad-Name.png").status_code == 422
    assert client.get(f"/runs/{backtest['run_id']}/charts/equity.png?scale=9").status_code == 422
    r = client.get(f"/risk/simulations/{backtest['run_id']}/report")
    assert r.status_code == 422 and r.json()["error"] == "wrong_run_kind"
    assert f"/runs/{backtest['run_id']}/report" in r.json()["message"]
    running, _ = start_run(sessions, "backtest", {"x": 1}, status="running", coin="BTC")
    with transaction(sessions) as session:
        RunRepository(session).update(running, progress={"done": 3, "total": 10, "unit": "folds"})
    r = client.get(f"/runs/{running}/report")
    assert r.status_code == 409 and r.json()["error"] == "run_not_finished"
    assert "still running (3/10 folds)" in r.json()["message"]
    with transaction(sessions) as session:
        RunRepository(session).update(running, status="failed", error="boom")
    r = client.get(f"/backtest/runs/{running}/report")
    assert r.status_code == 409 and r.json()["error"] == "run_not_succeeded"
    assert "boom" in r.json()["message"]
    sweep, _ = start_run(sessions, "sweep", {"spec": 1}, status="succeeded")
    r = client.get(f"/runs/{sweep}/report")
    assert r.status_code == 422 and r.json()["error"] == "no_report_for_kind"
    empty, _ = start_run(sessions, "backtest", {"x": 2}, status="succeeded", coin="BTC")
    r = client.get(f"/runs/{empty}/report")
    assert r.status_code == 422 and r.json()["error"] == "nothing_to_draw"
    assert "no equity curve" in r.json()["message"]
