"""Market snapshots: keyed by (coin, ts), idempotent, validated."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage.engine import transaction
from storage.errors import DataIntegrityError
from storage.snapshots import SnapshotRepository


def snap(ts: int, last: float, **extra: object) -> dict[str, object]:
    return {
        "coin": "BTC",
        "ts": ts,
        "last_price": last,
        "bid": last - 1,
        "ask": last + 1,
        "funding_rate": 0.0001,
        "open_interest": 1234.5,
        "source": "test",
        **extra,
    }


def test_latest_and_replace(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        SnapshotRepository(s).upsert([snap(100, 50.0), snap(200, 60.0)])
    with transaction(sessions) as s:
        SnapshotRepository(s).upsert([snap(200, 61.0)])
    with sessions() as s:
        latest = SnapshotRepository(s).latest("BTC")
        assert latest is not None
        assert (latest.ts, latest.last_price, latest.bid, latest.ask) == (200, 61.0, 60.0, 62.0)
        assert SnapshotRepository(s).latest("ETH") is None


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (snap(1, 0.0), "last_price > 0"),
        (snap(1, 10.0, bid=12.0), "bid 12.0 above ask"),
        ({**snap(1, 10.0), "colour": "red"}, "unknown fields"),
    ],
)
def test_bad_snapshot_rejected(
    sessions: sessionmaker[Session], row: dict[str, object], message: str
) -> None:
    with pytest.raises(DataIntegrityError, match=message), transaction(sessions) as s:
        SnapshotRepository(s).upsert([snap(0, 5.0), row])
    with sessions() as s:
        assert SnapshotRepository(s).latest("BTC") is None
