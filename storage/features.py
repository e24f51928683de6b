"""Feature store repository: feature-set definitions and per-bar feature rows.

A row packs the set's columns as little-endian float64 bytes, so any version's columns fit
one table without a migration per feature set, values round-trip bit for bit, and Postgres
takes them by binary COPY. Repositories never commit.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.errors import DataIntegrityError
from storage.models import Feature, FeatureSet

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
_STAGE = "_squall_features_stage"


@dataclass(frozen=True)
class FeatureRows:
    """Feature rows of one series and version: ``values`` is (n, len(columns)) float64."""

    ts: np.ndarray
    fingerprints: np.ndarray
    values: np.ndarray


def _pack(values: np.ndarray) -> np.ndarray:
    """Each row's float64 values as one opaque little-endian blob (a void scalar)."""
    contiguous = np.ascontiguousarray(values, dtype="<f8")
    return contiguous.view(np.dtype((np.void, 8 * contiguous.shape[1]))).ravel()


class FeatureRepository:
    """Reads and writes of ``feature_sets`` and ``features``."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # ------------------------------------------------------------------------ sets
    def register_set(self, version: str, spec: str, columns: list[str]) -> None:
        """Define a feature set once; redefining a version differently is refused.

        Safe under concurrent writers (two series refreshing the same set at once): the row is
        inserted with ON CONFLICT DO NOTHING and whatever row won is then compared.
        """
        existing = self.session.get(FeatureSet, version)
        if existing is None:
            values = {
                "version": version,
                "spec": spec,
                "columns": json.dumps(columns),
                "created_at": int(time.time()),
            }
            if self.session.get_bind().dialect.name == "postgresql":
                self.session.execute(
                    pg_insert(FeatureSet).values(**values).on_conflict_do_nothing()
                )
            else:
                self.session.execute(
                    sqlite_insert(FeatureSet).values(**values).on_conflict_do_nothing()
                )
            existing = self.session.get(FeatureSet, version, populate_existing=True)
        if existing is None:  # pragma: no cover - the insert above or a concurrent one made it
            raise DataIntegrityError(f"feature set {version!r} could not be registered")
        if existing.spec != spec or json.loads(existing.columns) != columns:
            raise DataIntegrityError(
                f"feature set {version!r} already exists with spec {existing.spec!r}; "
                "choose a new version for a different spec"
            )

    def get_set(self, version: str) -> tuple[str, list[str]] | None:
        found = self.session.get(FeatureSet, version)
        return None if found is None else (found.spec, list(json.loads(found.columns)))

    # ------------------------------------------------------------------------ rows
    def upsert(
        self, coin: str, interval: str, version: str, rows: FeatureRows, *, now: int | None = None
    ) -> int:
        """Insert or replace feature rows (same key replaces); returns rows written."""
        n = len(rows.ts)
        if n == 0:
            return 0
        if rows.values.ndim != 2 or rows.values.shape[0] != n or len(rows.fingerprints) != n:
            raise DataIntegrityError("feature rows: ts, fingerprints and values disagree in length")
        stamp = int(time.time()) if now is None else now
        blobs = _pack(rows.values)
        if self.session.get_bind().dialect.name == "postgresql":
            self._copy_merge(coin, interval, version, rows, blobs, stamp)
        else:
            records = [
                {
                    "coin": coin,
                    "interval": interval,
                    "feature_set_version": version,
                    "ts": int(t),
                    "candle_fingerprint": int(f),
                    "values": b.tobytes(),
                    "computed_at": stamp,
                }
                for t, f, b in zip(rows.ts, rows.fingerprints, blobs, strict=True)
            ]
            stmt = sqlite_insert(Feature)
            stmt = stmt.on_conflict_do_update(
                index_elements=["coin", "interval", "feature_set_version", "ts"],
                set_={c: stmt.excluded[c] for c in ("candle_fingerprint", "values", "computed_at")},
            )
            self.session.execute(stmt, records)
        return n

    def _copy_merge(
        self,
        coin: str,
        interval: str,
        version: str,
        rows: FeatureRows,
        blobs: np.ndarray,
        now: int,
    ) -> None:
        width = blobs.dtype.itemsize
        layout = np.dtype(
            [("n", ">i2"), ("l0", ">i4"), ("ts", ">i8"), ("l1", ">i4"), ("fp", ">i8"),
             ("l2", ">i4"), ("values", f"V{width}")]
        )  # fmt: skip
        packed = np.empty(len(rows.ts), dtype=layout)
        packed["n"], packed["l0"], packed["l1"], packed["l2"] = 3, 8, 8, width
        packed["ts"] = rows.ts.astype(np.int64)
        packed["fp"] = rows.fingerprints.astype(np.int64)
        packed["values"] = blobs
        raw = self.session.connection().connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (ts bigint, fp bigint, vals bytea) "
                "ON COMMIT DELETE ROWS"
            )
            cur.execute(f"TRUNCATE {_STAGE}")
            with cur.copy(f"COPY {_STAGE} (ts, fp, vals) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(_COPY_HEADER)
                copy.write(packed.tobytes())
                copy.write(_COPY_TRAILER)
            cur.execute(
                'INSERT INTO features AS f (coin, "interval", feature_set_version, ts, '
                'candle_fingerprint, "values", computed_at) '
                f"SELECT %s, %s, %s, ts, fp, vals, %s FROM {_STAGE} "
                'ON CONFLICT (coin, "interval", feature_set_version, ts) DO UPDATE SET '
                'candle_fingerprint = EXCLUDED.candle_fingerprint, "values" = EXCLUDED."values", '
                "computed_at = EXCLUDED.computed_at",
                (coin, interval, version, now),
            )

    def read(
        self,
        coin: str,
        interval: str,
        version: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> FeatureRows:
        """Stored rows by ts (the latest ``limit`` with ``newest_first``), ascending order."""
        query = select(Feature.ts, Feature.candle_fingerprint, Feature.values).where(
            Feature.coin == coin,
            Feature.interval == interval,
            Feature.feature_set_version == version,
        )
        if start is not None:
            query = query.where(Feature.ts >= start)
        if end is not None:
            query = query.where(Feature.ts <= end)
        query = query.order_by(Feature.ts.desc() if newest_first else Feature.ts)
        if limit is not None:
            query = query.limit(limit)
        found = list(self.session.execute(query).all())
        if newest_first:
            found.reverse()
        if not found:
            return FeatureRows(np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 0)))
        blob = b"".join(bytes(r[2]) for r in found)
        width = len(found[0][2]) // 8
        return FeatureRows(
            ts=np.fromiter((r[0] for r in found), np.int64, len(found)),
            fingerprints=np.fromiter((r[1] for r in found), np.int64, len(found)),
            values=np.frombuffer(blob, dtype="<f8").reshape(len(found), width).copy(),
        )

    def latest_ts(self, coin: str, interval: str, version: str) -> int | None:
        value = self.session.scalar(
            select(func.max(Feature.ts)).where(
                Feature.coin == coin,
                Feature.interval == interval,
                Feature.feature_set_version == version,
            )
        )
        return None if value is None else int(value)
