"""``squall backtest|walkforward|simulate|risk`` against the routes, on real daily BTC and ETH.

One SQLite database holds the real Binance daily candles of ``../shared/data``; the CLI
(``serve_app.cli.main``, in this process, no server) and the API (FastAPI's TestClient) share
it. For the same spec the CLI's ``--json`` must equal the route's answer number for number (only
the run id, its times, its duration and where it ran may differ). The tables are checked
against values computed here from the CSV files (buy-and-hold return and drawdown, the
historical VaR quantile, the correlation of the returns), formatted as a user reads them.

The last row of each file is a day still in progress (SOURCES.md): every request ends on
2026-01-05, the last closed day.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serve_app.api import create_app
from serve_app.cli import main
from serve_app.settings import Settings

pytestmark = pytest.mark.realdata

END = "2026-01-05"
FILES = {
    "BTC": "binance_spot_BTCUSDT_1d_2017-2026.csv",
    "ETH": "binance_spot_ETHUSDT_1d_2017-2026.csv",
}
VOLATILE = {"run_id", "created_at", "created_at_unix", "duration_s", "execution", "timings"}


@pytest.fixture(scope="module")
def settings(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    url = f"sqlite:///{tmp_path_factory.mktemp('research-cli') / 'squall.db'}"
    s = Settings(database_url=url, coins=["BTC", "ETH"], intervals=["1d"], log_level="WARNING")
    for name in FILES.values():
        assert main(["import", str(shared_data / name)], settings=s) == 0
    return s


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, configure_logs=False)) as c:
        yield c


@pytest.fixture(scope="module")
def closes(shared_data: Path) -> dict[str, pd.Series]:
    """Closed daily closes by date, from the files themselves."""
    out = {}
    for coin, name in FILES.items():
        df = pd.read_csv(shared_data / name, parse_dates=["timestamp"]).set_index("timestamp")
        out[coin] = df["close"].loc[:END]
    return out


def cli(capsys: pytest.CaptureFixture[str], settings: Settings, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv), settings=settings)
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], settings: Settings, *argv: str) -> Any:
    code, out, err = cli(capsys, settings, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def stable(body: dict[str, Any]) -> dict[str, Any]:
    """An answer without what differs between two runs of one request."""
    return {k: v for k, v in body.items() if k not in VOLATILE}


def spec_file(tmp_path: Path, name: str, body: dict[str, Any]) -> str:
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(body))
    else:
        import yaml

        path.write_text(yaml.safe_dump(body))
    return str(path)


def shown(value: float, kind: str = "pct") -> str:
    """A number as the tables print it."""
    return f"{value * 100:+.2f}%" if kind == "pct" else f"{value:.2f}"


def row(label: str, value: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(label)}\s+{re.escape(value)}$", re.M)


def total_runs(client: TestClient) -> int:
    return int(client.get("/runs", params={"limit": 1}).json()["total"])


# -------------------------------------------------------------------------------- backtest
def test_backtest_run_equals_the_route(
    capsys: pytest.CaptureFixture[str], settings: Settings, client: TestClient, tmp_path: Path
) -> None:
    spec = {"coin": "BTC", "interval": "1d", "strategy": "ema_cross",
            "params": {"fast": 12, "slow": 99}, "end": END, "fee_bps": 10}  # fmt: skip
    path = spec_file(tmp_path, "bt.json", spec)
    mine = cli_json(capsys, settings, "backtest", "run", "--spec", path, "-p", "slow=26",
                    "--slippage-bps", "2")  # fmt: skip
    # the flags override the spec: the route gets the merged body
    body = {**spec, "params": {"fast": 12, "slow": 26}, "slippage_bps": 2}
    r = client.post("/backtest/run", json=body)
    assert r.status_code == 200, r.text
    theirs = r.json()
    assert mine["run_id"] != theirs["run_id"]
    assert stable(mine) == stable(theirs)  # metrics, equity, trades, used: bit for bit
    assert mine["used"]["params"]["slow"] == 26 and mine["used"]["data"]["last_ts"].startswith(END)
    assert mine["metrics"]["trades"] > 10


def test_backtest_table_shows_the_hand_computed_buy_and_hold(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    client: TestClient,
    closes: dict[str, pd.Series],
) -> None:
    code, out, _ = cli(capsys, settings, "backtest", "run", "--coin", "BTC", "--interval", "1d",
                       "--strategy", "buy_and_hold", "--fee-bps", "0", "--end", END)  # fmt: skip
    assert code == 0
    c = closes["BTC"].to_numpy()
    # held from the first bar without costs: equity is close / first close
    assert row("total return", shown(c[-1] / c[0] - 1)).search(out), out
    assert row("max drawdown", shown((c / np.maximum.accumulate(c) - 1).min())).search(out), out
    assert row("trades", "1").search(out) and row("exposure", "100.00%").search(out)
    assert f"{len(c)} candles 2017-08-17 .. {END}" in out
    run_id = re.search(r"squall backtest show (\S+)", out)
    assert run_id, out
    # recorded in the database the API serves: found again over HTTP
    again = client.get(f"/runs/{run_id.group(1)}").json()
    assert again["kind"] == "backtest" and again["strategy"] == "buy_and_hold"
    assert f"GET /runs/{run_id.group(1)}" in out


# ---------------------------------------------------------------------------- walkforward
def test_walkforward_equals_the_route_with_progress(
    capsys: pytest.CaptureFixture[str], settings: Settings, client: TestClient, tmp_path: Path
) -> None:
    spec = {"coin": "BTC", "interval": "1d", "strategy": "ema_cross", "end": END,
            "grid": {"fast": [5, 20], "slow": [50, 100]}, "train_bars": 730, "test_bars": 365,
            "purge_bars": 5}  # fmt: skip
    path = spec_file(tmp_path, "wf.yaml", spec)
    code, out, err = cli(capsys, settings, "walkforward", "--spec", path, "--json")
    assert code == 0, err
    mine = json.loads(out)
    r = client.post("/backtest/walkforward", json=spec)
    assert r.status_code == 200, r.text
    theirs = r.json()
    assert stable(mine) == stable(theirs)
    folds = len(theirs["folds"])
    assert folds == (3064 - 730 - 5) // 365  # 3064 closed days: whole test windows only
    # progress on stderr (not a terminal: one line per step), and the registry's progress
    assert f"{folds}/{folds} folds" in err
    run = client.get(f"/runs/{mine['run_id']}").json()
    assert run["progress"] == {"done": folds, "total": folds, "unit": "folds"}

    code, out, _ = cli(capsys, settings, "walkforward", "--spec", path, "--quiet")
    assert code == 0
    for f in theirs["folds"]:
        line = next(ln for ln in out.splitlines() if ln.startswith(f"{f['index']} "))
        assert shown(f["oos_metrics"]["total_return"]) in line
        assert f"fast={f['chosen_params']['fast']} slow={f['chosen_params']['slow']}" in line
    oos = theirs["oos"]["metrics"]
    assert row("total return", shown(oos["total_return"])).search(out), out
    assert row("Sharpe", shown(oos["sharpe"], "ratio")).search(out)
    assert "stitched out-of-sample" in out and "squall backtest show" in out


# ------------------------------------------------------------------------------ simulate
def test_simulate_equals_the_route(
    capsys: pytest.CaptureFixture[str], settings: Settings, client: TestClient
) -> None:
    mine = cli_json(capsys, settings, "simulate", "--coin", "BTC", "--interval", "1d",
                    "--strategy", "ema_cross", "--end", END, "--paths", "4000", "--horizon",
                    "180", "--seed", "11", "--set", "bootstrap.kind=circular",
                    "--set", "shocks.leverage=2")  # fmt: skip
    body = {"backtest": {"coin": "BTC", "interval": "1d", "strategy": "ema_cross", "end": END},
            "paths": 4000, "horizon": 180, "seed": 11, "bootstrap": {"kind": "circular"},
            "shocks": {"leverage": 2}}  # fmt: skip
    r = client.post("/risk/simulate", json=body)
    assert r.status_code == 200, r.text
    theirs = r.json()
    assert stable(mine) == stable(theirs)
    assert mine["result"]["paths"] == 4000 and mine["used"]["shocks"]["leverage"] == 2


def test_simulate_table_from_a_recorded_run(
    capsys: pytest.CaptureFixture[str], settings: Settings, client: TestClient
) -> None:
    # long only: a short rsi_mr is ruined in the 2017 rally (a -100% bar cannot be resampled)
    spec = {"coin": "BTC", "interval": "1d", "end": END, "strategy": "rsi_mr",
            "params": {"long_only": 1}}  # fmt: skip
    run = client.post("/backtest/run", json=spec).json()
    code, out, err = cli(capsys, settings, "simulate", "--run-id", run["run_id"], "--paths",
                         "3000", "--horizon", "90", "--seed", "3")  # fmt: skip
    assert code == 0, err
    theirs = client.post(
        "/risk/simulate", json={"run_id": run["run_id"], "paths": 3000, "horizon": 90, "seed": 3}
    ).json()["result"]
    assert row("VaR 99%", shown(theirs["horizon_return"]["var_99"])).search(out)
    assert row("max drawdown, median path", shown(theirs["max_drawdown"]["p50"])).search(out)
    ruin = f"{theirs['ruin_probability'] * 100:.2f}%"
    assert row("ruin probability (equity <= 0.5)", ruin).search(out), out
    assert f"of run {run['run_id']}" in out
    assert "3000/3000 paths" in err


# ---------------------------------------------------------------------------------- risk
def test_risk_report_equals_the_route_and_the_quantile(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    client: TestClient,
    closes: dict[str, pd.Series],
) -> None:
    mine = cli_json(capsys, settings, "risk", "report", "--coin", "BTC,ETH", "--end", END,
                    "--level", "0.95", "--level", "0.99", "--weight", "BTC=0.6",
                    "--weight", "ETH=0.4")  # fmt: skip
    body = {"coins": ["BTC", "ETH"], "interval": "1d", "end": END, "levels": [0.95, 0.99],
            "weights": {"BTC": 0.6, "ETH": 0.4}}  # fmt: skip
    theirs = client.post("/risk/report", json=body).json()
    assert stable(mine) == stable(theirs)
    assert mine["n_returns"] == 365 and mine["portfolio"]["weights"] == {"BTC": 0.6, "ETH": 0.4}

    code, out, _ = cli(capsys, settings, "risk", "report", "--coin", "BTC", "--end", END)
    assert code == 0
    r = closes["BTC"].pct_change().dropna().to_numpy()[-365:]
    line = next(ln for ln in out.splitlines() if ln.startswith("0.99 "))
    assert line.split()[1] == shown(float(np.quantile(r, 0.01)))  # VaR historical, 99%
    assert line.split()[4] == shown(float(r[r <= np.quantile(r, 0.01)].mean()))  # ES


def test_correlation_equals_the_route_and_numpy(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    client: TestClient,
    closes: dict[str, pd.Series],
) -> None:
    mine = cli_json(capsys, settings, "risk", "correlation", "--coin", "BTC", "--coin", "ETH",
                    "--end", END, "--window", "500")  # fmt: skip
    params = {"coins": "BTC,ETH", "interval": "1d", "end": END, "window": 500}
    theirs = client.get("/risk/correlation", params=params).json()
    assert stable(mine) == stable(theirs)
    code, out, _ = cli(capsys, settings, "risk", "correlation", "--coin", "BTC,ETH", "--end", END,
                       "--window", "500")  # fmt: skip
    assert code == 0
    r = pd.DataFrame({c: s.pct_change() for c, s in closes.items()}).dropna().to_numpy()[-500:]
    rho = np.corrcoef(r.T)[0, 1]
    assert re.search(rf"^BTC\s+1\.00\s+{rho:.2f}$", out, re.M), out


# ------------------------------------------------------------------------------ registry
def test_list_show_compare_rerun_equal_the_routes(
    capsys: pytest.CaptureFixture[str], settings: Settings, client: TestClient
) -> None:
    base = ("backtest", "run", "--coin", "ETH", "--interval", "1d", "--strategy", "bb_break",
            "--end", END, "--json")  # fmt: skip
    a = cli_json(capsys, settings, *base[:-1], "-p", "n=20")["run_id"]
    b = cli_json(capsys, settings, *base[:-1], "-p", "n=40")["run_id"]
    c = client.post(
        "/backtest/run",
        json={
            "coin": "ETH",
            "interval": "1d",
            "end": END,
            "strategy": "bb_break",
            "params": {"n": 30},
        },
    )
    made_by_route = c.json()["run_id"]

    page = cli_json(capsys, settings, "backtest", "list", "--coin", "eth", "--limit", "5")
    assert page == client.get("/runs", params={"coin": "eth", "limit": 5}).json()
    newest = [r["run_id"] for r in page["runs"]]
    assert set(newest[:3]) == {made_by_route, a, b}  # newest first (ties within a second)
    code, out, _ = cli(capsys, settings, "backtest", "list", "-q", "--coin", "ETH", "--limit", "2")
    assert code == 0 and out.split() == newest[:2]

    # a run the API made, read by the CLI (and the other way round): one registry
    for run_id in (made_by_route, a):
        detail = cli_json(capsys, settings, "backtest", "show", run_id)
        assert detail == client.get(f"/runs/{run_id}").json()
    code, out, _ = cli(capsys, settings, "backtest", "show", a)
    metrics = client.get(f"/runs/{a}").json()["metrics"]
    assert code == 0 and row("total return", shown(metrics["total_return"])).search(out)

    both = cli_json(capsys, settings, "backtest", "compare", a, b)
    assert both == client.get("/backtest/compare", params={"ids": f"{a},{b}"}).json()
    code, out, _ = cli(capsys, settings, "backtest", "compare", f"{a},{b}")
    assert code == 0 and re.search(r"^params\.n\s+20\s+40$", out, re.M), out

    again = cli_json(capsys, settings, "backtest", "rerun", a)
    route = client.post(f"/backtest/runs/{a}/rerun").json()
    assert again["identical"] and route["identical"]
    assert stable(again["run"]) == stable(route["run"])
    assert {k: v for k, v in again.items() if k != "run"} == {
        k: v for k, v in route.items() if k != "run"
    }
    code, out, _ = cli(capsys, settings, "backtest", "rerun", a)
    assert code == 0 and f"rerun of {a} as " in out and ": identical" in out


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("argv", "status", "says"),
    [
        (["backtest", "run", "--coin", "BTC", "--interval", "1d", "--strategy", "ema_cross",
          "--set", "fees=3"], 2, "fees: Extra inputs are not permitted"),
        (["backtest", "run", "--coin", "BTC", "--interval", "1d"], 2, "strategy: Field required"),
        (["backtest", "run", "--spec", "@list"], 2, "the spec is a mapping"),
        (["backtest", "run", "--spec", "no-such-spec.json"], 2, "no such file"),
        (["backtest", "run", "--coin", "BTC", "--interval", "1d", "--strategy", "ema_cross",
          "-p", "fast"], 2, "--param takes KEY=VALUE"),
        (["backtest", "run", "--coin", "DOGE", "--interval", "1d", "--strategy", "ema_cross"],
         1, "unknown coin 'DOGE'"),
        (["backtest", "run", "--coin", "BTC", "--interval", "1d", "--strategy", "nope"],
         1, "unknown strategy 'nope'"),
        (["backtest", "run", "--coin", "BTC", "--interval", "1d", "--strategy", "ema_cross",
          "--start", "2025-12-20", "--end", END], 1, "ask for start <="),
        (["walkforward", "--coin", "BTC", "--interval", "1d", "--strategy", "ema_cross",
          "--grid", "fast=5,10", "--train-bars", "5000", "--test-bars", "500"], 1, "train"),
        (["simulate", "--coin", "BTC", "--interval", "1d", "--strategy", "ema_cross",
          "--paths", "0"], 2, "paths: Input should be greater than or equal to 1"),
        (["risk", "report", "--coin", "BTC", "--level", "0.3"], 2, "levels must lie"),
        (["risk", "correlation", "--coin", "BTC"], 1, "give 2 to 50"),
        (["backtest", "show", "no-such-run"], 1, "no run with id 'no-such-run'"),
        (["backtest", "compare", "no-such-run"], 1, "2 to 10 distinct run ids"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_error_and_records_nothing(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    client: TestClient,
    tmp_path: Path,
    argv: list[str],
    status: int,
    says: str,
) -> None:
    if "@list" in argv:
        argv = [str(tmp_path / "list.json") if a == "@list" else a for a in argv]
        (tmp_path / "list.json").write_text("[1, 2]")
    before = total_runs(client)
    code, out, err = cli(capsys, settings, *argv)
    assert code == status, err
    assert err.startswith("squall: ") and err.count("squall: ") == 1 and says in err, err
    assert out == ""
    assert total_runs(client) == before


def test_rerun_of_a_simulation_says_what_can_be_rerun(
    capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    sim = cli_json(capsys, settings, "simulate", "--coin", "BTC", "--interval", "1d",
                   "--strategy", "buy_and_hold", "--end", END, "--paths", "1000",
                   "--horizon", "30", "--quiet")  # fmt: skip
    code, _, err = cli(capsys, settings, "backtest", "rerun", sim["run_id"])
    assert code == 1 and "only backtest and portfolio runs can be re-run" in err
