"""POST /backtest/run and the run registry endpoints, on SQLite and Postgres.

Expected numbers are computed here by hand from the seeded candles (buy-and-hold equity is
close / the next bar's open; funding is rate x units x close of the bar it settles in), never
read back from the code under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serve_app.api import create_app
from serve_app.settings import Settings
from storage.derivatives import FundingRepository
from storage.engine import make_engine, session_factory, transaction
from tests.serve_app.factories import HOUR, T0, seed

N = 120


def walk(n: int = N, *, coin: str = "BTC", seed_: int = 5) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed_)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]] * (1 + rng.normal(0, 0.001, n))
    high = np.maximum(open_, close) * 1.002
    low = np.minimum(open_, close) * 0.998
    return [
        {"coin": coin, "interval": "1h", "ts": T0 + i * HOUR, "open": open_[i], "high": high[i],
         "low": low[i], "close": close[i], "volume_base": 1.0, "volume_quote": None,
         "trade_count": None, "source": "test"}
        for i in range(n)
    ]  # fmt: skip


BARS = walk()
OPEN = np.array([b["open"] for b in BARS])
CLOSE = np.array([b["close"] for b in BARS])


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url, coins=["BTC", "ETH"], intervals=["1h"], log_level="WARNING"
    )
    with TestClient(create_app(settings, configure_logs=False)) as c:
        yield c


@pytest.fixture
def btc(database_url: str) -> None:
    seed(database_url, BARS)


def body(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "coin": "BTC",
        "interval": "1h",
        "strategy": "ema_cross",
        "params": {"fast": 5, "slow": 20},
        "fee_bps": 10,
    }
    out.update(overrides)
    return out


# ----------------------------------------------------------------------------- the contract
def test_query_parameters_get_400_use_json_body(client: TestClient, btc: None) -> None:
    r = client.post("/backtest/run?coin=BTC&interval=1h&strategy=ema_cross")
    assert r.status_code == 400
    err = r.json()
    assert err["error"] == "use JSON body"
    assert "JSON body" in err["message"] and "coin" in err["message"]
    assert err["query_parameters"] == ["coin", "interval", "strategy"]
    # even with a valid body, a query string is refused (one way to send a request)
    r = client.post("/backtest/run?fee_bps=0", json=body())
    assert r.status_code == 400 and r.json()["error"] == "use JSON body"
    r = client.post("/backtest/walkforward?coin=BTC")
    assert r.status_code == 400 and r.json()["error"] == "use JSON body"


def test_swagger_shows_one_body_schema_and_no_query_parameters(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/backtest/run"]["post"]
    assert "parameters" not in op or op["parameters"] == []
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert schema["additionalProperties"] is False
    assert all("description" in p for p in schema["properties"].values())
    assert schema.get("examples")


def test_unknown_field_is_422_naming_it(client: TestClient, btc: None) -> None:
    r = client.post("/backtest/run", json=body(fees=3))
    assert r.status_code == 422
    assert "fees" in r.json()["message"]


def test_insufficient_data_says_how_to_fix_it(client: TestClient, btc: None) -> None:
    start = T0 + (N - 10) * HOUR  # 10 candles in the window; ema_cross slow=20 needs 21
    r = client.post("/backtest/run", json=body(start=start))
    assert r.status_code == 422
    err = r.json()
    assert err["error"] == "insufficient_data"
    latest = T0 + (N - 1) * HOUR
    # EMA(20) is seeded by the SMA of its first 20 closes: defined at bar 19, it executes
    # at bar 20's open, so 21 candles give the first traded bar
    assert err["required_candles"] == 21
    assert err["received_candles"] == 10
    assert err["required_lookback_s"] == 21 * HOUR
    assert err["latest_ts_unix"] == latest
    assert err["latest_ts"] == pd.Timestamp(latest, unit="s").strftime("%Y-%m-%dT%H:%M:%SZ")
    assert err["suggested_start_unix"] == latest - 20 * HOUR
    assert err["suggested_start"].endswith("Z")
    # the suggestion works
    r = client.post("/backtest/run", json=body(start=err["suggested_start"]))
    assert r.status_code == 200, r.text
    assert r.json()["used"]["data"]["candles"] == 21


def test_no_candles_at_all_is_insufficient_data(client: TestClient, btc: None) -> None:
    r = client.post("/backtest/run", json=body(coin="ETH"))
    assert r.status_code == 422
    err = r.json()
    assert err["error"] == "insufficient_data"
    assert err["received_candles"] == 0 and err["latest_ts"] is None
    assert "import" in err["message"]


@pytest.mark.parametrize(
    ("change", "code", "needle"),
    [
        ({"strategy": "moon"}, "unknown_strategy", "valid strategies"),
        ({"params": {"fast": 5, "slowest": 20}}, "invalid_parameter", "slowest"),
        ({"params": {"fast": 0}}, "invalid_parameter", "fast must be in"),
        ({"fee_bps": -1}, "invalid_request", "fee_bps"),
        ({"slippage_bps": -0.5}, "invalid_request", "slippage_bps"),
        ({"fraction": 2.0}, "invalid_costs_or_sizing", "fraction"),
        ({"interval": "7m"}, "unknown_interval", "valid intervals"),
        ({"start": "yesterday"}, "invalid_time", "start"),
    ],
)
def test_bad_input_is_422_saying_what_to_fix(
    client: TestClient, btc: None, change: dict[str, Any], code: str, needle: str
) -> None:
    r = client.post("/backtest/run", json=body(**change))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == code
    assert needle in r.json()["message"]


def test_unknown_coin_is_404_listing_known(client: TestClient, btc: None) -> None:
    r = client.post("/backtest/run", json=body(coin="NOPE"))
    assert r.status_code == 404 and "BTC" in r.json()["known_coins"]


# ------------------------------------------------------------------------------ the numbers
def test_buy_and_hold_matches_hand_computation_with_funding(
    client: TestClient, btc: None, database_url: str
) -> None:
    # funding settles every 8h; a settlement at T is paid by the bar with open < T <= open+1h
    settle = np.arange(T0 + 8 * HOUR, T0 + N * HOUR, 8 * HOUR)
    rates = np.linspace(1e-4, 3e-4, len(settle))
    engine = make_engine(database_url)
    with transaction(session_factory(engine)) as s:
        FundingRepository(s).upsert(
            pd.DataFrame({"coin": "BTC", "ts": settle, "funding_rate": rates, "source": "t"})
        )
    engine.dispose()
    r = client.post(
        "/backtest/run", json=body(strategy="buy_and_hold", params={}, fee_bps=0, funding=True)
    )
    assert r.status_code == 200, r.text
    out = r.json()
    units = 1.0 / CLOSE[0]  # buy-and-hold: all in at the first close, the start of the test
    bar_of = (settle - T0) // HOUR - 1  # the bar whose close is at the settlement
    funding = float(np.sum(rates * units * CLOSE[bar_of]))
    assert out["metrics"]["funding_paid"] == pytest.approx(funding, rel=1e-12)
    assert out["used"]["data"]["funding_rows"] == len(settle)
    # equity before funding is close / close[0]; funding is paid in cash along the way
    paid = np.zeros(N)
    np.add.at(paid, bar_of, rates * units * CLOSE[bar_of])
    expected = units * CLOSE - np.cumsum(paid)
    got = np.array(out["equity"]["equity"])
    assert out["equity"]["stride"] == 1 and len(got) == N
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert out["metrics"]["total_return"] == pytest.approx(expected[-1] - 1.0, rel=1e-10)
    # without funding the same run pays none
    r = client.post(
        "/backtest/run", json=body(strategy="buy_and_hold", params={}, fee_bps=0, funding=False)
    )
    assert r.json()["metrics"]["funding_paid"] == 0.0
    assert r.json()["used"]["data"]["funding_rows"] == 0
    assert r.json()["used"]["data"]["fingerprint"] != out["used"]["data"]["fingerprint"]


def test_response_says_what_the_run_used(client: TestClient, btc: None) -> None:
    r = client.post("/backtest/run", json=body(seed=7, equity_points=10, max_trades=1))
    assert r.status_code == 200, r.text
    out = r.json()
    used = out["used"]
    assert used["params"] == {"fast": 5, "slow": 20, "long_only": 0, "vol_gate": 0}
    assert used["seed"] == 7 and used["warmup_bars"] == 19
    assert used["data"]["candles"] == N and used["data"]["missing_bars"] == 0
    assert (
        used["data"]["first_ts_unix"] == T0 and used["data"]["first_ts"] == "2024-03-01T00:00:00Z"
    )
    assert len(used["data"]["fingerprint"]) == 16 and used["code_version"]
    assert used["periods_per_year"] == 8760
    eq = out["equity"]
    assert (
        len(eq["ts"]) <= 10 and eq["ts_unix"][0] == T0 and eq["ts_unix"][-1] == T0 + (N - 1) * HOUR
    )
    assert eq["total_points"] == N
    assert len(out["trades"]) == 1 and out["trades_total"] >= 1
    trade = out["trades"][0]
    assert trade["entry_ts"].endswith("Z") and isinstance(trade["entry_ts_unix"], int)
    assert out["metrics"]["start_ts_unix"] == T0
    kinds = {row["kind"] for row in out["regime_stats"]}
    assert kinds == {"vol", "trend"}


# ----------------------------------------------------------------------------- the registry
def test_registry_round_trip_list_compare_and_rerun(client: TestClient, btc: None) -> None:
    a = client.post("/backtest/run", json=body()).json()
    b = client.post("/backtest/run", json=body(params={"fast": 8, "slow": 30}, fee_bps=5)).json()
    h = client.post("/backtest/run", json=body(strategy="buy_and_hold", params={})).json()

    got = client.get(f"/backtest/runs/{a['run_id']}", params={"equity_points": 100_000})
    assert got.status_code == 200
    run = got.json()
    assert run["status"] == "succeeded" and run["kind"] == "backtest"
    assert run["metrics"]["sharpe"] == a["metrics"]["sharpe"]
    assert run["equity"]["equity"] == a["equity"]["equity"]
    assert run["request"]["params"] == {"fast": 5, "slow": 20}
    assert (
        run["request"]["fee_bps"] == 10
        and run["data_fingerprint"] == a["used"]["data"]["fingerprint"]
    )
    assert run["trades_total"] == a["trades_total"]

    page = client.get("/backtest/runs", params={"limit": 2}).json()
    assert page["total"] == 3 and page["next_offset"] == 2
    everything = client.get("/backtest/runs").json()["runs"]
    assert {r["run_id"] for r in everything} == {a["run_id"], b["run_id"], h["run_id"]}
    stamps = [r["created_at_unix"] for r in everything]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    assert [r["run_id"] for r in page["runs"]] == [r["run_id"] for r in everything[:2]]
    rest = client.get("/backtest/runs", params={"limit": 2, "offset": 2}).json()
    assert rest["next_offset"] is None and len(rest["runs"]) == 1
    ema = client.get("/backtest/runs", params={"strategy": "ema_cross", "coin": "btc"}).json()
    assert {r["run_id"] for r in ema["runs"]} == {a["run_id"], b["run_id"]}
    assert client.get("/backtest/runs", params={"kind": "sweep"}).json()["total"] == 0
    assert client.get("/backtest/runs", params={"since": "2000-01-01"}).json()["total"] == 3
    assert client.get("/backtest/runs", params={"until": "2000-01-01"}).json()["total"] == 0
    assert client.get("/backtest/runs", params={"kind": "magic"}).status_code == 422

    cmp = client.get("/backtest/compare", params={"ids": f"{a['run_id']},{b['run_id']}"}).json()
    sharpe = next(m for m in cmp["metrics"] if m["metric"] == "sharpe")
    assert sharpe["values"] == [a["metrics"]["sharpe"], b["metrics"]["sharpe"]]
    diffs = {d["field"]: d["values"] for d in cmp["param_diffs"]}
    assert diffs == {"params.fast": [5, 8], "params.slow": [20, 30], "fee_bps": [10.0, 5.0]}
    assert cmp["equity"]["ts_unix"][0] == T0
    assert set(cmp["equity"]["series"]) == {a["run_id"], b["run_id"]}

    again = client.post(f"/backtest/runs/{a['run_id']}/rerun")
    assert again.status_code == 200, again.text
    rr = again.json()
    assert rr["identical"] is True and rr["differences"] == []
    assert rr["same_data"] and rr["same_code"] and rr["equity_identical"] and rr["trades_identical"]
    assert rr["run"]["run_id"] != a["run_id"]
    assert rr["run"]["metrics"] == a["metrics"]
    listed = client.get(f"/backtest/runs/{rr['run']['run_id']}").json()
    assert listed["rerun_of"] == a["run_id"]


def test_rerun_detects_changed_data(client: TestClient, btc: None, database_url: str) -> None:
    a = client.post("/backtest/run", json=body()).json()
    changed = [dict(row) for row in BARS]
    changed[60] = {
        **changed[60],
        "close": changed[60]["close"] * 1.05,
        "high": changed[60]["high"] * 1.05,
    }
    seed(database_url, changed)
    rr = client.post(f"/backtest/runs/{a['run_id']}/rerun").json()
    assert rr["same_data"] is False and rr["identical"] is False
    assert rr["differences"]


def test_registry_errors(client: TestClient, btc: None) -> None:
    r = client.get("/backtest/runs/does-not-exist")
    assert r.status_code == 404 and r.json()["error"] == "run_not_found"
    assert client.post("/backtest/runs/does-not-exist/rerun").status_code == 404
    a = client.post("/backtest/run", json=body()).json()
    r = client.get("/backtest/compare", params={"ids": a["run_id"]})
    assert r.status_code == 422 and r.json()["error"] == "invalid_ids"
    r = client.get("/backtest/compare", params={"ids": f"{a['run_id']},nope"})
    assert r.status_code == 404
