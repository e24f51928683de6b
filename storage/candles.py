"""Candle repository: idempotent bulk upserts and the reads the API and ingestion need.

Postgres: the batch is streamed with binary COPY (the buffer is built by NumPy, no per-row
Python) into a temporary staging table, then merged with one ``INSERT … ON CONFLICT DO UPDATE
… WHERE IS DISTINCT FROM`` whose ``RETURNING (xmax = 0)`` tells inserts from updates.
SQLite: existing rows in the batch's range are read once and compared in NumPy; only new and
changed rows are written, with ``INSERT … ON CONFLICT DO UPDATE``.
Both leave unchanged rows untouched, so writing the same page twice changes nothing.
Before any row of a series is written, the series is claimed for the batch's source
(``storage.series``): rows of another source than the series' owner are refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from storage.candle_reads import fetch_candle_rows
from storage.columns import CANDLE_COLUMNS, CANDLE_VALUES
from storage.errors import DataIntegrityError
from storage.intervals import interval_seconds
from storage.models import Candle
from storage.series import SeriesRepository, source_family
from storage.validation import prepare_candles

_NUMERIC = ("ts", *CANDLE_VALUES)
_INTEGER = frozenset({"ts", "trade_count", "ingested_at"})
_COPY_CHUNK_ROWS = 200_000
_PG_STAGE = "_squall_candles_stage"


@dataclass(frozen=True)
class UpsertResult:
    """What an upsert did: rows received, duplicates dropped, and the effect on the table."""

    received: int = 0
    duplicates: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    #: stored rows of another source rewritten with the new source's bar (``replace_source``,
    #: or the owner writing over the foreign rows of a mixed series)
    replaced: int = 0
    #: ``replace_source`` only: stored rows of the span deleted (the new rows lack that bar)
    removed: int = 0

    def __add__(self, other: UpsertResult) -> UpsertResult:
        return UpsertResult(
            *(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__)
        )

    def as_dict(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True)
class SeriesCoverage:
    coin: str
    interval: str
    first_ts: int
    last_ts: int
    count: int


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def _binary_tuples(
    group: pd.DataFrame, names: Sequence[str], constants: dict[str, str | int]
) -> bytes:
    """PostgreSQL binary COPY tuples for ``candles`` columns, built by NumPy, no row loop.

    ``names`` is the column order of the COPY; ``constants`` holds per-group values (coin,
    interval, source, ingested_at) written into every tuple; numeric columns come from
    ``group``; NaN in the nullable columns becomes NULL.
    The tuples are laid out as one packed structured array per NULL pattern.
    """
    nan_vq = np.isnan(group["volume_quote"].to_numpy(np.float64))
    nan_tc = np.isnan(group["trade_count"].to_numpy(np.float64))
    parts = []
    for vq_null in (False, True):
        for tc_null in (False, True):
            mask = (nan_vq == vq_null) & (nan_tc == tc_null)
            if not mask.any():
                continue
            part = group[mask]
            null = {"volume_quote": vq_null, "trade_count": tc_null}
            spec: list[tuple[str, str]] = [("n", ">i2")]
            for name in names:
                spec.append((f"len_{name}", ">i4"))
                value = constants.get(name)
                if null.get(name):
                    continue
                if isinstance(value, str):
                    if value:
                        spec.append((name, f"S{len(value.encode())}"))
                else:
                    spec.append((name, ">i8" if name in _INTEGER or value is not None else ">f8"))
            rows = np.empty(len(part), dtype=np.dtype(spec))
            rows["n"] = len(names)
            for name in names:
                value = constants.get(name)
                if null.get(name):
                    rows[f"len_{name}"] = -1
                elif isinstance(value, str):
                    raw = value.encode()
                    rows[f"len_{name}"] = len(raw)
                    if raw:
                        rows[name] = raw
                elif value is not None:
                    rows[f"len_{name}"] = 8
                    rows[name] = value
                else:
                    rows[f"len_{name}"] = 8
                    column = part[name].to_numpy()
                    rows[name] = column.astype(np.int64) if name in _INTEGER else column
            parts.append(rows.tobytes())
    return b"".join(parts)


def _copy(
    cur: Any, table: str, group: pd.DataFrame, names: Sequence[str], constants: dict[str, str | int]
) -> None:
    """Stream ``group`` into ``table`` with one binary COPY, in chunks of bounded memory."""
    columns = ", ".join(f'"{n}"' for n in names)
    sql = f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
    payloads = (
        _binary_tuples(group.iloc[i : i + _COPY_CHUNK_ROWS], names, constants)
        for i in range(0, len(group), _COPY_CHUNK_ROWS)
    )
    with cur.copy(sql) as copy:
        copy.write(_COPY_HEADER)
        for payload in payloads:
            copy.write(payload)
        copy.write(_COPY_TRAILER)


_PG_MERGE = f"""
WITH r AS (
  INSERT INTO candles AS c (coin, "interval", ts, open, high, low, close, volume_base,
                            volume_quote, trade_count, source, ingested_at)
  SELECT %(coin)s, %(interval)s, ts, open, high, low, close, volume_base,
         volume_quote, trade_count, %(source)s, %(now)s
  FROM {_PG_STAGE}
  ON CONFLICT (coin, "interval", ts) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume_base = EXCLUDED.volume_base, volume_quote = EXCLUDED.volume_quote,
    trade_count = EXCLUDED.trade_count, source = EXCLUDED.source,
    ingested_at = EXCLUDED.ingested_at
  WHERE (c.open, c.high, c.low, c.close, c.volume_base, c.volume_quote, c.trade_count)
        IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close,
                          EXCLUDED.volume_base, EXCLUDED.volume_quote, EXCLUDED.trade_count)
  RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM r
"""

_SQLITE_UPSERT = """
INSERT INTO candles (coin, "interval", ts, open, high, low, close, volume_base, volume_quote,
                     trade_count, source, ingested_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (coin, "interval", ts) DO UPDATE SET
  open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
  volume_base = excluded.volume_base, volume_quote = excluded.volume_quote,
  trade_count = excluded.trade_count, source = excluded.source,
  ingested_at = excluded.ingested_at
"""


class CandleRepository:
    """Reads and idempotent writes of ``candles``. Never commits: the caller owns the session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def _dialect(self) -> str:
        return self.session.get_bind().dialect.name

    # ----------------------------------------------------------------------------- writes
    def upsert(
        self, frame: pd.DataFrame, *, now: int | None = None, replace_source: bool = False
    ) -> UpsertResult:
        """Insert new candles, update changed ones, leave identical ones alone.

        The whole batch is validated first (``DataIntegrityError`` names the first bad row and
        nothing is written); duplicate keys inside the batch are dropped, last wins. Each
        series in the batch is then claimed for the batch's source family before any of its
        rows is written (``storage.series``): a series owned by another source raises
        ``SourceConflictError`` and the transaction writes nothing. With ``replace_source``
        the batch's source takes the series over instead: inside the span of its bars the
        series afterwards holds exactly the batch (``replaced`` / ``removed`` count what it
        changed); rows outside the span are untouched.
        """
        prepared = prepare_candles(frame)
        received = len(frame)
        result = UpsertResult(received=received, duplicates=received - len(prepared))
        if prepared.empty:
            return result
        stamp = int(time.time()) if now is None else now
        write = self._upsert_pg if self._dialect == "postgresql" else self._upsert_sqlite
        owners = SeriesRepository(self.session)
        # one claim per series, always in (coin, interval) order: concurrent writers of
        # several series lock them in the same order and cannot deadlock
        for (coin_key, interval_key), group in prepared.groupby(["coin", "interval"], sort=True):
            coin, interval = str(coin_key), str(interval_key)
            sources = sorted(str(s) for s in group["source"].unique())
            families = sorted({source_family(s) for s in sources})
            if len(families) > 1:
                raise DataIntegrityError(
                    f"batch rejected, nothing written: its {coin} {interval} rows come from "
                    f"several sources ({', '.join(sources)}); a series holds one source"
                )
            replaced = removed = 0
            if replace_source:
                ts = group["ts"].to_numpy(np.int64)
                done = owners.replace_source(coin, interval, sources[0], ts, now=stamp)
                replaced, removed = done.rewritten, done.removed
            info = owners.claim(coin, interval, sources[0], rows=len(group), now=stamp)
            if info.foreign_rows and not replace_source:  # a mixed series: the owner's
                replaced = owners.evict_foreign(  # bars replace the foreign rows at them
                    coin, interval, sources[0], group["ts"].to_numpy(np.int64)
                )
            changed = replaced + removed
            for source, part in group.groupby("source", sort=True):
                inserted, updated = write(part, coin, interval, str(source), stamp)
                changed += inserted + updated
                result = result + UpsertResult(
                    inserted=inserted, updated=updated, unchanged=len(part) - inserted - updated
                )
            if changed:
                owners.bump(coin, interval)
            # rows rewritten by a replacement were deleted and written again: not new bars
            result = result + UpsertResult(inserted=-replaced, replaced=replaced, removed=removed)
            if replace_source or info.foreign_rows:
                owners.refresh_foreign_rows(coin, interval)
        return result

    def _upsert_pg(
        self, group: pd.DataFrame, coin: str, interval: str, source: str, now: int
    ) -> tuple[int, int]:
        """Rows outside the stored range are COPYed straight in; the rest are merged."""
        raw = self.session.connection().connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:
            cur.execute(
                'SELECT min(ts), max(ts) FROM candles WHERE coin = %s AND "interval" = %s',
                (coin, interval),
            )
            bounds = cur.fetchone()
            ts = group["ts"].to_numpy(np.int64)
            if bounds is None or bounds[0] is None:
                outside = np.ones(len(group), dtype=bool)
            else:
                outside = (ts < int(bounds[0])) | (ts > int(bounds[1]))
            inserted = updated = 0
            if outside.any():
                appended = group[outside]
                constants: dict[str, str | int] = {
                    "coin": coin,
                    "interval": interval,
                    "source": source,
                    "ingested_at": now,
                }
                columns = ["coin", "interval", *_NUMERIC, "source", "ingested_at"]
                cur.execute("SAVEPOINT squall_append")
                try:
                    _copy(cur, "candles", appended, columns, constants)
                except Exception as exc:  # a concurrent writer got there first: merge instead
                    if getattr(exc, "sqlstate", None) != "23505":
                        raise
                    cur.execute("ROLLBACK TO SAVEPOINT squall_append")
                    outside[:] = False
                else:
                    cur.execute("RELEASE SAVEPOINT squall_append")
                    inserted += int(outside.sum())
            if not outside.all():
                cur.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {_PG_STAGE} (ts bigint, open float8, "
                    "high float8, low float8, close float8, volume_base float8, "
                    "volume_quote float8, trade_count bigint) ON COMMIT DELETE ROWS"
                )
                cur.execute(f"TRUNCATE {_PG_STAGE}")
                _copy(cur, _PG_STAGE, group[~outside], _NUMERIC, {})
                cur.execute(
                    _PG_MERGE, {"coin": coin, "interval": interval, "source": source, "now": now}
                )
                row = cur.fetchone()
                assert row is not None
                inserted += int(row[0])
                updated += int(row[1])
            return inserted, updated

    def _upsert_sqlite(
        self, group: pd.DataFrame, coin: str, interval: str, source: str, now: int
    ) -> tuple[int, int]:
        ts = group["ts"].to_numpy(np.int64)
        existing = self.frame(coin, interval, start=int(ts.min()), end=int(ts.max()))
        new_vals = group.set_index("ts")[list(CANDLE_VALUES)]
        old_vals = existing.set_index("ts")[list(CANDLE_VALUES)].reindex(new_vals.index)
        present = old_vals["open"].notna().to_numpy()
        a = new_vals.to_numpy(np.float64)
        b = old_vals.to_numpy(np.float64)
        same = ((a == b) | (np.isnan(a) & np.isnan(b))).all(axis=1)
        write = ~(present & same)
        to_write = group[write]
        if not to_write.empty:
            rows = [
                (
                    coin,
                    interval,
                    int(t),
                    o,
                    h,
                    lo,
                    c,
                    vb,
                    None if np.isnan(vq) else vq,
                    None if np.isnan(tc) else int(tc),
                    source,
                    now,
                )
                for t, o, h, lo, c, vb, vq, tc in zip(
                    *(to_write[col].to_numpy() for col in _NUMERIC), strict=True
                )
            ]
            raw = self.session.connection().connection.driver_connection
            assert raw is not None
            raw.executemany(_SQLITE_UPSERT, rows)
        inserted = int((~present).sum())
        return inserted, int(write.sum()) - inserted

    # ------------------------------------------------------------------------------ reads
    def frame(
        self,
        coin: str,
        interval: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> pd.DataFrame:
        """Candles of one series with ``start <= ts <= end`` as a canonical frame, by ts.

        Rows are ascending by ``ts``; with ``newest_first`` they are **descending** (newest
        first), so with a ``limit`` that gives the latest ``limit`` candles. Callers that want
        the latest N in time order sort the result.
        """
        rows = fetch_candle_rows(
            self.session, coin, interval, start=start, end=end, limit=limit,
            latest=newest_first, with_source=True,
        )  # fmt: skip
        # column-wise from the raw tuples (no ORM rows): None (unknown) becomes NaN
        columns = list(zip(*rows, strict=True)) if rows else [()] * (len(_NUMERIC) + 1)
        data: dict[str, Any] = {"coin": np.full(len(rows), coin, object),
                                "interval": np.full(len(rows), interval, object)}  # fmt: skip
        for i, col in enumerate(_NUMERIC):
            data[col] = np.array(columns[i], np.int64 if col == "ts" else np.float64)
        data["source"] = np.array(columns[-1], object)
        return pd.DataFrame(data, columns=list(CANDLE_COLUMNS))

    def _series_where(
        self, coin: str, interval: str, start: int | None = None, end: int | None = None
    ) -> list[Any]:
        clauses: list[Any] = [Candle.coin == coin, Candle.interval == interval]
        if start is not None:
            clauses.append(Candle.ts >= start)
        if end is not None:
            clauses.append(Candle.ts <= end)
        return clauses

    def latest_ts(self, coin: str, interval: str, *, end: int | None = None) -> int | None:
        """Open time of the newest candle of the series (at or before ``end``)."""
        where = self._series_where(coin, interval, end=end)
        value = self.session.scalar(select(func.max(Candle.ts)).where(*where))
        return None if value is None else int(value)

    def first_ts(self, coin: str, interval: str) -> int | None:
        """Open time of the oldest stored candle of the series."""
        where = self._series_where(coin, interval)
        value = self.session.scalar(select(func.min(Candle.ts)).where(*where))
        return None if value is None else int(value)

    def count(
        self, coin: str, interval: str, *, start: int | None = None, end: int | None = None
    ) -> int:
        """Candles of the series with ``start <= ts <= end`` (one indexed count)."""
        where = self._series_where(coin, interval, start, end)
        return int(self.session.scalar(select(func.count()).select_from(Candle).where(*where)) or 0)

    def coins(self) -> set[str]:
        """Every coin with at least one stored candle."""
        return {str(c) for c in self.session.scalars(select(Candle.coin).distinct())}

    def has_coin(self, coin: str) -> bool:
        found = self.session.scalar(select(Candle.coin).where(Candle.coin == coin).limit(1))
        return found is not None

    def coverage(
        self, coin: str | None = None, interval: str | None = None
    ) -> list[SeriesCoverage]:
        """First and last candle and the count of every stored series (optionally filtered)."""
        query = select(
            Candle.coin, Candle.interval, func.min(Candle.ts), func.max(Candle.ts), func.count()
        ).group_by(Candle.coin, Candle.interval)
        if coin is not None:
            query = query.where(Candle.coin == coin)
        if interval is not None:
            query = query.where(Candle.interval == interval)
        return [
            SeriesCoverage(str(c), str(i), int(lo), int(hi), int(n))
            for c, i, lo, hi, n in self.session.execute(
                query.order_by(Candle.coin, Candle.interval)
            )
        ]

    def holes(
        self, coin: str, interval: str, *, start: int | None = None, end: int | None = None
    ) -> list[tuple[int, int]]:
        """Pairs (last present ts, next present ts) between which candles are missing."""
        step = interval_seconds(interval)
        bounds = ""
        params: dict[str, Any] = {"coin": coin, "interval": interval, "step": step}
        if start is not None:
            bounds += " AND ts >= :start"
            params["start"] = start
        if end is not None:
            bounds += " AND ts <= :end"
            params["end"] = end
        sql = text(
            "SELECT prev_ts, ts FROM (SELECT ts, LAG(ts) OVER (ORDER BY ts) AS prev_ts "
            f'FROM candles WHERE coin = :coin AND "interval" = :interval{bounds}) AS s '
            "WHERE ts - prev_ts > :step ORDER BY ts"
        )
        return [(int(a), int(b)) for a, b in self.session.execute(sql, params)]

    def delete_series(self, coin: str, interval: str) -> int:
        """Remove one series and its owner (tests, re-imports); returns candles deleted."""
        from sqlalchemy import delete

        res = self.session.execute(
            delete(Candle).where(Candle.coin == coin, Candle.interval == interval)
        )
        SeriesRepository(self.session).bump(coin, interval)
        SeriesRepository(self.session).forget(coin, interval)
        return int(res.rowcount or 0)  # type: ignore[attr-defined]


def candles_to_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Build a canonical candle frame from dict rows (missing optional fields become NaN)."""
    frame = pd.DataFrame(list(rows))
    for col in ("volume_quote", "trade_count"):
        if col not in frame:
            frame[col] = np.nan
    return frame
