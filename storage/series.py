"""Series ownership: every (coin, interval) candle series belongs to one source.

A series holds the rows of one *source family*: ``synthetic`` (the offline market), ``file``
(every file layout: ``file:kline12``, ``file:ohlcv6``, ... are one family, because one real
Binance dump in two formats is the same data), or an exchange market (``binance:spot``,
``binance:um``; spot and perpetual prices differ, so they are two). The exchange's own
published archives (``binance-archive:spot``, from ``squall download``) are that market's
data: they belong to the ``binance:spot`` family, so downloaded history and the live loop
share one series. The ``candles.source``
column keeps the exact provenance of each row; the ``series`` table records the family that
owns the series.

``CandleRepository.upsert`` claims the series for the batch's family inside the write
transaction, before any candle is written: the first writer of an empty series takes it, a
writer of another family gets ``SourceConflictError`` and nothing is written. The claim is
race-free: the ``series`` row is inserted with ``ON CONFLICT DO NOTHING`` and then read
``FOR UPDATE`` on Postgres (a concurrent claimer of the same key waits for the first to
commit and then sees its owner; a source change waits for writers in flight); on SQLite the
insert takes the database's single write lock, which is held to the commit.

``replace_source`` is the explicit way to change owner (``--replace-source``): inside the
time span of the new rows (first to last bar), every stored row that is not of the new
family, or whose bar the new rows do not have, is deleted, so that the span afterwards holds
exactly the new rows; rows outside the span are untouched and, when of another family,
counted in ``foreign_rows``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import Table, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.errors import SourceConflictError
from storage.models import Candle, KnownGap, Series

SYNTHETIC = "synthetic"
FILE = "file"
#: ``source_family`` as SQL over a ``source`` column (kept equal to the function; tested)
ARCHIVE_PREFIX = "binance-archive:"
FAMILY_SQL = (
    "CASE WHEN source = 'file' OR source LIKE 'file:%' THEN 'file' "
    "WHEN source LIKE 'binance-archive:%' THEN 'binance:' || substr(source, 17) "
    "ELSE source END"
)
_DELETE_CHUNK = 5000
_SERIES = cast(Table, Series.__table__)


def new_version() -> int:
    """A fresh series version: random, not a counter, so a series deleted and created again
    (or a database truncated and refilled) never repeats a version a reader has cached."""
    return secrets.randbits(62)


def source_family(source: str) -> str:
    """The family a row source belongs to: every ``file`` / ``file:<layout>`` is ``file``;
    ``binance-archive:<market>`` (the exchange's published archives) is ``binance:<market>``."""
    if source == FILE or source.startswith(FILE + ":"):
        return FILE
    if source.startswith(ARCHIVE_PREFIX):
        return "binance:" + source.removeprefix(ARCHIVE_PREFIX)
    return source


def is_exchange(source: str) -> bool:
    """Whether a source is an exchange, whose "no data" for a range is a real outage.

    The synthetic market and files cannot serve every range (the synthetic market has a
    window, a file has the bars it has): their empty answers are never exchange outages.
    """
    return source_family(source) not in (SYNTHETIC, FILE)


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SeriesInfo:
    """A series' owner: the source family whose rows it holds, and since when."""

    coin: str
    interval: str
    source: str
    created_at: int
    source_since: int
    foreign_rows: int

    @property
    def mixed(self) -> bool:
        """True while the series still holds rows of another source (see ``foreign_rows``)."""
        return self.foreign_rows > 0


@dataclass(frozen=True)
class Replacement:
    """What ``replace_source`` did to the span ``[start, end]`` of one series."""

    coin: str
    interval: str
    previous: str | None  # the owner before (None: the series was empty)
    source: str
    start: int
    end: int
    rewritten: int  # stored rows whose bar the new rows rewrite
    removed: int  # stored rows in the span whose bar the new rows do not have


def _info(row: Series) -> SeriesInfo:
    return SeriesInfo(
        row.coin, row.interval, row.source, row.created_at, row.source_since, row.foreign_rows
    )


class SeriesRepository:
    """Reads and claims of ``series``. Never commits: the caller owns the transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # ------------------------------------------------------------------------------ reads
    def get(self, coin: str, interval: str) -> SeriesInfo | None:
        row = self.session.execute(
            select(Series)
            .where(Series.coin == coin, Series.interval == interval)
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()
        return None if row is None else _info(row)

    def source_of(self, coin: str, interval: str) -> str | None:
        """The family owning the series, or None when it holds no candles yet."""
        return self.session.scalar(
            select(Series.source).where(Series.coin == coin, Series.interval == interval)
        )

    def all(self) -> list[SeriesInfo]:
        """Every series with its owner, by coin and interval (for listings and health)."""
        rows = self.session.scalars(select(Series).order_by(Series.coin, Series.interval))
        return [_info(r) for r in rows]

    def check(self, coin: str, interval: str, source: str) -> None:
        """Raise ``SourceConflictError`` if the series belongs to a family other than
        ``source``'s. A read-only early check (before fetching); ``claim`` is the binding one.
        """
        owner = self.source_of(coin, interval)
        family = source_family(source)
        if owner is not None and owner != family:
            raise self._conflict(coin, interval, owner, family, detail=source)

    # ----------------------------------------------------------------------------- claims
    def _lock(self, coin: str, interval: str, family: str, now: int) -> tuple[SeriesInfo, bool]:
        """Insert the series for ``family`` unless it exists, then read it locked.

        Returns the series and whether this call created it.
        """
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        values = {
            "coin": coin,
            "interval": interval,
            "source": family,
            "created_at": now,
            "source_since": now,
            "foreign_rows": 0,
            "version": new_version(),
        }
        stmt = insert(_SERIES).values(values)
        stmt = stmt.on_conflict_do_nothing(index_elements=["coin", "interval"])
        conn = self.session.connection()  # Core statements: this runs once per written page
        created = conn.execute(stmt.returning(_SERIES.c.coin)).first() is not None
        cols = _SERIES.c
        row = conn.execute(
            select(cols.coin, cols.interval, cols.source, cols.created_at, cols.source_since,
                   cols.foreign_rows)
            .where(cols.coin == coin, cols.interval == interval)
            .with_for_update()
        ).one()  # fmt: skip
        return SeriesInfo(*row), created

    def claim(
        self,
        coin: str,
        interval: str,
        source: str,
        *,
        rows: int | None = None,
        now: int | None = None,
    ) -> SeriesInfo:
        """Make sure the series may take rows of ``source``; call before writing any.

        An unowned series becomes ``source``'s family's. A series owned by another family
        raises ``SourceConflictError`` (``rows``: how many were refused, for the message).
        """
        family = source_family(source)
        info, _ = self._lock(coin, interval, family, int(time.time()) if now is None else now)
        if info.source != family:
            raise self._conflict(coin, interval, info.source, family, rows=rows, detail=source)
        return info

    def version(self, coin: str, interval: str) -> int | None:
        """The series' version (None: no such series): equal versions, equal candles, so a
        reader may keep what it read (one primary-key lookup)."""
        value = self.session.scalar(
            select(Series.version).where(Series.coin == coin, Series.interval == interval)
        )
        return None if value is None else int(value)

    def bump(self, coin: str, interval: str) -> None:
        """Give the series a new version after a change of its candles (inside the writing
        transaction)."""
        self.session.execute(
            update(Series)
            .where(Series.coin == coin, Series.interval == interval)
            .values(version=new_version())
        )

    def replace_source(
        self, coin: str, interval: str, source: str, ts: npt.NDArray[np.int64], *, now: int
    ) -> Replacement:
        """Make ``source``'s family the owner and clear the span of the new bars ``ts``.

        Inside ``[min(ts), max(ts)]`` every stored row of another family, and every stored row
        whose bar is not in ``ts``, is deleted (the caller then writes the new rows); rows
        outside the span are untouched. Known gaps recorded by another source are forgotten.
        Call before the new rows are written, in the same transaction.
        """
        family = source_family(source)
        start, end = int(ts.min()), int(ts.max())
        info, created = self._lock(coin, interval, family, now)
        if created:
            return Replacement(coin, interval, None, family, start, end, 0, 0)
        doomed, covered = self._delete_in_span(coin, interval, family, ts, whole_span=True)
        if info.source != family:
            self.session.execute(
                update(Series)
                .where(Series.coin == coin, Series.interval == interval)
                .values(source=family, source_since=now)
            )
        for gap in self.session.scalars(
            select(KnownGap).where(KnownGap.coin == coin, KnownGap.interval == interval)
        ):
            if source_family(gap.source) != family:
                self.session.delete(gap)
        self.session.flush()
        return Replacement(
            coin,
            interval,
            info.source,
            family,
            start,
            end,
            rewritten=int((doomed & covered).sum()),
            removed=int((doomed & ~covered).sum()),
        )

    def evict_foreign(
        self, coin: str, interval: str, source: str, ts: npt.NDArray[np.int64]
    ) -> int:
        """Delete the stored rows of another family at the bars ``ts`` (the owner is about to
        write them): how the owner's writes clean a mixed series. Returns rows deleted."""
        doomed, _ = self._delete_in_span(
            coin, interval, source_family(source), ts, whole_span=False
        )
        return int(doomed.sum())

    def _delete_in_span(
        self,
        coin: str,
        interval: str,
        family: str,
        ts: npt.NDArray[np.int64],
        *,
        whole_span: bool,
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Delete stored rows in ``[min(ts), max(ts)]`` of another family than ``family``
        and, with ``whole_span``, those whose bar is not in ``ts`` (without it, rows at bars
        not in ``ts`` stay). Returns (deleted, bar in ``ts``) per stored row of the span."""
        start, end = int(ts.min()), int(ts.max())
        in_span = (Candle.coin == coin, Candle.interval == interval, Candle.ts.between(start, end))
        stored = self.session.execute(select(Candle.ts, Candle.source).where(*in_span)).all()
        old_ts = np.fromiter((r[0] for r in stored), np.int64, len(stored))
        foreign = np.fromiter((source_family(r[1]) != family for r in stored), bool, len(stored))
        covered = np.isin(old_ts, ts)
        doomed = (foreign | ~covered) if whole_span else (foreign & covered)
        if len(stored) and doomed.all():
            self.session.execute(delete(Candle).where(*in_span))
        elif doomed.any():
            victims = old_ts[doomed].tolist()
            for i in range(0, len(victims), _DELETE_CHUNK):
                chunk = victims[i : i + _DELETE_CHUNK]
                self.session.execute(delete(Candle).where(*in_span[:2], Candle.ts.in_(chunk)))
        return doomed, covered

    def refresh_foreign_rows(self, coin: str, interval: str) -> int:
        """Recount the rows of other families in the series (after writes that change it)."""
        count = text(
            f'SELECT count(*) FROM candles WHERE coin = :coin AND "interval" = :interval '
            f"AND {FAMILY_SQL} <> :owner"
        )
        owner = self.source_of(coin, interval)
        if owner is None:
            return 0
        n = int(self.session.scalar(count, {"coin": coin, "interval": interval, "owner": owner}))
        self.session.execute(
            update(Series)
            .where(Series.coin == coin, Series.interval == interval)
            .values(foreign_rows=n)
        )
        return n

    def forget(self, coin: str, interval: str) -> int:
        """Drop the series' owner (its candles must be gone too); returns rows deleted."""
        res = self.session.execute(
            delete(Series).where(Series.coin == coin, Series.interval == interval)
        )
        return int(res.rowcount or 0)  # type: ignore[attr-defined]

    # ----------------------------------------------------------------------------- errors
    def _conflict(
        self,
        coin: str,
        interval: str,
        owner: str,
        family: str,
        *,
        rows: int | None = None,
        detail: str | None = None,
    ) -> SourceConflictError:
        first, last, count = self.session.execute(
            select(func.min(Candle.ts), func.max(Candle.ts), func.count()).where(
                Candle.coin == coin, Candle.interval == interval
            )
        ).one()
        plural = "" if count == 1 else "s"
        stored = (
            f"{count} row{plural}, {_iso(int(first))} .. {_iso(int(last))}"
            if count
            else "no rows yet"
        )
        info = self.get(coin, interval)
        if info is not None and info.foreign_rows:
            stored += f", {info.foreign_rows} of them still of other sources"
        return SourceConflictError(
            coin, interval, owner, family, rows=rows, stored=stored, detail=detail
        )
