"""Hand-made candles for the API tests, and a helper that stores them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from storage.candles import CandleRepository
from storage.engine import make_engine, session_factory, transaction
from storage.snapshots import SnapshotRepository

T0 = 1_709_251_200  # 2024-03-01T00:00:00Z
HOUR = 3_600


def candle(coin: str, interval: str, ts: int, i: int, **overrides: Any) -> dict[str, Any]:
    """Bar number ``i``: open 100+i, high open+2, low open-1, close open+1, volume 10+i,
    notional 1000+i, 50+i trades (override any field; None means unknown)."""
    row: dict[str, Any] = {
        "coin": coin,
        "interval": interval,
        "ts": ts,
        "open": 100.0 + i,
        "high": 102.0 + i,
        "low": 99.0 + i,
        "close": 101.0 + i,
        "volume_base": 10.0 + i,
        "volume_quote": 1000.0 + i,
        "trade_count": 50 + i,
        "source": "test",
    }
    row.update(overrides)
    return row


def frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    out = pd.DataFrame(list(rows))
    for col in ("volume_quote", "trade_count"):
        out[col] = out[col].astype(np.float64)  # None -> NaN (unknown)
    return out


def seed(database_url: str, rows: Sequence[dict[str, Any]]) -> None:
    engine = make_engine(database_url)
    try:
        with transaction(session_factory(engine)) as session:
            CandleRepository(session).upsert(frame(rows))
    finally:
        engine.dispose()


def seed_snapshot(database_url: str, row: dict[str, Any], now: int) -> None:
    engine = make_engine(database_url)
    try:
        with transaction(session_factory(engine)) as session:
            SnapshotRepository(session).upsert([row], now=now)
    finally:
        engine.dispose()
