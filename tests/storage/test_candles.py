"""Candle upserts and reads, on SQLite and Postgres (``database_url`` is parametrised)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage.candles import CandleRepository, UpsertResult
from storage.engine import transaction
from storage.errors import DataIntegrityError
from storage.models import Candle

H = 3600
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def candles(n: int, *, coin: str = "BTC", interval: str = "1h", start: int = T0) -> pd.DataFrame:
    """n candles whose values depend only on the bar's index k since T0 (open = 100 + k)."""
    step = {"1h": H, "1m": 60, "1d": 86_400}[interval]
    i = (start - T0) // step + np.arange(n, dtype=np.float64)
    return pd.DataFrame(
        {
            "coin": coin,
            "interval": interval,
            "ts": T0 + i.astype(np.int64) * step,
            "open": 100.0 + i,
            "high": 102.0 + i,
            "low": 99.0 + i,
            "close": 101.0 + i,
            "volume_base": 10.0 + i,
            "volume_quote": 1000.0 + i,
            "trade_count": 5.0 + i,
            "source": "test",
        }
    )


def count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Candle)) or 0)


def upsert(sessions: sessionmaker[Session], frame: pd.DataFrame) -> UpsertResult:
    with transaction(sessions) as s:
        return CandleRepository(s).upsert(frame)


def test_insert_then_same_page_again_changes_nothing(sessions: sessionmaker[Session]) -> None:
    page = candles(50)
    assert upsert(sessions, page) == UpsertResult(received=50, inserted=50)
    assert upsert(sessions, page) == UpsertResult(received=50, unchanged=50)
    assert count(sessions) == 50


def test_overlapping_page_counts_inserted_updated_unchanged(
    sessions: sessionmaker[Session],
) -> None:
    upsert(sessions, candles(10))
    page = candles(15, start=T0 + 5 * H)  # rows 5..19: 5 overlap, 10 new
    page.loc[0, ["close", "high"]] = [104.5, 110.0]  # row 5 changed
    result = upsert(sessions, page)
    assert result == UpsertResult(received=15, inserted=10, updated=1, unchanged=4)
    with sessions() as s:
        row = s.get(Candle, ("BTC", "1h", T0 + 5 * H))
        assert row is not None
        assert (row.close, row.high, row.open) == (104.5, 110.0, 105.0)
    assert count(sessions) == 20


def test_rows_before_and_after_and_inside_stored_range(sessions: sessionmaker[Session]) -> None:
    upsert(sessions, candles(10, start=T0 + 10 * H))  # rows 10..19
    page = pd.concat([candles(30)])  # rows 0..29: 10 before, 10 inside, 10 after
    page.loc[12, "volume_base"] = 0.0
    assert upsert(sessions, page) == UpsertResult(received=30, inserted=20, updated=1, unchanged=9)
    with sessions() as s:
        frame = CandleRepository(s).frame("BTC", "1h")
    assert frame["ts"].tolist() == [T0 + k * H for k in range(30)]
    assert frame.loc[12, "volume_base"] == 0.0
    assert frame.loc[29, "close"] == 130.0


def test_duplicate_keys_in_a_batch_last_wins(sessions: sessionmaker[Session]) -> None:
    page = candles(3)
    dup = page.iloc[[1]].assign(close=150.0, high=160.0)
    result = upsert(sessions, pd.concat([page, dup]))
    assert result == UpsertResult(received=4, duplicates=1, inserted=3)
    with sessions() as s:
        row = s.get(Candle, ("BTC", "1h", T0 + H))
        assert row is not None and row.close == 150.0


def test_nulls_round_trip(sessions: sessionmaker[Session]) -> None:
    page = candles(4)
    page.loc[[1, 2], "volume_quote"] = np.nan
    page.loc[[2, 3], "trade_count"] = np.nan
    upsert(sessions, page)
    with sessions() as s:
        rows = s.scalars(select(Candle).order_by(Candle.ts)).all()
        assert [r.volume_quote for r in rows] == [1000.0, None, None, 1003.0]
        assert [r.trade_count for r in rows] == [5, 6, None, None]
    # NaN compared with stored NULL counts as unchanged
    assert upsert(sessions, page).unchanged == 4


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("high", 99.5, "high below max(open, close)"),
        ("low", 107.5, "low above min(open, close)"),
        ("open", -1.0, "price <= 0"),
        ("close", np.nan, "non-finite price"),
        ("volume_base", -0.1, "negative volume_base"),
        ("volume_quote", -5.0, "negative or infinite volume_quote"),
        ("trade_count", 1.5, "fractional trade_count"),
        ("ts", T0 + 7 * H + 60, "not aligned"),
        ("interval", "7m", "unknown interval"),
        ("coin", "", "empty or over-long coin"),
    ],
)
def test_invalid_row_rejects_whole_batch_naming_it(
    sessions: sessionmaker[Session], column: str, value: object, message: str
) -> None:
    page = candles(10)
    page[column] = page[column].astype(object)
    page.loc[7, column] = value
    with pytest.raises(DataIntegrityError) as err:
        upsert(sessions, page)
    assert "row 7" in str(err.value) and message in str(err.value)
    assert "nothing written" in str(err.value)
    assert count(sessions) == 0


def test_database_enforces_ohlc_and_alignment_without_the_code(
    sessions: sessionmaker[Session],
) -> None:
    bad_rows = [
        "'BTC', '1h', 1704067200, 100, 99, 98, 100, 1, NULL, NULL",  # high < open
        "'BTC', '1h', 1704067200, 100, 101, 100.5, 100, 1, NULL, NULL",  # low > open
        "'BTC', '1h', 1704067260, 100, 101, 99, 100, 1, NULL, NULL",  # misaligned
        "'BTC', '1h', 1704067200, 100, 101, 99, 100, -1, NULL, NULL",  # negative volume
        "'BTC', '1h', 1704067200, 100, 101, 99, 100, 1, -2, NULL",  # negative quote volume
        "'BTC', '9h', 1704067200, 100, 101, 99, 100, 1, NULL, NULL",  # unknown interval
    ]
    for values in bad_rows:
        with pytest.raises(IntegrityError), transaction(sessions) as s:
            s.execute(
                text(
                    'INSERT INTO candles (coin, "interval", ts, open, high, low, close, '
                    "volume_base, volume_quote, trade_count, source, ingested_at) "
                    f"VALUES ({values}, 'sql', 0)"
                )
            )
    assert count(sessions) == 0


def test_failed_transaction_writes_nothing(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(RuntimeError), transaction(sessions) as s:
        CandleRepository(s).upsert(candles(5))
        raise RuntimeError("caller fails after the upsert")
    assert count(sessions) == 0


def test_several_series_in_one_batch(sessions: sessionmaker[Session]) -> None:
    page = pd.concat([candles(5), candles(3, coin="ETH"), candles(4, interval="1m")])
    assert upsert(sessions, page).inserted == 12
    with sessions() as s:
        cov = {
            (c.coin, c.interval): (c.first_ts, c.last_ts, c.count)
            for c in CandleRepository(s).coverage()
        }
    assert cov == {
        ("BTC", "1h"): (T0, T0 + 4 * H, 5),
        ("ETH", "1h"): (T0, T0 + 2 * H, 3),
        ("BTC", "1m"): (T0, T0 + 180, 4),
    }


def test_reads_latest_first_and_ranges(sessions: sessionmaker[Session]) -> None:
    upsert(sessions, candles(100))
    with sessions() as s:
        repo = CandleRepository(s)
        latest = repo.frame("BTC", "1h", limit=3, newest_first=True)
        assert latest["ts"].tolist() == [T0 + 99 * H, T0 + 98 * H, T0 + 97 * H]
        window = repo.frame("BTC", "1h", start=T0 + 10 * H, end=T0 + 12 * H)
        assert window["close"].tolist() == [111.0, 112.0, 113.0]
        assert repo.latest_ts("BTC", "1h") == T0 + 99 * H
        assert repo.latest_ts("BTC", "1d") is None


def test_holes_are_found(sessions: sessionmaker[Session]) -> None:
    page = candles(20)
    upsert(sessions, page.drop(index=[3, 4, 5, 11]))
    with sessions() as s:
        holes = CandleRepository(s).holes("BTC", "1h")
    assert holes == [(T0 + 2 * H, T0 + 6 * H), (T0 + 10 * H, T0 + 12 * H)]


def test_latest_first_read_uses_the_primary_key_not_a_sort(
    sessions: sessionmaker[Session], database_url: str
) -> None:
    upsert(sessions, candles(200))
    sql = (
        "SELECT * FROM candles WHERE coin = 'BTC' AND \"interval\" = '1h' ORDER BY ts DESC LIMIT 10"
    )
    with sessions() as s:
        if database_url.startswith("sqlite"):
            plan = " ".join(str(r) for r in s.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
            assert "USING INDEX" in plan.upper() or "PRIMARY KEY" in plan.upper()
            assert "TEMP B-TREE" not in plan.upper()
        else:
            s.execute(text("SET LOCAL enable_seqscan = off"))
            plan = " ".join(str(r[0]) for r in s.execute(text(f"EXPLAIN {sql}")))
            assert "Index Scan Backward" in plan and "Sort" not in plan
