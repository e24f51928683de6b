"""The analytics API (indicators, signals, regimes, microstructure, features) on both databases.

Expected numbers come from independent computations written here (pandas rolling means, a
plain EMA loop, hand-computed funding and basis), never from the endpoint's own code path.
Bar counts are kept within few padded lengths so the JAX kernels compile only a few times.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from compute.core.labels import TrendRegime, VolRegime
from compute.indicators.pipeline import compute_indicators
from compute.indicators.registry import MAX_ITEMS, REGISTRY, parse_indicator_spec
from serve_app.api import create_app
from serve_app.api.schemas.analytics import (
    FeaturesResponse,
    IndicatorsResponse,
    RegimesResponse,
    SignalsResponse,
)
from serve_app.api.schemas.common import InsufficientDataBody, InvalidSpecBody
from serve_app.api.schemas.market import MicrostructureResponse
from serve_app.services.features import feature_set, materialize
from serve_app.settings import Settings
from storage.candles import CandleRepository
from storage.derivatives import FundingRepository, OpenInterestRepository
from storage.engine import make_engine, session_factory, transaction
from tests.serve_app.factories import HOUR, T0, frame, seed, seed_snapshot

N_BARS = 120
CAP = 200


def walk(n: int = N_BARS, *, coin: str = "BTC", seed_: int = 11) -> list[dict[str, Any]]:
    """A deterministic random walk of 1h candles from T0 with consistent OHLC."""
    rng = np.random.default_rng(seed_)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    wick = rng.uniform(0.0, 0.005, (2, n))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    volume = rng.uniform(1.0, 10.0, n)
    return [
        {"coin": coin, "interval": "1h", "ts": T0 + i * HOUR, "open": open_[i], "high": high[i],
         "low": low[i], "close": close[i], "volume_base": volume[i], "volume_quote": None,
         "trade_count": None, "source": "test"}
        for i in range(n)
    ]  # fmt: skip


BARS = walk()
CLOSE = np.array([r["close"] for r in BARS])


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        coins=["BTC", "ETH"],
        intervals=["1h"],
        max_candles_per_request=CAP,
        default_candle_limit=10,
        log_level="WARNING",
    )
    with TestClient(create_app(settings, configure_logs=False)) as c:
        yield c


@pytest.fixture
def btc(database_url: str) -> None:
    seed(database_url, BARS)


def ok(client: TestClient, path: str, **params: Any) -> dict[str, Any]:
    response = client.get(path, params={"coin": "BTC", **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error(client: TestClient, path: str, status: int, code: str, **params: Any) -> dict[str, Any]:
    response = client.get(path, params={"coin": "BTC", "interval": "1h", **params})
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code and body["message"]
    return body


def ema_loop(x: np.ndarray, n: int) -> np.ndarray:
    """EMA with alpha 2/(n+1) seeded with the SMA of the first n values; NaN before."""
    out = np.full(len(x), np.nan)
    out[n - 1] = x[:n].mean()
    alpha = 2.0 / (n + 1.0)
    for i in range(n, len(x)):
        out[i] = alpha * x[i] + (1.0 - alpha) * out[i - 1]
    return out


def column(body: dict[str, Any], name: str) -> np.ndarray:
    return np.array([np.nan if r[name] is None else r[name] for r in body["rows"]], float)


# ------------------------------------------------------------------------------ indicators
@pytest.mark.usefixtures("btc")
def test_indicators_equal_an_independent_computation(client: TestClient) -> None:
    body = ok(client, "/indicators", interval="1h", names="SMA:10, ema:10", start=T0 + 50 * HOUR,
              limit=30)  # fmt: skip
    IndicatorsResponse.model_validate(body)
    assert body["names"] == "sma:10,ema:10"
    assert body["columns"] == ["sma_10", "ema_10"]
    assert body["count"] == 30
    assert [r["ts_unix"] for r in body["rows"]] == [T0 + (50 + i) * HOUR for i in range(30)]
    assert body["rows"][0]["ts"] == "2024-03-03T02:00:00Z"
    # the warm-up (9 bars) was read before the window: values from bar 41 on
    assert body["warmup"]["lookback_candles"] == 9 and body["warmup"]["lookback_received"] == 9
    assert body["warmup"]["complete"] is True and body["warmup"]["required_candles"] == 10
    data = body["data"]
    assert (data["first_ts_unix"], data["last_ts_unix"], data["candles"]) == (
        T0 + 41 * HOUR, T0 + 79 * HOUR, 39)  # fmt: skip
    assert data["missing_bars"] == 0 and len(data["fingerprint"]) == 16
    sma = pd.Series(CLOSE).rolling(10).mean().to_numpy()[50:80]
    ema = ema_loop(CLOSE[41:80], 10)[9:]
    np.testing.assert_allclose(column(body, "sma_10"), sma, rtol=1e-9)
    np.testing.assert_allclose(column(body, "ema_10"), ema, rtol=1e-9)


@pytest.mark.usefixtures("btc")
def test_warmup_rows_are_null_at_the_start_of_the_series(client: TestClient) -> None:
    body = ok(client, "/indicators", interval="1h", names="sma:10,ema:10", start=T0, limit=20)
    rows = body["rows"]
    assert all(r["sma_10"] is None and r["ema_10"] is None for r in rows[:9])
    assert all(r["sma_10"] is not None and r["ema_10"] is not None for r in rows[9:])
    np.testing.assert_allclose(rows[9]["ema_10"], CLOSE[:10].mean(), rtol=1e-12)  # the seed
    warmup = body["warmup"]
    assert warmup["complete"] is False and warmup["lookback_received"] == 0
    assert warmup["first_complete_ts_unix"] == T0 + 9 * HOUR
    assert warmup["first_complete_ts"] == "2024-03-01T09:00:00Z"
    assert warmup["items"][1] == {"item": "ema:10", "kind": "indicator", "columns": ["ema_10"],
                                  "warmup_bars": 9}  # fmt: skip


@pytest.mark.usefixtures("btc")
def test_labels_are_null_in_warmup_and_signals_flat(client: TestClient) -> None:
    body = ok(client, "/indicators", interval="1h", names="vreg:5:10,ema_cross:3:5", start=T0,
              limit=30)  # fmt: skip
    assert body["columns"] == ["vreg_5_10_0.6745", "ema_cross_3_5_0_0"]
    labels = [r["vreg_5_10_0.6745"] for r in body["rows"]]
    assert labels[:15] == [None] * 15 and set(labels[15:]) <= {0, 1, 2}
    positions = [r["ema_cross_3_5_0_0"] for r in body["rows"]]
    assert positions[:4] == [0] * 4 and set(positions) <= {-1, 0, 1}
    assert [i["kind"] for i in body["warmup"]["items"]] == ["label", "signal"]


@pytest.mark.usefixtures("btc")
def test_indicator_windows_follow_market_candles(client: TestClient) -> None:
    names = "sma:10,ema:10"
    latest = ok(client, "/indicators", interval="1h", names=names, limit=5)
    assert [r["ts_unix"] for r in latest["rows"]] == [T0 + h * HOUR for h in range(115, 120)]
    default = ok(client, "/indicators", interval="1h", names=names)
    assert default["count"] == 10  # the default limit
    upto = ok(client, "/indicators", interval="1h", names=names, end=T0 + 30 * HOUR, limit=3)
    assert [r["ts_unix"] for r in upto["rows"]] == [T0 + h * HOUR for h in (28, 29, 30)]
    between = ok(client, "/indicators", interval="1h", names=names, start="2024-03-01T10:00:00Z",
                 end=T0 + 12 * HOUR)  # fmt: skip
    assert [r["ts"] for r in between["rows"]] == [
        "2024-03-01T10:00:00Z", "2024-03-01T11:00:00Z", "2024-03-01T12:00:00Z"]  # fmt: skip
    # a value does not depend on how the window is cut when the warm-up is covered
    sma = pd.Series(CLOSE).rolling(10).mean().to_numpy()
    np.testing.assert_allclose(column(upto, "sma_10"), sma[28:31], rtol=1e-9)
    empty = ok(client, "/indicators", interval="1h", names=names, start=T0 + 500 * HOUR)
    assert empty["count"] == 0 and empty["rows"] == [] and empty["data"]["candles"] == 0


@pytest.mark.usefixtures("btc")
def test_invalid_specs_are_422_listing_what_is_valid(client: TestClient) -> None:
    body = error(client, "/indicators", 422, "invalid_spec", names="ema:20,foo:3")
    InvalidSpecBody.model_validate(body)
    assert "unknown indicator 'foo'" in body["message"] and "ema:n" in body["message"]
    assert len(body["valid"]) == len(REGISTRY)
    assert any(v.startswith("ema:n - ") and "n=20 (int 1..100000)" in v for v in body["valid"])
    assert body["parameter"] == "names"
    bad = error(client, "/indicators", 422, "invalid_spec", names="ema:0")
    assert "n must be in [1, 100000], got 0" in bad["message"]
    crossed = error(client, "/indicators", 422, "invalid_spec", names="macd:26:12")
    assert "fast must be smaller than slow" in crossed["message"]


def test_caps_are_checked_before_any_work(client: TestClient) -> None:
    many = ",".join(f"sma:{i}" for i in range(1, MAX_ITEMS + 2))
    body = error(client, "/indicators", 422, "too_many_names", names=many)
    assert body["max_items"] == MAX_ITEMS and str(MAX_ITEMS) in body["message"]
    over = error(client, "/indicators", 422, "limit_out_of_range", names="sma:5", limit=CAP + 1)
    assert over["max_limit"] == CAP
    error(client, "/indicators", 422, "unknown_interval", names="sma:5", interval="7m")
    error(client, "/indicators", 422, "invalid_range", names="sma:5", start=T0 + HOUR, end=T0)
    error(client, "/indicators", 404, "unknown_coin", names="sma:5", coin="NOPE")


@pytest.mark.usefixtures("btc")
def test_insufficient_data_says_how_many_candles_from_when(client: TestClient) -> None:
    body = error(client, "/indicators", 422, "insufficient_data", names="ema:12,sma:200",
                 start=T0 + 10 * HOUR, limit=5)  # fmt: skip
    InsufficientDataBody.model_validate(body)
    assert body["required_candles"] == 200 and body["received_candles"] == 15
    assert body["required_lookback_s"] == 199 * HOUR
    assert body["first_available_ts_unix"] == T0
    assert body["first_available_ts"] == "2024-03-01T00:00:00Z"
    assert body["suggested_start_unix"] == T0 + 199 * HOUR
    assert body["suggested_start"] == "2024-03-09T07:00:00Z"
    assert "200 candles" in body["message"] and "2024-03-09T07:00:00Z" in body["message"]
    nothing = error(client, "/indicators", 422, "insufficient_data", names="sma:5", coin="ETH")
    assert nothing["received_candles"] == 0 and nothing["first_available_ts"] is None
    assert (
        nothing["suggested_start"] is None and "no 1h candles stored for ETH" in nothing["message"]
    )


# --------------------------------------------------------------------------------- signals
@pytest.mark.usefixtures("btc")
def test_signals_are_causal_and_say_so(client: TestClient) -> None:
    early = ok(client, "/signals", interval="1h", strategy="ema_cross", params="5:10",
               start=T0 + 20 * HOUR, end=T0 + 60 * HOUR, limit=100)  # fmt: skip
    SignalsResponse.model_validate(early)
    assert early["causal"] is True
    assert early["note"] == (
        "the value at bar t uses only candles up to and including t (its close); "
        "act on it at the next bar's open"
    )
    assert early["item"] == "ema_cross:5:10:0:0"
    assert early["params"] == {"fast": 5, "slow": 10, "long_only": 0, "vol_gate": 0}
    assert early["positions"] == {"-1": "SHORT", "0": "FLAT", "1": "LONG"}
    later = ok(client, "/signals", interval="1h", strategy="ema_cross", params="5:10",
               start=T0 + 20 * HOUR, end=T0 + 100 * HOUR, limit=100)  # fmt: skip
    assert early["count"] == 41 and later["count"] == 81
    # the same bars give the same positions whether or not later candles exist
    assert later["rows"][: early["count"]] == early["rows"]
    positions = np.array([r["position"] for r in later["rows"]])
    assert set(positions.tolist()) <= {-1, 0, 1}
    first = later["data"]["first_ts_unix"]
    assert first == T0 + 11 * HOUR  # 9 warm-up bars before the window
    used = CLOSE[11:101]
    diff = (ema_loop(used, 5) - ema_loop(used, 10))[9:]
    np.testing.assert_array_equal(positions, np.sign(diff).astype(int))
    summary = later["summary"]
    assert math.isclose(summary["long"] + summary["flat"] + summary["short"], 1.0)
    assert summary["changes"] == int(np.count_nonzero(np.diff(positions)))


@pytest.mark.usefixtures("btc")
def test_signal_flags_and_invalid_strategies(client: TestClient) -> None:
    body = ok(client, "/signals", interval="1h", strategy="ema_cross", params="5:10",
              long_only="true", start=T0 + 20 * HOUR, end=T0 + 60 * HOUR, limit=100)  # fmt: skip
    assert body["item"] == "ema_cross:5:10:1:0"
    assert {r["position"] for r in body["rows"]} <= {0, 1}
    unknown = error(client, "/signals", 422, "invalid_spec", strategy="sma")
    assert unknown["parameter"] == "strategy"
    assert [v.split(" ")[0] for v in unknown["valid"]] == [
        "ema_cross:fast:slow:long_only:vol_gate", "rsi_mr:n:lower:upper:long_only:vol_gate",
        "bb_break:n:k:long_only:vol_gate"]  # fmt: skip
    too_many = error(client, "/signals", 422, "invalid_spec", strategy="ema_cross",
                     params="5:10:1")  # fmt: skip
    assert "at most 2 parameters (fast:slow)" in too_many["message"]
    crossed = error(client, "/signals", 422, "invalid_spec", strategy="ema_cross", params="10:5")
    assert "fast must be smaller than slow" in crossed["message"]


# --------------------------------------------------------------------------------- regimes
@pytest.mark.usefixtures("btc")
def test_regimes_labels_and_summary(client: TestClient) -> None:
    body = ok(client, "/regimes", interval="1h", start=T0, limit=100, vol_n=10, vov_m=10,
              lookback=20)  # fmt: skip
    RegimesResponse.model_validate(body)
    assert body["spec"].startswith("rvol:10:8760,vov:10:10:8760,vreg:10:20:0.6745,trend:20:14")
    vol_names = {m.name for m in VolRegime}
    trend_names = {m.name for m in TrendRegime}
    assert body["labels"]["vol_regime"] == {"-1": "MISSING", "0": "LOW", "1": "NORMAL",
                                            "2": "HIGH"}  # fmt: skip
    rows = body["rows"]
    assert len(rows) == 100
    assert {r["vol_regime"] for r in rows} <= vol_names
    assert {r["trend_regime"] for r in rows} <= trend_names
    assert all(VolRegime[r["vol_regime"]] == r["vol_regime_code"] for r in rows)
    assert all(TrendRegime[r["trend_regime"]] == r["trend_regime_code"] for r in rows)
    # warm-ups: realized vol from bar 10, vol regime from bar 30 (n + lookback)
    assert rows[9]["realized_vol"] is None and rows[10]["realized_vol"] is not None
    assert {r["vol_regime"] for r in rows[:30]} == {"MISSING"}
    assert "MISSING" not in {r["vol_regime"] for r in rows[30:]}
    logret = np.diff(np.log(CLOSE[:11]))
    np.testing.assert_allclose(rows[10]["realized_vol"], logret.std(ddof=1) * math.sqrt(8760),
                               rtol=1e-9)  # fmt: skip
    summary = body["summary"]
    assert summary["bars"] == 100
    for name in ("vol_regime", "trend_regime"):
        assert math.isclose(sum(summary[name].values()), 1.0)
    assert math.isclose(summary["vol_regime"]["MISSING"], 0.30)
    bad = error(client, "/regimes", 422, "invalid_spec", vol_n=1)
    assert "n must be in [2, 100000], got 1" in bad["message"]


# -------------------------------------------------------------------------- microstructure
def store_derivatives(database_url: str) -> None:
    engine = make_engine(database_url)
    rates = [0.0001, 0.0002, 0.0003, -0.0001]
    funding = pd.DataFrame(
        {"coin": "BTC", "ts": [T0 + h * HOUR for h in (0, 8, 16, 24)], "funding_rate": rates}
    ).assign(source="t")
    oi = pd.DataFrame(
        {
            "coin": "BTC",
            "ts": [T0, T0 + 12 * HOUR, T0 + 24 * HOUR],
            "open_interest": [1e3, 1.1e3, 1.21e3],
        }
    ).assign(source="t")
    try:
        with transaction(session_factory(engine)) as session:
            FundingRepository(session).upsert(funding, now=T0)
            OpenInterestRepository(session).upsert(oi, now=T0)
    finally:
        engine.dispose()
    snapshot = {"coin": "BTC", "ts": T0 + 24 * HOUR, "last_price": 101.0, "mark_price": 101.0,
                "index_price": 100.0, "source": "t"}  # fmt: skip
    seed_snapshot(database_url, snapshot, now=T0)


@pytest.mark.usefixtures("btc")
def test_microstructure_from_stored_derivatives(client: TestClient, database_url: str) -> None:
    store_derivatives(database_url)
    body = ok(client, "/market/microstructure", window="1d")
    MicrostructureResponse.model_validate(body)
    funding = body["funding"]
    assert funding["rate"] == -0.0001 and funding["ts_unix"] == T0 + 24 * HOUR
    assert funding["interval_s"] == 8 * HOUR and funding["interval_source"] == "inferred"
    assert funding["settlements_per_year"] == 3 * 365
    assert math.isclose(funding["annualized"], -0.0001 * 1095)
    assert funding["window_observations"] == 3  # settlements in (ts - 1d, ts]
    assert math.isclose(funding["window_mean_rate"], (0.0002 + 0.0003 - 0.0001) / 3)
    assert math.isclose(funding["window_mean_annualized"], (0.0004 / 3) * 1095)
    oi = body["open_interest"]
    assert (oi["open_interest"], oi["past_open_interest"], oi["past_ts_unix"]) == (1210, 1000, T0)
    assert math.isclose(oi["change"], 210.0) and math.isclose(oi["change_pct"], 21.0)
    basis = body["basis"]
    assert math.isclose(basis["basis_bps"], 100.0)
    assert math.isclose(basis["annualized"], 0.01 * 1095)
    assert basis["ts"] == "2024-03-02T00:00:00Z"
    no_liquidations = "no provider in use reports liquidations"
    assert body["liquidations"] == {"available": False, "value": None, "reason": no_liquidations}
    vol = body["volatility"]
    logret = pd.Series(np.log(CLOSE)).diff()
    rv = logret.rolling(24).std(ddof=1) * math.sqrt(8760)
    assert vol["bars"] == 24 and vol["candles_used"] == 48 and vol["reason"] is None
    np.testing.assert_allclose(vol["realized_vol"], rv.iloc[-1], rtol=1e-9)
    np.testing.assert_allclose(vol["vol_of_vol"], rv.iloc[-24:].std(ddof=1), rtol=1e-7)
    # as of an earlier time, with a window the open-interest history cannot cover
    past = ok(client, "/market/microstructure", window="2d", end=T0 + 12 * HOUR)
    assert past["funding"]["rate"] == 0.0002 and past["basis"]["available"] is False
    assert past["open_interest"]["change"] is None
    assert "stored history starts at 2024-03-01T00:00:00Z" in past["open_interest"]["reason"]


def test_microstructure_with_nothing_stored_is_200_with_reasons(client: TestClient) -> None:
    body = ok(client, "/market/microstructure", coin="ETH")
    MicrostructureResponse.model_validate(body)
    for piece in ("funding", "open_interest", "basis", "volatility", "liquidations"):
        assert body[piece]["available"] is False and body[piece]["reason"], piece
    assert body["funding"]["rate"] is None and body["basis"]["basis_bps"] is None
    assert body["volatility"]["realized_vol"] is None
    bad = error(client, "/market/microstructure", 422, "invalid_window", window="3 fortnights")
    assert "8h, 1d, 7d" in bad["message"]
    error(client, "/market/microstructure", 422, "invalid_window", window="30m")


# -------------------------------------------------------------------------------- features
def expected_cells(candles: list[dict[str, Any]], rows: int) -> dict[str, list[Any]]:
    """compute_indicators on the stored candles, last ``rows`` bars, as the API renders them."""
    fs = feature_set("1h")
    table = pd.DataFrame(candles)
    values = compute_indicators(
        fs.spec, *(table[c].to_numpy(float) for c in ("open", "high", "low", "close")),
        table["volume_base"].to_numpy(float), table["ts"].to_numpy(np.int64),
    )  # fmt: skip
    labels = {c for r in parse_indicator_spec(fs.spec) if r.spec.kind == "label"
              for c in r.columns.values()}  # fmt: skip
    out: dict[str, list[Any]] = {}
    for c in fs.columns:
        tail = values[c][-rows:]
        if tail.dtype.kind == "f":
            out[c] = [None if np.isnan(v) else float(v) for v in tail]
        else:
            out[c] = [None if c in labels and v == -1 else int(v) for v in tail]
    return out


def served(body: dict[str, Any]) -> dict[str, list[Any]]:
    return {c: [r[c] for r in body["rows"]] for c in body["columns"]}


@pytest.mark.usefixtures("btc")
def test_features_are_fresh_after_a_candle_changes(client: TestClient, database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert materialize(session_factory(engine), "BTC", "1h") == N_BARS
    finally:
        engine.dispose()
    body = ok(client, "/features", interval="1h", limit=10)
    FeaturesResponse.model_validate(body)
    assert body["version"] == "v1:1h" and body["recomputed"] == 0
    assert "never served" in body["freshness"]
    assert [r["ts_unix"] for r in body["rows"]] == [T0 + h * HOUR for h in range(110, 120)]
    assert served(body) == expected_cells(BARS, 10)
    # a late correction of bar 112's close (within its high/low)
    changed = [dict(r) for r in BARS]
    bar = changed[112]
    bar["close"] = (bar["high"] + bar["low"]) / 2
    engine = make_engine(database_url)
    try:
        with transaction(session_factory(engine)) as session:
            CandleRepository(session).upsert(frame([bar]))
    finally:
        engine.dispose()
    fresh = ok(client, "/features", interval="1h", limit=10)
    assert fresh["recomputed"] > 0
    assert served(fresh) == expected_cells(changed, 10)
    assert served(fresh)["ema_12"][-1] != served(body)["ema_12"][-1]
    assert served(fresh)["ema_12"][:2] == served(body)["ema_12"][:2]  # bars before 112 unchanged
    window = ok(client, "/features", interval="1h", start=T0 + 100 * HOUR, end=T0 + 104 * HOUR)
    assert window["count"] == 5 and window["recomputed"] == 0  # rows before bar 112 still valid
    empty = ok(client, "/features", interval="1h", start=T0 + 500 * HOUR)
    assert empty["count"] == 0 and empty["rows"] == [] and empty["recomputed"] == 0


def test_openapi_documents_every_analytics_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/indicators", "/signals", "/regimes", "/features", "/market/microstructure"):
        assert path in paths, path
