"""``squall report``: the file it writes is the page the API serves for the same run, with no
server running; charts as PNG/SVG; the risk report from a request body; errors as messages."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ingestion.fileimport import parse_candle_file
from serve_app.api import create_app
from serve_app.cli import main
from serve_app.settings import Settings
from storage.candles import CandleRepository
from storage.engine import make_engine, session_factory, transaction
from storage.migrate import upgrade

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def setup(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    url = f"sqlite:///{tmp_path_factory.mktemp('report-cli') / 'squall.db'}"
    upgrade(url)
    engine = make_engine(url)
    with transaction(session_factory(engine)) as session:
        for coin in ("BTC", "ETH"):
            path = shared_data / f"binance_spot_{coin}USDT_1d_2017-2026.csv"
            CandleRepository(session).upsert(
                parse_candle_file(path, coin=coin, interval="1d").frame
            )
    engine.dispose()
    settings = Settings(database_url=url, coins=["BTC", "ETH"], intervals=["1d"])
    with TestClient(create_app(settings, configure_logs=False, background=False)) as client:
        run = client.post(
            "/backtest/run", json={"coin": "BTC", "interval": "1d", "strategy": "ema_cross"}
        ).json()
        yield settings, client, run["run_id"]


def squall(capsys: pytest.CaptureFixture[str], settings: Settings, *argv: str) -> tuple[int, str]:
    code = main(list(argv), settings=settings)
    return code, capsys.readouterr().err


def test_the_file_is_the_page_the_api_serves(
    setup: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, client, run_id = setup
    out = tmp_path / "r" / "report.html"
    code, err = squall(capsys, settings, "report", run_id, "-o", str(out))
    assert code == 0 and f"wrote backtest report to {out}" in err
    assert out.read_bytes() == client.get(f"/runs/{run_id}/report").content


def test_charts_as_png_and_svg(
    setup: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, _, run_id = setup
    code = main(["report", run_id, "--list"], settings=settings)
    names = capsys.readouterr().out.split()
    assert code == 0 and {"equity", "drawdown", "monthly"} <= set(names)
    png = tmp_path / "eq.png"
    code, _ = squall(
        capsys,
        settings,
        "report",
        run_id,
        "--png",
        "equity",
        "-o",
        str(png),
        "--width",
        "500",
        "--scale",
        "1",
    )
    blob = png.read_bytes()
    assert code == 0 and blob[:8] == b"\x89PNG\r\n\x1a\n"
    assert 500 <= struct.unpack(">I", blob[16:20])[0] <= 600
    svg = tmp_path / "dd.svg"
    code, _ = squall(capsys, settings, "report", run_id, "--svg", "drawdown", "-o", str(svg))
    assert code == 0 and svg.read_text().lstrip().startswith("<svg")


def test_risk_report_from_a_body(
    setup: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, client, _ = setup
    body = {"coins": ["BTC", "ETH"], "window": 200, "end": "2025-06-30T00:00:00Z"}
    spec = tmp_path / "risk.json"
    spec.write_text(json.dumps(body))
    out = tmp_path / "risk.html"
    code, _ = squall(capsys, settings, "report", "--risk", str(spec), "-o", str(out))
    assert code == 0
    assert out.read_bytes() == client.post("/risk/report/html", json=body).content
    code = main(["report", "--risk", json.dumps(body), "-o", "-"], settings=settings)
    assert code == 0 and capsys.readouterr().out == out.read_text()


def test_errors_are_one_line_each(setup: Any, capsys: pytest.CaptureFixture[str]) -> None:
    settings, _, run_id = setup
    code, err = squall(capsys, settings, "report", "nope")
    assert code == 1 and err.startswith("squall: no run with id 'nope'")
    code, err = squall(capsys, settings, "report", run_id, "--png", "nope", "-o", "/dev/null")
    assert code == 1 and "no chart 'nope'" in err and "equity" in err
    code, err = squall(capsys, settings, "report")
    assert code == 1 and "give a RUN_ID or --risk BODY" in err
    code, err = squall(capsys, settings, "report", "--risk", '{"coins": ["BTC"], "levels": [2]}')
    assert code == 1 and "--risk body" in err and "levels" in err
