"""POST /risk/simulate and GET /risk/simulations/{id}, on SQLite and Postgres (in-process
paths: no Ray here; the Ray fan-out is tested in tests/compute/test_simulate.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serve_app.api import create_app
from serve_app.services.requests.simulation import MAX_PATH_STEPS
from serve_app.settings import Settings
from tests.compute.conftest import load_candles
from tests.serve_app.factories import HOUR, T0, seed

RNG = np.random.default_rng(11)
RETURNS = [float(x) for x in RNG.standard_t(4, 400) * 0.02]


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        coins=["BTC"],
        intervals=["1h"],
        log_level="WARNING",
        ingest_enabled=False,
    )
    with TestClient(create_app(settings, configure_logs=False)) as c:
        yield c


def body(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"returns": RETURNS, "horizon": 30, "paths": 1500, "seed": 3}
    out.update(overrides)
    return out


def test_simulate_returns_statistics_and_records_the_run(client: TestClient) -> None:
    r = client.post("/risk/simulate", json=body(shocks={"leverage": 2, "maintenance_margin": 0.1}))
    assert r.status_code == 200, r.text
    out = r.json()
    res = out["result"]
    assert out["status"] == "succeeded" and res["paths"] == 1500
    dd = res["max_drawdown"]
    assert dd["p5"] <= dd["p25"] <= dd["p50"] <= dd["p75"] <= dd["p95"] <= dd["p99"] <= 0
    hr = res["horizon_return"]
    assert hr["es_99"] <= hr["var_99"] < 0
    assert 0 <= res["ruin_probability"] <= 1 and 0 <= res["liquidation_probability"] <= 1
    assert set(res["time_under_water"]) >= {"mean", "median", "p95", "longest"}
    assert res["equity_fan"][-1]["step"] == 30
    used = out["used"]
    assert used["seed"] == 3 and used["bootstrap"]["block_length"] >= 1
    assert used["prng"]["generator"].startswith("splitmix64")
    assert used["source"]["labels"]["vol_regime"] in ("low", "normal", "high", "missing")
    # recorded: GET gives the same result, a rerun gives the same bytes
    got = client.get(f"/risk/simulations/{out['run_id']}").json()
    assert got["status"] == "succeeded" and got["result"] == res
    again = client.post(
        "/risk/simulate", json=body(shocks={"leverage": 2, "maintenance_margin": 0.1})
    )
    assert again.json()["result"] == res and again.json()["run_id"] != out["run_id"]


def test_async_run_answers_202_and_reports_progress(client: TestClient) -> None:
    r = client.post("/risk/simulate", json=body(mode="async", paths=3000))
    assert r.status_code == 202, r.text
    run = r.json()
    assert run["status"] == "queued" and run["poll"] == f"/risk/simulations/{run['run_id']}"
    deadline = time.monotonic() + 60
    while True:
        got = client.get(run["poll"]).json()
        assert got["progress"]["total"] == 3000
        if got["status"] not in ("queued", "running"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert got["status"] == "succeeded" and got["progress"]["done"] == 3000
    sync = client.post("/risk/simulate", json=body(paths=3000)).json()
    assert got["result"] == sync["result"]


def test_regime_switching_generator(client: TestClient) -> None:
    close = load_candles("btc_1d")["close"][-801:]
    returns = (np.diff(close) / close[:-1]).tolist()
    r = client.post(
        "/risk/simulate",
        json=body(
            returns=returns, generator="regime_switching", regime={"n_states": 2, "restarts": 2}
        ),
    )
    assert r.status_code == 200, r.text
    model = r.json()["used"]["regime_switching"]["model"]
    assert model["n_states"] == 2 and model["volatility"][0] < model["volatility"][1]


@pytest.mark.parametrize(
    ("overrides", "status", "needle"),
    [
        ({"paths": 10_000_000, "horizon": 3650}, 422, f"{MAX_PATH_STEPS:,}"),
        ({"paths": 20_000_000}, 422, "paths"),
        ({"horizon": 0}, 422, "horizon"),
        ({"returns": None}, 422, "exactly one source"),
        ({"run_id": "x"}, 422, "exactly one source"),
        ({"pathz": 5}, 422, "pathz"),
        ({"returns": [0.01] * 5}, 422, "at least 30"),
        ({"returns": [0.01] * 40 + [-1.5]}, 422, "position 40"),
        ({"shocks": {"spike_mult": 2, "spike_at": [3]}}, 422, "spike_len"),
        ({"shocks": {"gap_size": -0.2, "gap_at": [99]}}, 422, "gap_at"),
        ({"bootstrap": {"regime_weighting": "mix"}}, 422, "regime_mix"),
        (
            {"returns": [0.01, -0.01] * 60, "bootstrap": {"regime_weighting": "current"}},
            422,
            "regime",
        ),
        ({"returns": None, "run_id": "no-such-run"}, 404, "no-such-run"),
        ({"returns": [0.01] * 60, "generator": "regime_switching"}, 422, "constant"),
        ({"bootstrap": {"block_length": 5000}}, 422, "block length"),
    ],
)
def test_bad_requests_say_what_to_fix(
    client: TestClient, overrides: dict[str, Any], status: int, needle: str
) -> None:
    r = client.post("/risk/simulate", json=body(**overrides))
    assert r.status_code == status, r.text
    assert needle in r.json()["message"]


def test_unknown_simulation_is_404(client: TestClient) -> None:
    r = client.get("/risk/simulations/nope")
    assert r.status_code == 404 and r.json()["error"] == "simulation_not_found"


def test_backtest_spec_and_run_id_sources_give_the_same_numbers(
    client: TestClient, database_url: str
) -> None:
    rng = np.random.default_rng(5)
    n = 300
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    seed(
        database_url,
        [
            {
                "coin": "BTC",
                "interval": "1h",
                "ts": T0 + i * HOUR,
                "open": open_[i],
                "high": max(open_[i], close[i]) * 1.001,
                "low": min(open_[i], close[i]) * 0.999,
                "close": close[i],
                "volume_base": 1.0,
                "volume_quote": None,
                "trade_count": None,
                "source": "test",
            }
            for i in range(n)
        ],
    )
    spec = {"coin": "BTC", "interval": "1h", "strategy": "buy_and_hold", "fee_bps": 0}
    bt = client.post("/backtest/run", json=spec)
    assert bt.status_code == 200, bt.text
    by_spec = client.post("/risk/simulate", json=body(returns=None, backtest=spec))
    assert by_spec.status_code == 200, by_spec.text
    by_run = client.post("/risk/simulate", json=body(returns=None, run_id=bt.json()["run_id"]))
    assert by_run.status_code == 200, by_run.text
    assert by_spec.json()["result"] == by_run.json()["result"]
    src = by_spec.json()["used"]["source"]
    assert src["kind"] == "backtest" and src["periods_per_year"] == 8760
    # buy and hold: the strategy's returns are the close-to-close returns after the entry
    assert src["returns"] == n - 1


def test_swagger_documents_every_field(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/risk/simulate"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schemas = spec["components"]["schemas"]
    for name in (ref.rsplit("/", 1)[-1], "BootstrapSpec", "RegimeSpec", "ShocksSpec"):
        schema = schemas[name]
        assert schema["additionalProperties"] is False, name
        missing = [k for k, v in schema["properties"].items() if "description" not in v]
        assert missing == [], (name, missing)
    assert schemas[ref.rsplit("/", 1)[-1]].get("examples")
    assert "202" in op["responses"] and "/risk/simulations/{run_id}" in spec["paths"]
