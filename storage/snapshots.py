"""Market snapshot repository: idempotent upserts keyed by (coin, ts) and latest reads."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.errors import DataIntegrityError
from storage.models import MarketSnapshot

SNAPSHOT_FIELDS: tuple[str, ...] = (
    "coin",
    "ts",
    "last_price",
    "bid",
    "ask",
    "mark_price",
    "index_price",
    "volume_base_24h",
    "volume_quote_24h",
    "funding_rate",
    "open_interest",
    "source",
)


class SnapshotRepository:
    """Reads and idempotent writes of ``market_snapshots``. Never commits."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def upsert(self, rows: Iterable[Mapping[str, Any]], *, now: int | None = None) -> int:
        """Write snapshots (same (coin, ts) replaces); returns how many rows were given."""
        stamp = int(time.time()) if now is None else now
        batch: dict[tuple[str, int], dict[str, Any]] = {}
        for i, row in enumerate(rows):
            unknown = set(row) - set(SNAPSHOT_FIELDS)
            if unknown:
                raise DataIntegrityError(f"snapshot row {i} has unknown fields: {sorted(unknown)}")
            last = row.get("last_price")
            if last is None or not float(last) > 0:
                raise DataIntegrityError(f"snapshot row {i} needs last_price > 0, got {last!r}")
            bid, ask = row.get("bid"), row.get("ask")
            if bid is not None and ask is not None and float(bid) > float(ask):
                raise DataIntegrityError(f"snapshot row {i} has bid {bid} above ask {ask}")
            full = {f: row.get(f) for f in SNAPSHOT_FIELDS}
            full["source"] = full["source"] or "unknown"
            full["ingested_at"] = stamp
            if full["coin"] is None or full["ts"] is None:
                raise DataIntegrityError(f"snapshot row {i} needs coin and ts")
            batch[(str(full["coin"]), int(full["ts"]))] = full
        if not batch:
            return 0
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = insert(MarketSnapshot).values(list(batch.values()))
        stmt = stmt.on_conflict_do_update(
            index_elements=["coin", "ts"],
            set_={f: stmt.excluded[f] for f in (*SNAPSHOT_FIELDS[2:], "ingested_at")},
        )
        self.session.execute(stmt)
        return len(batch)

    def latest(self, coin: str, *, end: int | None = None) -> MarketSnapshot | None:
        """The newest snapshot of ``coin`` (at or before ``end``)."""
        query = select(MarketSnapshot).where(MarketSnapshot.coin == coin)
        if end is not None:
            query = query.where(MarketSnapshot.ts <= end)
        return self.session.scalars(query.order_by(MarketSnapshot.ts.desc()).limit(1)).first()

    def coins(self) -> set[str]:
        """Every coin with at least one stored snapshot."""
        return {str(c) for c in self.session.scalars(select(MarketSnapshot.coin).distinct())}

    def has_coin(self, coin: str) -> bool:
        query = select(MarketSnapshot.coin).where(MarketSnapshot.coin == coin).limit(1)
        return self.session.scalar(query) is not None
