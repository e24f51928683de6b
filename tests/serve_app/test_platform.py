"""The Python client and the report routes against a real ``squall up`` (Ray Serve over
HTTP, warm workers, queued runs): the numbers against the real candle file read with pandas,
the progress of a queued simulation, cancel, every error class with the API's message, and
the example script of ``docs/examples/quickstart.py`` end to end.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from squall import (
    Client,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RunFailedError,
    SquallConnectionError,
)
from tests.serve_app.live_server import ROOT, Platform, free_port

pytestmark = [pytest.mark.ray, pytest.mark.realdata]
BT = {"coin": "BTC", "interval": "1d", "strategy": "ema_cross"}


@pytest.fixture(scope="module")
def api(platform: Platform) -> Client:
    client = Client(platform.base_url, timeout=300)
    yield client  # type: ignore[misc]
    client.close()


def closes(data: Path) -> pd.Series:
    raw = pd.read_csv(data / "binance_spot_BTCUSDT_1d_2017-2026.csv")
    return pd.Series(raw["close"].to_numpy(float), index=pd.to_datetime(raw["timestamp"], utc=True))


def test_candles_are_the_files_bars_paged_over_the_cap(api: Client, shared_data: Path) -> None:
    # the platform caps reads at 1,000 candles: the client learns the cap and pages
    got = api.candles("BTC", "1d", start="2017-08-17", end="2026-01-06")
    want = closes(shared_data)
    assert str(got.index.tz) == "UTC" and got.index.name == "ts"
    assert len(got) == len(want) == 3065
    np.testing.assert_array_equal(got["close"].to_numpy(), want.to_numpy())
    assert (got.index == want.index).all()
    latest = api.candles("BTC", "1d", limit=7000)  # the latest 7,000 asked: the 3,065 there are
    assert len(latest) == 3065 and latest.index[-1] == want.index[-1]
    tail = api.candles("BTC", "1d", end="2025-12-31", limit=3)
    assert list(tail.index) == list(want.loc[:"2025-12-31"].index[-3:])


def test_backtest_result_and_the_registry_agree(api: Client) -> None:
    bt = api.backtest("BTC", "1d", "ema_cross", {"fast": 10, "slow": 40}, fee_bps=5)
    run = api.run(bt.run_id)
    assert run.status == "succeeded" and run.kind == "backtest"
    assert bt.metrics["sharpe"] == run.metrics["sharpe"]  # type: ignore[index]
    assert bt.equity["equity"].iloc[-1] == pytest.approx(bt.metrics["final_equity"], rel=1e-12)
    assert bt.equity.index.equals(run.equity.index) and len(bt.equity) == bt.metrics["bars"]
    assert len(bt.trades) == bt.metrics["trades"]
    assert str(bt.trades["entry_ts"].dt.tz) == "UTC"
    assert isinstance(bt.metrics["max_drawdown_trough_ts"], pd.Timestamp)
    html = api.report_html(bt.run_id)
    assert html.startswith("<!doctype html>") and bt.run_id in html
    assert api.chart(bt.run_id, "equity")[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in api.chart(bt.run_id, "drawdown", "svg")[:300]
    listed = api.runs(kind="backtest", coin="BTC")
    assert bt.run_id in listed.index and listed.loc[bt.run_id, "status"] == "succeeded"


def test_queued_simulation_reports_progress_then_its_result(api: Client) -> None:
    seen: list[tuple[int, int, str]] = []
    sim = api.simulate(
        backtest=BT,
        paths=400_000,
        horizon=365,
        seed=3,
        mode="async",
        on_progress=lambda d, t, u: seen.append((d, t, u)),
        poll_s=0.1,
    )
    assert seen and seen[-1] == (400_000, 400_000, "paths")
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)  # never goes back
    assert sim.result["paths"] == 400_000 and sim.var_99 < 0
    again = api.simulate(backtest=BT, paths=400_000, horizon=365, seed=3)  # same seed, same bits
    assert again.result == sim.result and again.run_id != sim.run_id


def test_errors_carry_the_apis_code_and_message(api: Client, platform: Platform) -> None:
    with pytest.raises(NotFoundError) as nf:
        api.run("no-such-run")
    assert nf.value.status == 404 and nf.value.code == "run_not_found"
    assert "GET /runs lists the runs" in nf.value.message and nf.value.request_id
    with pytest.raises(InvalidRequestError) as bad:
        api.backtest("BTC", "1d", "no_such_strategy")
    assert bad.value.code == "unknown_strategy" and "ema_cross" in bad.value.message
    assert bad.value.body["valid"]
    with pytest.raises(InvalidRequestError) as cap:
        api.simulate(backtest=BT, paths=10**9)
    assert cap.value.code == "invalid_request" and "paths" in cap.value.message
    with pytest.raises(NotFoundError) as coin:
        api.candles("NOPE", "1d")
    assert coin.value.code == "unknown_coin" and "BTC" in coin.value.message
    done = api.backtest("BTC", "1d", "buy_and_hold")
    with pytest.raises(ConflictError) as late:
        api.cancel(done.run_id)
    assert late.value.status == 409 and late.value.code == "run_finished"
    assert "already finished (succeeded)" in late.value.message
    with pytest.raises(SquallConnectionError, match="cannot reach squall"):
        Client(f"http://127.0.0.1:{free_port()}", timeout=2).health()


def test_cancel_a_running_simulation(api: Client, platform: Platform) -> None:
    status, queued = api.post(
        "/risk/simulate",
        {"backtest": BT, "paths": 5_000_000, "horizon": 730, "seed": 1, "mode": "async"},
    )
    assert status == 202 and queued["status"] == "queued"
    run_id = queued["run_id"]
    deadline = time.monotonic() + 120
    while (run := api.run(run_id)).status == "queued":  # cancel it once it runs
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancelled = api.cancel(run_id)
    assert cancelled.raw["cancel_requested"] is True
    with pytest.raises(RunFailedError) as failed:
        api.wait(run_id, timeout_s=120)
    assert failed.value.status == "cancelled", run
    assert failed.value.error == "cancelled on request"
    progress = failed.value.run["progress"] or {"done": 0, "total": 5_000_000}
    assert progress["done"] < progress["total"] == 5_000_000  # it stopped before the end
    with pytest.raises(ConflictError, match="run_not_succeeded"):
        api.report_html(run_id)


def test_the_quickstart_example_runs_end_to_end(platform: Platform, tmp_path: Path) -> None:
    script = ROOT / "docs" / "examples" / "quickstart.py"
    out = tmp_path / "quickstart"
    done = subprocess.run(  # noqa: PLW1510 (the return code is asserted)
        [sys.executable, str(script), "--url", platform.base_url, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.rstrip().endswith("quickstart finished"), done.stdout
    assert "errors are exceptions: 404 run_not_found" in done.stdout
    (report,) = out.glob("backtest-*.html")
    assert report.read_text().startswith("<!doctype html>")
    assert next(out.glob("backtest-*-equity.png")).read_bytes()[:4] == b"\x89PNG"


def test_reports_are_served_by_serve_with_their_media_types(api: Client) -> None:
    sim = api.simulate(backtest=BT, paths=20_000, horizon=90, seed=5)
    r = api.request("GET", f"/risk/simulations/{sim.run_id}/report")
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert str(sim.result["paths"]) in r.text.replace(",", "")
    page = api.request("POST", "/risk/report/html", json={"coins": ["BTC", "ETH"]})
    assert "Risk report: BTC, ETH" in page.text
