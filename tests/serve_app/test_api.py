"""The HTTP API against both databases (every test taking ``database_url`` runs twice).

Expected values are written out by hand from the seeded bars, never taken from the code.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serve_app.api import create_app
from serve_app.settings import Settings
from storage.errors import (
    ConfigurationError,
    DataIntegrityError,
    InsufficientDataError,
    RateLimitedError,
    TemporaryExchangeError,
)
from storage.migrate import head_revision, upgrade
from tests.serve_app.factories import HOUR, T0, candle, seed, seed_snapshot

# BTC 1h, six bars from 2024-03-01T00:00Z; bar 2 has no notional, bar 4 no trade count.
BTC_1H = [
    candle("BTC", "1h", T0 + i * HOUR, i)
    | ({"volume_quote": None} if i == 2 else {})
    | ({"trade_count": None} if i == 4 else {})
    for i in range(6)
]
EXPECTED = [
    {"ts": "2024-03-01T00:00:00Z", "ts_unix": 1709251200, "open": 100.0, "high": 102.0,
     "low": 99.0, "close": 101.0, "volume_base": 10.0, "volume_quote": 1000.0, "trade_count": 50},
    {"ts": "2024-03-01T01:00:00Z", "ts_unix": 1709254800, "open": 101.0, "high": 103.0,
     "low": 100.0, "close": 102.0, "volume_base": 11.0, "volume_quote": 1001.0, "trade_count": 51},
    {"ts": "2024-03-01T02:00:00Z", "ts_unix": 1709258400, "open": 102.0, "high": 104.0,
     "low": 101.0, "close": 103.0, "volume_base": 12.0, "volume_quote": None, "trade_count": 52},
    {"ts": "2024-03-01T03:00:00Z", "ts_unix": 1709262000, "open": 103.0, "high": 105.0,
     "low": 102.0, "close": 104.0, "volume_base": 13.0, "volume_quote": 1003.0, "trade_count": 53},
    {"ts": "2024-03-01T04:00:00Z", "ts_unix": 1709265600, "open": 104.0, "high": 106.0,
     "low": 103.0, "close": 105.0, "volume_base": 14.0, "volume_quote": 1004.0,
     "trade_count": None},
    {"ts": "2024-03-01T05:00:00Z", "ts_unix": 1709269200, "open": 105.0, "high": 107.0,
     "low": 104.0, "close": 106.0, "volume_base": 15.0, "volume_quote": 1005.0, "trade_count": 55},
]  # fmt: skip
CANDLES = "/market/candles"
CAP = 50


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "coins": ["BTC", "ETH"],
        "intervals": ["1h", "1d"],
        "quote_asset": "USDT",
        "max_candles_per_request": CAP,
        "default_candle_limit": 4,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(database_url), configure_logs=False)) as c:
        yield c


@pytest.fixture
def btc(database_url: str) -> None:
    seed(database_url, BTC_1H)


def candles(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = client.get(CANDLES, params={"coin": "BTC", "interval": "1h", **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["candles"])
    return list(body["candles"])


def assert_error(response: Any, status: int, code: str, *fragments: str) -> dict[str, Any]:
    """The uniform error shape, with the message saying what to fix."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    for fragment in fragments:
        assert fragment in body["message"], (fragment, body["message"])
    return dict(body)


# ------------------------------------------------------------------------------ candles JSON
@pytest.mark.usefixtures("btc")
def test_candles_json_values_iso_and_unix(client: TestClient) -> None:
    response = client.get(
        CANDLES, params={"coin": "btc", "interval": "1h", "start": T0, "limit": 6}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {
        "coin": "BTC",
        "interval": "1h",
        "quote_asset": "USDT",
        "count": 6,
        "candles": EXPECTED,
    }


@pytest.mark.usefixtures("btc")
def test_without_start_returns_the_latest_n_ascending(client: TestClient) -> None:
    assert candles(client, limit=2) == EXPECTED[4:6]
    assert candles(client) == EXPECTED[2:6]  # default limit 4
    # latest N up to end
    assert candles(client, end="2024-03-01T03:00:00Z", limit=2) == EXPECTED[2:4]


@pytest.mark.usefixtures("btc")
def test_start_end_limit_semantics(client: TestClient) -> None:
    # start (unix) and end (ISO) are inclusive
    assert candles(client, start=1709254800, end="2024-03-01T03:00:00Z") == EXPECTED[1:4]
    # with start: from start forward, at most limit
    assert candles(client, start="2024-03-01T01:00:00Z", limit=2) == EXPECTED[1:3]
    # an offset is honoured: 03:00+02:00 is 01:00Z; a bare date is midnight UTC
    assert candles(client, start="2024-03-01T03:00:00+02:00", limit=1) == EXPECTED[1:2]
    assert candles(client, start="2024-03-01", limit=1) == EXPECTED[0:1]
    # a start between bars begins at the next bar; start == end selects one bar
    assert candles(client, start=T0 + 1, limit=1) == EXPECTED[1:2]
    assert candles(client, start=T0 + 5 * HOUR, end=T0 + 5 * HOUR) == EXPECTED[5:6]
    # nothing in range, and a known coin without data: empty, not an error
    assert candles(client, start="2030-01-01") == []
    empty = client.get(CANDLES, params={"coin": "ETH", "interval": "1h"}).json()
    assert empty == {"coin": "ETH", "interval": "1h", "quote_asset": "USDT", "count": 0,
                     "candles": []}  # fmt: skip
    assert candles(client, limit=CAP)[0] == EXPECTED[0]


def test_stored_but_unconfigured_coin_is_served(client: TestClient, database_url: str) -> None:
    seed(database_url, [candle("DOGE", "1d", T0, 0)])
    body = client.get(CANDLES, params={"coin": "doge", "interval": "1d"}).json()
    assert body["coin"] == "DOGE"
    assert [c["ts"] for c in body["candles"]] == ["2024-03-01T00:00:00Z"]


# ---------------------------------------------------------------------------- CSV / Parquet
@pytest.mark.usefixtures("btc")
@pytest.mark.parametrize("how", ["query", "accept"])
def test_csv_round_trip(client: TestClient, how: str) -> None:
    params: dict[str, Any] = {"coin": "BTC", "interval": "1h", "start": T0, "limit": 6}
    headers = {}
    if how == "query":
        params["format"] = "csv"
    else:
        headers["Accept"] = "text/csv"
    response = client.get(CANDLES, params=params, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="BTCUSDT-1h.csv"' in response.headers["content-disposition"]
    assert response.text.splitlines()[0] == (
        "ts,ts_unix,open,high,low,close,volume_base,volume_quote,trade_count"
    )
    assert (
        response.text.splitlines()[3]
        == "2024-03-01T02:00:00Z,1709258400,102.0,104.0,101.0,103.0,12.0,,52"
    )
    back = pd.read_csv(io.StringIO(response.text))
    _assert_frame_matches_expected(back)
    assert back["ts"].tolist() == [c["ts"] for c in EXPECTED]


@pytest.mark.usefixtures("btc")
@pytest.mark.parametrize("how", ["query", "accept"])
def test_parquet_round_trip(client: TestClient, how: str) -> None:
    params: dict[str, Any] = {"coin": "BTC", "interval": "1h", "start": T0, "limit": 6}
    headers = {}
    if how == "query":
        params["format"] = "parquet"
    else:
        headers["Accept"] = "application/vnd.apache.parquet"
    response = client.get(CANDLES, params=params, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    back = pd.read_parquet(io.BytesIO(response.content))
    _assert_frame_matches_expected(back)
    expected_ts = pd.to_datetime([str(c["ts"]) for c in EXPECTED], utc=True)
    assert (back["ts"] == expected_ts).all()
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(response.content))
    types = {field.name: str(field.type) for field in table.schema}
    assert types == {
        "ts": "timestamp[ms, tz=UTC]", "ts_unix": "int64", "open": "double", "high": "double",
        "low": "double", "close": "double", "volume_base": "double", "volume_quote": "double",
        "trade_count": "int64",
    }  # fmt: skip
    assert table.column("trade_count").null_count == 1  # nullable ints stay ints


def _assert_frame_matches_expected(back: pd.DataFrame) -> None:
    assert list(back.columns) == list(EXPECTED[0])
    assert back["ts_unix"].tolist() == [c["ts_unix"] for c in EXPECTED]
    for col in ("open", "high", "low", "close", "volume_base"):
        assert back[col].tolist() == [c[col] for c in EXPECTED]
    vq = back["volume_quote"].to_numpy(np.float64)
    assert np.isnan(vq[2]) and vq[[0, 1, 3, 4, 5]].tolist() == [1000, 1001, 1003, 1004, 1005]
    tc = back["trade_count"]
    assert pd.isna(tc[4]) and [int(tc[i]) for i in (0, 1, 2, 3, 5)] == [50, 51, 52, 53, 55]


def test_format_query_wins_over_accept(client: TestClient) -> None:
    response = client.get(
        CANDLES,
        params={"coin": "BTC", "interval": "1h", "format": "json"},
        headers={"Accept": "text/csv"},
    )
    assert response.headers["content-type"] == "application/json"


# ---------------------------------------------------------------------------------- errors
def test_unknown_coin_is_404_listing_configured_and_stored_coins(
    client: TestClient, database_url: str
) -> None:
    seed(database_url, [candle("DOGE", "1d", T0, 0)])
    body = assert_error(
        client.get(CANDLES, params={"coin": "XRP", "interval": "1h"}),
        404,
        "unknown_coin",
        "XRP",
        "BTC, ETH, DOGE",
    )
    assert body["known_coins"] == ["BTC", "ETH", "DOGE"]


def test_unknown_interval_is_422_listing_valid_ones(client: TestClient) -> None:
    body = assert_error(
        client.get(CANDLES, params={"coin": "BTC", "interval": "1w"}),
        422,
        "unknown_interval",
        "'1w'",
        "1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d",
    )
    assert body["valid_intervals"][0] == "1m" and "1d" in body["valid_intervals"]


def test_start_after_end_is_422(client: TestClient) -> None:
    assert_error(
        client.get(
            CANDLES, params={"coin": "BTC", "interval": "1h", "start": T0 + HOUR, "end": T0}
        ),
        422,
        "invalid_range",
        "2024-03-01T01:00:00Z",
        "2024-03-01T00:00:00Z",
    )


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("yesterday", "neither ISO-8601 nor unix seconds"),
        ("2024-13-01", "neither ISO-8601 nor unix seconds"),
        ("1709251200000", "milliseconds"),
        ("-5", "before 1970"),
    ],
)
def test_unparseable_time_is_422_with_accepted_formats(
    client: TestClient, value: str, fragment: str
) -> None:
    body = assert_error(
        client.get(CANDLES, params={"coin": "BTC", "interval": "1h", "start": value}),
        422,
        "invalid_time",
        fragment,
        "start",
        "2024-03-01T00:00:00Z",
        "unix seconds",
    )
    assert body["parameter"] == "start"
    assert len(body["accepted_formats"]) == 4


@pytest.mark.parametrize("limit", [0, -1, CAP + 1, 10**9])
def test_limit_out_of_range_is_422_naming_the_cap(client: TestClient, limit: int) -> None:
    body = assert_error(
        client.get(CANDLES, params={"coin": "BTC", "interval": "1h", "limit": limit}),
        422,
        "limit_out_of_range",
        f"between 1 and {CAP}",
        str(limit),
    )
    assert body["max_limit"] == CAP


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"coin": "BTC", "interval": "1h", "limit": "ten"}, "query parameter 'limit'"),
        ({"coin": "BTC", "interval": "1h", "format": "xml"}, "query parameter 'format'"),
        ({"interval": "1h"}, "query parameter 'coin': Field required"),
        ({"coin": "X" * 21, "interval": "1h"}, "query parameter 'coin'"),
    ],
)
def test_parameter_validation_errors_share_the_shape(
    client: TestClient, params: dict[str, Any], fragment: str
) -> None:
    body = assert_error(client.get(CANDLES, params=params), 422, "invalid_request", fragment)
    assert body["details"][0]["location"] in fragment


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    assert_error(client.get("/market/nope"), 404, "not_found", "/market/nope", "/docs")
    body = assert_error(client.post(CANDLES), 405, "method_not_allowed", "POST", "GET")
    assert set(body) == {"error", "message", "request_id"}


def test_unreachable_database_is_503_and_live_stays_up() -> None:
    settings = make_settings("postgresql+psycopg://squall:secret@127.0.0.1:1/none")
    app = create_app(settings, configure_logs=False)
    assert app.state.engine is None  # building the app touches no database
    with TestClient(app) as client:
        started = time.perf_counter()
        live = client.get("/live")
        assert live.status_code == 200 and live.json() == {"status": "ok"}
        assert time.perf_counter() - started < 0.5
        assert app.state.engine is None  # /live did not create an engine either
        body = assert_error(
            client.get(CANDLES, params={"coin": "BTC", "interval": "1h"}),
            503,
            "database_unavailable",
            "GET /ready",
        )
        assert "secret" not in json.dumps(body)
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not_ready"
        assert "database unreachable" in ready.json()["reasons"][0]
        health = client.get("/health").json()
        assert health["status"] == "down"
        assert health["database"]["ok"] is False
        assert health["database"]["url"] == "postgresql+psycopg://squall:***@127.0.0.1:1/none"
        assert health["series"] is None


def _raising_app(tmp_path: Path) -> FastAPI:
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'x.db'}"), configure_logs=False)
    errors: dict[str, Exception] = {
        "config": ConfigurationError("coins must not be empty"),
        "integrity": DataIntegrityError("row 3 has high below low"),
        "insufficient": InsufficientDataError("need 30 bars", details={"needed": 30, "found": 3}),
        "temporary": TemporaryExchangeError("exchange timed out"),
        "limited": RateLimitedError("slow down", retry_after_s=2.5),
        "limited_unknown": RateLimitedError("slow down"),
        "bug": RuntimeError("boom"),
    }

    @app.get("/raise/{kind}")
    def _raise(kind: str) -> None:
        raise errors[kind]

    return app


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("config", 422, "configuration_error"),
        ("integrity", 422, "data_integrity"),
        ("insufficient", 422, "insufficient_data"),
        ("temporary", 503, "temporarily_unavailable"),
        ("limited", 429, "rate_limited"),
        ("bug", 500, "internal_error"),
    ],
)
def test_error_tree_maps_to_statuses(tmp_path: Path, kind: str, status: int, code: str) -> None:
    with TestClient(_raising_app(tmp_path), raise_server_exceptions=False) as client:
        response = client.get(f"/raise/{kind}")
    body = assert_error(response, status, code)
    if kind == "insufficient":
        assert body["details"] == {"needed": 30, "found": 3}
    if kind == "limited":
        assert response.headers["retry-after"] == "3" and body["retry_after_s"] == 3
    if kind == "bug":
        assert "boom" not in body["message"]  # internals stay in the log


def test_rate_limited_without_a_hint_still_says_when_to_retry(tmp_path: Path) -> None:
    with TestClient(_raising_app(tmp_path)) as client:
        response = client.get("/raise/limited_unknown")
    assert response.status_code == 429 and response.headers["retry-after"] == "1"


# ------------------------------------------------------------------ coins, snapshot, gaps
@pytest.mark.usefixtures("btc")
def test_coins_lists_configured_then_stored_only_with_coverage(
    client: TestClient, database_url: str
) -> None:
    seed(database_url, [candle("DOGE", "4h", T0, 0), candle("DOGE", "4h", T0 + 4 * HOUR, 1)])
    body = client.get("/market/coins").json()
    assert body["quote_asset"] == "USDT"
    assert body["intervals"] == ["1h", "1d"]
    assert body["coins"] == [
        {
            "coin": "BTC",
            "configured": True,
            "series": [
                {"interval": "1h", "configured": True,
                 "first_ts": "2024-03-01T00:00:00Z", "first_ts_unix": 1709251200,
                 "last_ts": "2024-03-01T05:00:00Z", "last_ts_unix": 1709269200, "count": 6,
                 "source": "test", "foreign_rows": 0},
            ],
        },
        {"coin": "ETH", "configured": True, "series": []},
        {
            "coin": "DOGE",
            "configured": False,
            "series": [
                {"interval": "4h", "configured": False,
                 "first_ts": "2024-03-01T00:00:00Z", "first_ts_unix": 1709251200,
                 "last_ts": "2024-03-01T04:00:00Z", "last_ts_unix": 1709265600, "count": 2,
                 "source": "test", "foreign_rows": 0},
            ],
        },
    ]  # fmt: skip


def test_snapshot_404_until_one_is_stored(client: TestClient, database_url: str) -> None:
    assert_error(
        client.get("/market/snapshot", params={"coin": "btc"}),
        404,
        "snapshot_not_found",
        "no market snapshot stored for BTC yet",
    )
    assert_error(client.get("/market/snapshot", params={"coin": "NOPE"}), 404, "unknown_coin")
    seed_snapshot(
        database_url,
        {"coin": "BTC", "ts": T0 + 30, "last_price": 62000.5, "bid": 62000.0, "ask": 62001.0,
         "funding_rate": 0.0001, "source": "test"},
        now=T0 + 31,
    )  # fmt: skip
    response = client.get("/market/snapshot", params={"coin": "btc"})
    assert response.status_code == 200
    assert response.json() == {
        "coin": "BTC", "quote_asset": "USDT",
        "ts": "2024-03-01T00:00:30Z", "ts_unix": 1709251230,
        "last_price": 62000.5, "bid": 62000.0, "ask": 62001.0,
        "mark_price": None, "index_price": None,
        "volume_base_24h": None, "volume_quote_24h": None,
        "funding_rate": 0.0001, "open_interest": None, "source": "test",
        "ingested_at": "2024-03-01T00:00:31Z", "ingested_at_unix": 1709251231,
    }  # fmt: skip


def test_gaps_report_a_hand_made_hole(client: TestClient, database_url: str) -> None:
    # present: hours 0, 1, 2, 5, 6, 9 -> missing 3-4 and 7-8
    hours = [0, 1, 2, 5, 6, 9]
    seed(database_url, [candle("ETH", "1h", T0 + h * HOUR, h) for h in hours])
    seed(database_url, [candle("BTC", "1d", T0, 0)])
    response = client.get("/market/gaps", params={"coin": "eth", "interval": "1h"})
    assert response.status_code == 200
    assert response.json() == {
        "reports": [
            {
                "coin": "ETH", "interval": "1h",
                "first_ts": "2024-03-01T00:00:00Z", "first_ts_unix": 1709251200,
                "last_ts": "2024-03-01T09:00:00Z", "last_ts_unix": 1709283600,
                "expected": 10, "present": 6, "missing": 4,
                "gaps": [
                    {"start": "2024-03-01T03:00:00Z", "start_unix": 1709262000,
                     "end": "2024-03-01T04:00:00Z", "end_unix": 1709265600, "missing": 2},
                    {"start": "2024-03-01T07:00:00Z", "start_unix": 1709276400,
                     "end": "2024-03-01T08:00:00Z", "end_unix": 1709280000, "missing": 2},
                ],
            }
        ]
    }  # fmt: skip
    everything = client.get("/market/gaps").json()["reports"]
    assert [(r["coin"], r["interval"], r["missing"]) for r in everything] == [
        ("BTC", "1d", 0),
        ("ETH", "1h", 4),
    ]
    assert_error(client.get("/market/gaps", params={"coin": "XRP"}), 404, "unknown_coin")
    assert_error(client.get("/market/gaps", params={"interval": "7m"}), 422, "unknown_interval")


# ---------------------------------------------------------------------------------- health
def test_ready_is_503_until_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with TestClient(create_app(make_settings(url), configure_logs=False)) as client:
        response = client.get("/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not_ready" and body["error"] == "not_ready"
        assert body["reasons"] == [
            f"database schema is at revision none (empty), this code needs {head_revision()}; "
            "run `squall db upgrade`"
        ]
        assert body["message"] == body["reasons"][0]
        assert client.get("/health").json()["status"] == "degraded"
        upgrade(url)
        response = client.get("/ready")
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "revision": head_revision()}


def test_ready_on_a_migrated_database(client: TestClient) -> None:
    assert client.get("/ready").json() == {"status": "ready", "revision": head_revision()}


def test_health_reports_database_series_and_ray(client: TestClient, database_url: str) -> None:
    seed(database_url, BTC_1H)
    before = int(time.time())
    body = client.get("/health").json()
    after = int(time.time())
    assert body["status"] == "degraded"  # 2024 data is stale
    assert before <= body["time_unix"] <= after
    db = body["database"]
    assert db["ok"] is True and db["error"] is None and db["latency_ms"] >= 0
    assert db["backend"] in ("sqlite", "postgresql")
    assert db["revision"] == {"current": head_revision(), "head": head_revision(),
                              "up_to_date": True}  # fmt: skip
    series = {(s["coin"], s["interval"]): s for s in body["series"]}
    assert set(series) == {("BTC", "1h"), ("BTC", "1d"), ("ETH", "1h"), ("ETH", "1d")}
    btc = series[("BTC", "1h")]
    assert btc["latest_ts"] == "2024-03-01T05:00:00Z" and btc["latest_ts_unix"] == 1709269200
    assert btc["source"] == "test"  # the source the series belongs to
    # age: seconds since the 05:00 bar closed at 06:00
    assert before - 1709272800 <= btc["age_s"] <= after - 1709272800
    assert btc["stale"] is True
    assert series[("ETH", "1d")] == {
        "coin": "ETH",
        "interval": "1d",
        "latest_ts": None,
        "latest_ts_unix": None,
        "source": None,
        "age_s": None,
        "stale": True,
    }
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        assert body["ray"] is None


def test_health_ok_when_every_series_is_fresh(database_url: str) -> None:
    now = int(time.time())
    last_closed = now // HOUR * HOUR - HOUR  # open time of the last closed hourly bar
    seed(database_url, [candle("BTC", "1h", last_closed, 0)])
    settings = make_settings(database_url, coins=["BTC"], intervals=["1h"])
    with TestClient(create_app(settings, configure_logs=False)) as client:
        body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["series"][0]["stale"] is False
    assert 0 <= body["series"][0]["age_s"] <= HOUR


# ----------------------------------------------------------------------- observability
def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    echoed = client.get("/live", headers={"X-Request-ID": "trace-42.a:b"})
    assert echoed.headers.get_list("x-request-id") == ["trace-42.a:b"]
    generated = client.get("/live").headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    unsafe = client.get("/live", headers={"X-Request-ID": "x" * 200}).headers["x-request-id"]
    assert unsafe != "x" * 200 and len(unsafe) == 32
    body = client.get("/nope", headers={"X-Request-ID": "err-1"}).json()
    assert body["request_id"] == "err-1"


def _sample(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    counter = 'squall_http_requests_total{method="GET",route="/market/candles",status="422"}'
    latency = 'squall_http_request_duration_seconds_count{method="GET",route="/market/candles"}'
    first = client.get("/metrics").text
    before, before_latency = _sample(first, counter), _sample(first, latency)
    client.get(CANDLES, params={"coin": "BTC", "interval": "1w"})
    client.get(CANDLES, params={"coin": "ETH", "interval": "2w"})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert _sample(response.text, counter) == before + 2
    assert _sample(response.text, latency) == before_latency + 2
    client.get("/no/such/route")
    unmatched = 'squall_http_requests_total{method="GET",route="<unmatched>",status="404"}'
    assert _sample(client.get("/metrics").text, unmatched) >= 1


def test_access_log_is_one_json_line_with_the_request_id(client: TestClient) -> None:
    import logging

    from serve_app.observability import configure_logging

    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging("INFO", stream=stream)
    try:
        client.get(CANDLES, params={"coin": "BTC", "interval": "1w"},
                   headers={"X-Request-ID": "log-check-7"})  # fmt: skip
    finally:
        root.setLevel(level)
        for handler in list(root.handlers):
            if type(handler).__name__ == "_SquallHandler":
                root.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [e for e in lines if e["logger"] == "squall.access"]
    assert len(access) == 1
    entry = access[0]
    assert entry["request_id"] == "log-check-7"
    assert entry["method"] == "GET" and entry["path"] == CANDLES and entry["status"] == 422
    assert entry["level"] == "INFO" and entry["message"] == "request"
    assert entry["duration_ms"] >= 0 and entry["ts"].endswith("Z")


def test_openapi_documents_every_field_and_the_candles_schema(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "squall"
    candles_200 = spec["paths"]["/market/candles"]["get"]["responses"]["200"]["content"]
    assert candles_200["application/json"]["schema"]["$ref"].endswith("/CandlesResponse")
    assert {"text/csv", "application/vnd.apache.parquet"} <= set(candles_200)
    fastapi_own = ("HTTPValidationError", "ValidationError")
    ours = [n for n in spec["components"]["schemas"] if n not in fastapi_own]
    assert "CandleOut" in ours and "HealthResponse" in ours
    for name in ours:
        for field, prop in spec["components"]["schemas"][name].get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field} has no description"


# ---------------------------------------------------------------------- read concurrency
@pytest.mark.usefixtures("btc")
def test_candle_reads_never_exceed_the_pool_size(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve concurrent requests, a pool of two: on Postgres at most two reads run at once
    (worker threads); on SQLite they run one by one on the event loop. All succeed."""
    import asyncio
    import threading

    import httpx

    from serve_app.api import market

    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    real = market.read_candle_columns

    def probed(*args: Any, **kwargs: Any) -> Any:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        try:
            time.sleep(0.05)  # long enough for the other requests to pile up
            return real(*args, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(market, "read_candle_columns", probed)
    app = create_app(make_settings(database_url, db_pool_size=2), configure_logs=False)

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            params = {"coin": "BTC", "interval": "1h", "limit": 3}
            responses = await asyncio.gather(*(http.get(CANDLES, params=params) for _ in range(12)))
        return [r.status_code for r in responses]

    assert asyncio.run(burst()) == [200] * 12
    assert state["peak"] == (1 if database_url.startswith("sqlite") else 2)
    assert app.state.engine.pool.size() == 2


def test_ready_can_wait_for_the_warm_up(database_url: str) -> None:
    from serve_app.execution import warmup

    settings = make_settings(database_url)
    gated = settings.model_copy(update={"ready_after_warm_up": True, "warm_up": True})
    before = dict(warmup.STATE)
    try:
        warmup.STATE.update(state="running")
        with TestClient(create_app(gated, configure_logs=False, background=False)) as client:
            r = client.get("/ready")
            assert r.status_code == 503 and "warm-up running" in r.json()["message"]
            warmup.STATE.update(state="done", seconds=1.0)
            assert client.get("/ready").status_code == 200
        with TestClient(create_app(settings, configure_logs=False, background=False)) as client:
            warmup.STATE.update(state="running")
            assert client.get("/ready").status_code == 200  # off by default: never waits
    finally:
        warmup.STATE.clear()
        warmup.STATE.update(before)
