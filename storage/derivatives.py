"""Funding-rate, open-interest and known-gap repositories (small tables, keyed upserts)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.errors import DataIntegrityError
from storage.models import Base, FundingRate, KnownGap, OpenInterest


def _keyed_upsert(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    key: Sequence[str],
) -> int:
    """INSERT … ON CONFLICT (key) DO UPDATE for small batches; returns rows written."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(model).values(list(rows))
    stmt = stmt.on_conflict_do_update(
        index_elements=list(key),
        set_={c: stmt.excluded[c] for c in rows[0] if c not in key},
    )
    session.execute(stmt)
    return len(rows)


def _frame_rows(
    frame: pd.DataFrame, required: Sequence[str], optional: Sequence[str], now: int
) -> list[dict[str, Any]]:
    missing = [c for c in (*required, "coin", "ts", "source") if c not in frame.columns]
    if missing:
        raise DataIntegrityError(f"frame is missing columns: {', '.join(missing)}")
    frame = frame.drop_duplicates(subset=["coin", "ts"], keep="last")
    rows = []
    for record in frame.to_dict("records"):
        row: dict[str, Any] = {"coin": str(record["coin"]), "ts": int(record["ts"])}
        for col in required:
            number = float(record[col])
            if not np.isfinite(number):
                raise DataIntegrityError(
                    f"{col} must be finite (coin {row['coin']}, ts {row['ts']})"
                )
            row[col] = number
        for col in optional:
            value = record.get(col)
            row[col] = None if value is None or pd.isna(value) else float(value)
        row["source"] = str(record["source"])
        row["ingested_at"] = now
        rows.append(row)
    return rows


class FundingRepository:
    """``funding_rates`` rows. Never commits."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def upsert(self, frame: pd.DataFrame, *, now: int | None = None) -> int:
        rows = _frame_rows(frame, ["funding_rate"], ["mark_price"], now or int(time.time()))
        bad = [r for r in rows if not -1 < r["funding_rate"] < 1]
        if bad:
            raise DataIntegrityError(f"funding rate out of (-1, 1): {bad[0]}")
        return _keyed_upsert(self.session, FundingRate, rows, ["coin", "ts"])

    def latest_ts(self, coin: str) -> int | None:
        value = self.session.scalar(
            select(func.max(FundingRate.ts)).where(FundingRate.coin == coin)
        )
        return None if value is None else int(value)

    def latest(self, coin: str, *, end: int | None = None) -> FundingRate | None:
        """The newest funding settlement of ``coin`` (at or before ``end``)."""
        query = select(FundingRate).where(FundingRate.coin == coin)
        if end is not None:
            query = query.where(FundingRate.ts <= end)
        return self.session.scalars(query.order_by(FundingRate.ts.desc()).limit(1)).first()

    def recent_ts(self, coin: str, *, up_to: int, limit: int) -> list[int]:
        """Settlement times of ``coin`` at or before ``up_to``, newest first, at most ``limit``."""
        query = (
            select(FundingRate.ts)
            .where(FundingRate.coin == coin, FundingRate.ts <= up_to)
            .order_by(FundingRate.ts.desc())
            .limit(limit)
        )
        return [int(t) for t in self.session.scalars(query)]

    def frame(self, coin: str, start: int | None = None, end: int | None = None) -> pd.DataFrame:
        query = select(FundingRate.ts, FundingRate.funding_rate, FundingRate.mark_price).where(
            FundingRate.coin == coin
        )
        if start is not None:
            query = query.where(FundingRate.ts >= start)
        if end is not None:
            query = query.where(FundingRate.ts <= end)
        rows = self.session.execute(query.order_by(FundingRate.ts)).all()
        return pd.DataFrame(rows, columns=["ts", "funding_rate", "mark_price"])


class OpenInterestRepository:
    """``open_interest`` rows. Never commits."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def upsert(self, frame: pd.DataFrame, *, now: int | None = None) -> int:
        rows = _frame_rows(
            frame, ["open_interest"], ["open_interest_quote"], now or int(time.time())
        )
        bad = [r for r in rows if r["open_interest"] < 0]
        if bad:
            raise DataIntegrityError(f"negative open interest: {bad[0]}")
        return _keyed_upsert(self.session, OpenInterest, rows, ["coin", "ts"])

    def latest_ts(self, coin: str) -> int | None:
        value = self.session.scalar(
            select(func.max(OpenInterest.ts)).where(OpenInterest.coin == coin)
        )
        return None if value is None else int(value)

    def latest(self, coin: str, *, end: int | None = None) -> OpenInterest | None:
        """The newest open-interest observation of ``coin`` (at or before ``end``)."""
        query = select(OpenInterest).where(OpenInterest.coin == coin)
        if end is not None:
            query = query.where(OpenInterest.ts <= end)
        return self.session.scalars(query.order_by(OpenInterest.ts.desc()).limit(1)).first()

    def first_ts(self, coin: str) -> int | None:
        value = self.session.scalar(
            select(func.min(OpenInterest.ts)).where(OpenInterest.coin == coin)
        )
        return None if value is None else int(value)

    def frame(self, coin: str, start: int | None = None, end: int | None = None) -> pd.DataFrame:
        query = select(
            OpenInterest.ts, OpenInterest.open_interest, OpenInterest.open_interest_quote
        ).where(OpenInterest.coin == coin)
        if start is not None:
            query = query.where(OpenInterest.ts >= start)
        if end is not None:
            query = query.where(OpenInterest.ts <= end)
        rows = self.session.execute(query.order_by(OpenInterest.ts)).all()
        return pd.DataFrame(rows, columns=["ts", "open_interest", "open_interest_quote"])


class KnownGapRepository:
    """Holes the provider has no data for, so backfill does not ask again every run."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def record(
        self, coin: str, interval: str, *, start: int, end: int, missing: int, source: str
    ) -> None:
        row = {
            "coin": coin,
            "interval": interval,
            "start_ts": start,
            "end_ts": end,
            "missing": missing,
            "source": source,
            "checked_at": int(time.time()),
        }
        _keyed_upsert(self.session, KnownGap, [row], ["coin", "interval", "start_ts"])

    def list(self, coin: str | None = None, interval: str | None = None) -> list[KnownGap]:
        query = select(KnownGap)
        if coin is not None:
            query = query.where(KnownGap.coin == coin)
        if interval is not None:
            query = query.where(KnownGap.interval == interval)
        return list(self.session.scalars(query.order_by(KnownGap.coin, KnownGap.start_ts)))

    def covers(self, coin: str, interval: str, start: int, end: int) -> bool:
        """True when a recorded gap spans the whole range [start, end]."""
        found = self.session.scalar(
            select(func.count())
            .select_from(KnownGap)
            .where(
                KnownGap.coin == coin,
                KnownGap.interval == interval,
                KnownGap.start_ts <= start,
                KnownGap.end_ts >= end,
            )
        )
        return bool(found)

    def forget(self, coin: str, interval: str) -> int:
        res = self.session.execute(
            delete(KnownGap).where(KnownGap.coin == coin, KnownGap.interval == interval)
        )
        return int(res.rowcount or 0)  # type: ignore[attr-defined]
