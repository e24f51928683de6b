"""Funding, open interest and known gaps: keyed, idempotent, validated; on both backends."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage.derivatives import FundingRepository, KnownGapRepository, OpenInterestRepository
from storage.engine import transaction
from storage.errors import DataIntegrityError

H8 = 8 * 3600


def funding(rates: list[float], start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "coin": "BTC",
            "ts": [start + i * H8 for i in range(len(rates))],
            "funding_rate": rates,
            "mark_price": [100.0 + i for i in range(len(rates))],
            "source": "test",
        }
    )


def test_funding_round_trip_and_replace(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        FundingRepository(s).upsert(funding([0.0001, -0.0002, 0.0003]))
    with transaction(sessions) as s:
        FundingRepository(s).upsert(funding([0.0005], start=H8))
    with sessions() as s:
        repo = FundingRepository(s)
        frame = repo.frame("BTC")
        assert frame["ts"].tolist() == [0, H8, 2 * H8]
        assert frame["funding_rate"].tolist() == [0.0001, 0.0005, 0.0003]
        assert repo.latest_ts("BTC") == 2 * H8 and repo.latest_ts("ETH") is None


def test_funding_out_of_range_rejected(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(DataIntegrityError, match="out of"), transaction(sessions) as s:
        FundingRepository(s).upsert(funding([0.0001, 1.5]))
    with sessions() as s:
        assert FundingRepository(s).frame("BTC").empty


def test_open_interest_nullable_quote(sessions: sessionmaker[Session]) -> None:
    frame = pd.DataFrame(
        {
            "coin": "ETH",
            "ts": [3600, 7200],
            "open_interest": [10.0, 12.5],
            "open_interest_quote": [30000.0, None],
            "source": "t",
        }
    )
    with transaction(sessions) as s:
        OpenInterestRepository(s).upsert(frame)
    with sessions() as s:
        out = OpenInterestRepository(s).frame("ETH", start=3600, end=7200)
    assert out["open_interest"].tolist() == [10.0, 12.5]
    assert out["open_interest_quote"].iloc[0] == 30000.0
    assert pd.isna(out["open_interest_quote"].iloc[1])


def test_known_gaps_cover(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        KnownGapRepository(s).record(
            "BTC", "4h", start=14400, end=14400 * 7, missing=7, source="binance"
        )
    with sessions() as s:
        repo = KnownGapRepository(s)
        assert repo.covers("BTC", "4h", 14400 * 2, 14400 * 5)
        assert not repo.covers("BTC", "4h", 0, 14400 * 5)
        assert not repo.covers("BTC", "1h", 14400 * 2, 14400 * 5)
        (gap,) = repo.list("BTC")
        assert (gap.start_ts, gap.end_ts, gap.missing, gap.source) == (
            14400,
            100800,
            7,
            "binance",
        )
