"""The fast JSON encoder against its plain reference, and time parsing at the edge."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serve_app.api.candles_io import candles_json, candles_json_reference, negotiate
from serve_app.timefmt import iso, iso_array, parse_time
from storage.candle_reads import CandleColumns
from storage.errors import ConfigurationError

HEADER = {"coin": "BTC", "interval": "1m", "quote_asset": "USDT"}


def _columns(n: int, *, seed: int, missing_every: int = 0) -> CandleColumns:
    rng = np.random.default_rng(seed)
    ts = 1_700_000_040 + 60 * np.arange(n, dtype=np.int64)
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    vq = rng.uniform(0, 1e6, n)
    tc = rng.integers(0, 10_000, n).astype(np.float64)
    if missing_every:
        vq[::missing_every] = np.nan
        tc[1::missing_every] = np.nan
    return CandleColumns(ts, close, close * 1.001, close * 0.999, close, rng.uniform(0, 9, n),
                         vq, tc)  # fmt: skip


@pytest.mark.parametrize(("n", "missing_every"), [(0, 0), (1, 0), (1, 1), (1000, 0), (997, 3)])
def test_fast_json_equals_the_reference_byte_for_byte(n: int, missing_every: int) -> None:
    candles = _columns(n, seed=n, missing_every=missing_every)
    fast = candles_json(candles, HEADER)
    assert fast == candles_json_reference(candles, HEADER)
    body = json.loads(fast)
    assert body["count"] == n and len(body["candles"]) == n


def test_json_hand_checked_row() -> None:
    candles = CandleColumns(
        np.array([1_709_251_200], dtype=np.int64), np.array([0.1 + 0.2]), np.array([1e300]),
        np.array([5e-324]), np.array([2.0]), np.array([0.0]), np.array([np.nan]),
        np.array([7.0]),
    )  # fmt: skip
    assert json.loads(candles_json(candles, HEADER))["candles"] == [
        {"ts": "2024-03-01T00:00:00Z", "ts_unix": 1709251200, "open": 0.30000000000000004,
         "high": 1e300, "low": 5e-324, "close": 2.0, "volume_base": 0.0, "volume_quote": None,
         "trade_count": 7}
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1709251200", 1_709_251_200),
        ("1709251200.9", 1_709_251_200),
        (" 0 ", 0),
        ("2024-03-01", 1_709_251_200),
        ("2024-03-01T00:00:00Z", 1_709_251_200),
        ("2024-03-01t00:00:00z", 1_709_251_200),
        ("2024-03-01T00:00:00", 1_709_251_200),
        ("2024-03-01T02:00:00+02:00", 1_709_251_200),
        ("2024-02-29T23:59:59.999Z", 1_709_251_199),
        ("2024-03-01 01:30", 1_709_256_600),
    ],
)
def test_parse_time_accepts_iso_and_unix(text: str, expected: int) -> None:
    assert parse_time(text, "start") == expected


@pytest.mark.parametrize("text", ["", "now", "2024-02-30", "1709251200000", "-1", "1e5"])
def test_parse_time_rejects_with_422(text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_time(text, "end")
    assert info.value.code == "invalid_time"
    assert "end=" in info.value.message


def test_iso_forms_agree() -> None:
    ts = np.array([0, 1_709_251_200, 4_102_444_799], dtype=np.int64)
    expected = ["1970-01-01T00:00:00Z", "2024-03-01T00:00:00Z", "2099-12-31T23:59:59Z"]
    assert iso_array(ts) == expected
    assert [iso(int(t)) for t in ts] == expected


@pytest.mark.parametrize(
    ("explicit", "accept", "expected"),
    [
        (None, None, "json"),
        (None, "*/*", "json"),
        (None, "text/csv;q=0.9, */*;q=0.1", "csv"),
        (None, "application/vnd.apache.parquet", "parquet"),
        (None, "application/x-parquet", "parquet"),
        ("json", "text/csv", "json"),
        ("parquet", None, "parquet"),
    ],
)
def test_negotiate(explicit: str | None, accept: str | None, expected: str) -> None:
    assert negotiate(explicit, accept) == expected  # type: ignore[arg-type]


def test_rows_are_the_plain_encoding_byte_for_byte() -> None:
    import orjson

    from serve_app.api.encoding import cells, rows, rows_reference

    rng = np.random.default_rng(9)
    ts = np.arange(50, dtype=np.int64) * 3_600 + 1_700_000_000
    values = rng.normal(size=50)
    values[[0, 3, 17]] = np.nan
    labels = rng.integers(-1, 3, 50)
    columns = {
        "ema_20": cells(values, "indicator"),
        "vreg": cells(labels, "label"),
        "name": [f"X{i % 3}" for i in range(50)],
        "big": cells(values * 1e300, "indicator"),
    }
    body = orjson.dumps({"rows": rows(ts, columns)})
    assert body == orjson.dumps({"rows": rows_reference(ts, columns)})
    assert orjson.dumps(rows(ts[:0], {"a": []})) == b"[]"


def test_rows_with_iso_equals_row_by_row() -> None:
    from serve_app.api.runs import rows_with_iso, with_iso

    rows = [
        {"entry_ts": 1_700_000_000, "exit_ts": None, "pnl": 1.5, "open": True, "n_ts": True},
        {"entry_ts": 1_700_003_600, "exit_ts": 1_700_007_200, "pnl": -2.0, "open": False,
         "n_ts": False},
    ]  # fmt: skip
    assert rows_with_iso(rows) == [with_iso(r) for r in rows]
    mixed = [{"a_ts": 1}, {"b_ts": 2}]
    assert rows_with_iso(mixed) == [with_iso(r) for r in mixed]
    assert rows_with_iso([]) == []
