"""The risk API (``POST /risk/report``, ``GET /risk/correlation``) on SQLite and Postgres.

Expected numbers come from independent computations here (pandas ``pct_change``/``corr``,
``numpy.quantile``), never from the endpoint's own code path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serve_app.api import create_app
from serve_app.services import risk as svc
from serve_app.settings import Settings
from storage.engine import make_engine, session_factory, transaction
from tests.serve_app.factories import T0, seed

DAY = 86_400
N = 160
MISSING_ETH = 50  # ETH has no bar at T0 + 50 days: returns ending at 50 and 51 are dropped


def daily(coin: str, seed_: int, skip: int | None = None) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed_)
    close = 100.0 * np.exp(np.cumsum(rng.standard_t(4, N) * 0.03))
    open_ = np.r_[100.0, close[:-1]]
    return [
        {"coin": coin, "interval": "1d", "ts": T0 + i * DAY, "open": open_[i],
         "high": max(open_[i], close[i]) * 1.01, "low": min(open_[i], close[i]) * 0.99,
         "close": close[i], "volume_base": 1.0, "volume_quote": None, "trade_count": None,
         "source": "test"}
        for i in range(N) if i != skip
    ]  # fmt: skip


ROWS = {"BTC": daily("BTC", 1), "ETH": daily("ETH", 2, skip=MISSING_ETH), "SOL": daily("SOL", 3)}


def expected_returns(coins: list[str]) -> pd.DataFrame:
    """pandas: each coin's closes on a daily grid, pct_change, inner join, NaN dropped."""
    cols = {}
    for c in coins:
        s = pd.Series({r["ts"]: r["close"] for r in ROWS[c]})
        cols[c] = s.reindex(range(T0, T0 + N * DAY, DAY)).pct_change()
    return pd.DataFrame(cols).dropna()


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    seed(database_url, [r for rows in ROWS.values() for r in rows])
    settings = Settings(
        database_url=database_url, coins=["BTC", "ETH", "SOL"], intervals=["1d"],
        log_level="WARNING",
    )  # fmt: skip
    with TestClient(create_app(settings, configure_logs=False)) as c:
        yield c


def post(client: TestClient, status: int = 200, **body: Any) -> dict[str, Any]:
    response = client.post("/risk/report", json=body)
    assert response.status_code == status, response.text
    out: dict[str, Any] = response.json()
    return out


def get(client: TestClient, status: int = 200, **params: Any) -> dict[str, Any]:
    response = client.get("/risk/correlation", params=params)
    assert response.status_code == status, response.text
    out: dict[str, Any] = response.json()
    return out


# ---------------------------------------------------------------------------------- report
def test_report_matches_independent_numbers(client: TestClient) -> None:
    body = post(client, coins=["btc", "ETH"], window=N, levels=[0.95, 0.99],
                weights={"BTC": 0.7, "ETH": 0.3}, rolling_window=40)  # fmt: skip
    frame = expected_returns(["BTC", "ETH"])
    assert body["n_returns"] == len(frame) == N - 3
    assert body["source"]["dropped_timestamps"] == 2  # BTC returns ending at days 50 and 51
    assert body["source"]["gaps_skipped"] == {"BTC": 0, "ETH": 1}
    assert body["source"]["dropped_per_coin"] == {"BTC": 2, "ETH": 0}
    assert body["last_ts_unix"] == T0 + (N - 1) * DAY
    assert set(body["methods"]) == {"historical", "normal", "cornish_fisher"}
    for item, coin in zip(body["series"], ["BTC", "ETH"], strict=True):
        x = frame[coin].to_numpy()
        q = np.quantile(x, [0.05, 0.01], method="linear")
        assert item["label"] == coin
        for j, row in enumerate(item["levels"]):
            assert row["var"]["historical"] == pytest.approx(q[j], abs=1e-14)
            assert row["es"]["historical"] == pytest.approx(x[x <= q[j]].mean(), rel=1e-12)
            assert row["var"]["normal"] < 0 and row["es"]["cornish_fisher"] < 0
        assert item["vol_annualised"] == pytest.approx(x.std(ddof=1) * np.sqrt(365), rel=1e-12)
        equity = np.r_[1.0, np.cumprod(1 + x)]
        dd = (equity / np.maximum.accumulate(equity) - 1).min()
        assert item["drawdown"]["max"] == pytest.approx(dd, rel=1e-12)
        assert item["rolling"]["window"] == 40 and item["rolling"]["tested"] == len(x) - 40
        assert 0 < item["vol_target"]["next_scale"] <= 3.0
    rp = frame.to_numpy() @ np.array([0.7, 0.3])
    port = body["portfolio"]
    assert port["levels"][1]["var"]["historical"] == pytest.approx(
        np.quantile(rp, 0.01, method="linear"), abs=1e-14
    )
    assert port["covariance"] == "sample"
    assert body["execution"]["ray"] is False


def test_report_window_reads_latest_bars(client: TestClient) -> None:
    body = post(client, coins=["SOL"], window=30, vol_lookback=10)
    x = expected_returns(["SOL"])["SOL"].to_numpy()[-30:]
    assert body["n_returns"] == 30
    assert body["series"][0]["mean"] == pytest.approx(x.mean(), rel=1e-12)
    assert body["series"][0]["rolling"]["window"] == 15  # default: half the returns


def test_report_on_a_registry_run(client: TestClient, database_url: str) -> None:
    from storage.runs import RunRepository

    equity = [1.0, 1.1, 0.99, 1.05, 1.2, 1.1, 1.0, 1.15, 1.2, 1.3, 1.25, 1.4, 1.3]
    position = [0, 1, 1, 1, 0, -1, -1, 1, 1, 1, 0, 0, 1]
    engine = make_engine(database_url)
    with transaction(session_factory(engine)) as session:
        run_id = RunRepository(session).add(
            "backtest", {"x": 1}, request_hash="h", code_version="t", status="succeeded",
            coin="BTC", interval="1d",
            equity={"ts": [T0 + i * DAY for i in range(13)], "equity": equity,
                    "position": position, "stride": 1},
        )  # fmt: skip
    engine.dispose()
    body = post(client, run_id=run_id, vol_lookback=5, rolling_window=5)
    r = np.array(equity[1:]) / np.array(equity[:-1]) - 1
    item = body["series"][0]
    assert item["label"] == f"run:{run_id}" and body["n_returns"] == 12
    assert item["levels"][0]["var"]["historical"] == pytest.approx(np.quantile(r, 0.05))
    assert item["exposure"]["time_in_market"] == pytest.approx(9 / 13)
    missing = post(client, 404, run_id="nope")
    assert missing["error"] == "run_not_found"


# ---------------------------------------------------------------------------- correlation
@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_correlation_equals_pandas(client: TestClient, method: str) -> None:
    body = get(client, coins="BTC,ETH,SOL", window=N, method=method, shrinkage="identity",
               rolling_window=50, rolling_step=40)  # fmt: skip
    frame = expected_returns(["BTC", "ETH", "SOL"])
    assert body["labels"] == ["BTC", "ETH", "SOL"] and body["n_returns"] == len(frame)
    np.testing.assert_allclose(body["matrix"], frame.corr(method=method).to_numpy(), atol=1e-13)
    np.testing.assert_allclose(body["covariance"], frame.cov().to_numpy(), rtol=1e-12)
    assert 0 <= body["shrinkage"]["intensity"] <= 1
    rolling = body["rolling"]
    assert rolling["count"] == len(rolling["matrices"]) == 3  # ends 156, 116, 76 of 157
    last = frame.iloc[-50:].corr(method=method).to_numpy()
    np.testing.assert_allclose(rolling["matrices"][-1], last, atol=1e-13)


def test_correlation_with_ray_tasks_equals_in_process(
    client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "postgres" in database_url:
        pytest.skip("the fan-out does not depend on the database; run it once")
    ray = pytest.importorskip("ray")
    local = get(client, coins="BTC,ETH,SOL", window=N, rolling_window=30, rolling_step=5)
    monkeypatch.setattr(svc, "FANOUT_MIN_CELLS", 0)
    monkeypatch.setattr(svc, "TASK_CELLS", 30 * 3 * 8)  # 8 windows per task
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        fanned = get(client, coins="BTC,ETH,SOL", window=N, rolling_window=30, rolling_step=5)
        report = post(client, coins=["BTC", "ETH", "SOL"], window=N, rolling_window=30)
    finally:
        ray.shutdown()
    assert fanned["execution"]["ray"] is True and fanned["execution"]["tasks"] > 1
    assert fanned["rolling"]["matrices"] == local["rolling"]["matrices"]
    assert report["execution"]["ray"] is True


# ------------------------------------------------------------------------------- errors
def test_insufficient_data_says_how_much(client: TestClient) -> None:
    body = post(client, 422, coins=["BTC"], window=N, rolling_window=500)
    assert body["error"] == "insufficient_data"
    assert body["details"]["required_returns"] == 501
    assert body["details"]["received_returns"] == N - 1
    body = get(client, 422, coins="BTC,ETH", start=str(T0), end=str(T0 + DAY))
    assert body["error"] == "insufficient_data" and body["details"]["received_returns"] == 1


def test_caps_are_checked_before_reading(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(svc, "MAX_CELLS", 100)
    monkeypatch.setattr(svc.CandleRepository, "frame", lambda *a, **k: pytest.fail("read"))
    body = post(client, 422, coins=["BTC", "ETH"], window=60)
    assert body["error"] == "request_too_large" and "narrow" in body["message"]
    body = get(client, 422, coins="BTC,ETH", start=str(T0))
    assert body["error"] == "request_too_large"


def test_rolling_window_cap_names_the_step(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(svc, "MAX_ROLLING_MATRICES", 10)
    body = get(client, 422, coins="BTC,ETH", window=N, rolling_window=20, rolling_step=1)
    assert body["error"] == "too_many_windows" and "rolling_step to at least" in body["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"coins": ["BTC"], "bogus": 1}, "bogus"),
        ({"coins": ["BTC"], "run_id": "x"}, "exactly one of coins or run_id"),
        ({}, "exactly one of coins or run_id"),
        ({"coins": ["BTC"], "levels": [0.99, 1.5]}, "between 0.5 and 1"),
        ({"coins": ["BTC"], "window": 1}, "window"),
        ({"coins": [f"C{i}" for i in range(51)]}, "coins"),
        ({"run_id": "x", "weights": {"BTC": 1}}, "weights need coins"),
    ],
)
def test_bad_report_requests_say_what_to_fix(
    client: TestClient, body: dict[str, Any], fragment: str
) -> None:
    out = post(client, 422, **body)
    assert out["error"] == "invalid_request" and fragment in out["message"]


def test_other_bad_inputs(client: TestClient) -> None:
    assert post(client, 404, coins=["NOPE"])["error"] == "unknown_coin"
    assert post(client, 422, coins=["BTC"], interval="7m")["error"] == "unknown_interval"
    out = post(client, 422, coins=["BTC"], weights={"ETH": 1.0})
    assert out["error"] == "invalid_weights" and "ETH" in out["message"]
    assert get(client, 422, coins="BTC")["error"] == "invalid_coins"
    assert get(client, 422, coins="BTC,ETH", method="kendall")["error"] == "invalid_request"
    assert get(client, 422, coins="BTC,btc")["error"] == "duplicate_coins"
