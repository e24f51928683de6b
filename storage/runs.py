"""The run registry: every backtest, walk-forward, sweep and simulation, recorded and comparable.

A row holds what was asked (the request as canonical JSON and its hash), with which code and
data (code version, candle fingerprint, seed), how it went (status, progress, duration, error)
and what came out: summary metrics as JSON, and the large parts (equity curve, trade list,
kind-specific detail) as blobs. A blob is JSON, zlib-compressed once it is larger than
``COMPRESS_ABOVE`` bytes; its first byte says which (``J`` plain, ``Z`` zlib), so old rows stay
readable if the threshold changes. orjson writes floats in their shortest exact form, so a
value read back is bit-for-bit the value written (what a rerun comparison needs).

``RunRepository`` takes the session and never commits; the caller owns the transaction.
"""

from __future__ import annotations

import builtins
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import ColumnElement, case, func, or_, select
from sqlalchemy import update as sa_update
from sqlalchemy.orm import Session, defer

from storage.errors import ConfigurationError
from storage.models import ACTIVE_STATUSES, RUN_KINDS, RUN_STATUSES, BacktestRun

COMPRESS_ABOVE = 16 * 1024
MAX_PAGE = 500
_JSON_FIELDS = ("request", "progress", "summary")
_BLOB_FIELDS = ("equity", "trades", "results")
_PLAIN_FIELDS = (
    "kind",
    "status",
    "request_hash",
    "code_version",
    "data_fingerprint",
    "seed",
    "coin",
    "interval",
    "strategy",
    "job_id",
    "rerun_of",
    "duration_s",
    "error",
    "finished_at",
    "created_at",
    "started_at",
    "heartbeat_at",
    "cancel_requested_at",
    "worker",
)
_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    """Canonical JSON (sorted keys; NumPy arrays and scalars as plain numbers)."""
    return orjson.dumps(value, option=_OPTS | orjson.OPT_SORT_KEYS)


def encode_blob(value: Any) -> bytes:
    """JSON of ``value``, zlib-compressed when larger than ``COMPRESS_ABOVE`` bytes."""
    raw = orjson.dumps(value, option=_OPTS)
    if len(raw) > COMPRESS_ABOVE:
        return b"Z" + zlib.compress(raw, 1)  # level 1: ~5x faster than 6, ~10% larger
    return b"J" + raw


def decode_blob(blob: bytes | None) -> Any:
    """The value :func:`encode_blob` encoded (None stays None)."""
    if blob is None:
        return None
    tag, body = blob[:1], blob[1:]
    if tag == b"Z":
        return orjson.loads(zlib.decompress(body))
    if tag == b"J":
        return orjson.loads(body)
    raise ValueError(f"unknown run blob encoding {tag!r}")


class RunNotFoundError(LookupError):
    """No run with that id is recorded."""


@dataclass(frozen=True)
class RunRecord:
    """A registry row, decoded. ``equity``/``trades``/``results`` are None when not loaded
    (listings skip the blobs) or not stored; ``payload_loaded`` tells which."""

    id: str
    kind: str
    status: str
    created_at: int
    finished_at: int | None
    request: dict[str, Any]
    request_hash: str
    code_version: str
    data_fingerprint: str | None
    seed: int | None
    coin: str | None
    interval: str | None
    strategy: str | None
    job_id: str | None
    rerun_of: str | None
    progress: dict[str, Any] | None
    duration_s: float | None
    summary: dict[str, Any] | None
    error: str | None
    started_at: int | None = None
    heartbeat_at: int | None = None
    cancel_requested_at: int | None = None
    worker: str | None = None
    equity: Any = None
    trades: Any = None
    results: Any = None
    payload_loaded: bool = False
    blob_bytes: dict[str, int] = field(default_factory=dict)


def _record(row: BacktestRun, payload: bool) -> RunRecord:
    blobs: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    if payload:
        for name in _BLOB_FIELDS:
            blob = getattr(row, name)
            blobs[name] = decode_blob(blob)
            sizes[name] = 0 if blob is None else len(blob)
    return RunRecord(
        id=row.id,
        kind=row.kind,
        status=row.status,
        created_at=row.created_at,
        finished_at=row.finished_at,
        request=orjson.loads(row.request),
        request_hash=row.request_hash,
        code_version=row.code_version,
        data_fingerprint=row.data_fingerprint,
        seed=row.seed,
        coin=row.coin,
        interval=row.interval,
        strategy=row.strategy,
        job_id=row.job_id,
        rerun_of=row.rerun_of,
        progress=None if row.progress is None else orjson.loads(row.progress),
        duration_s=row.duration_s,
        summary=None if row.summary is None else orjson.loads(row.summary),
        error=row.error,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        cancel_requested_at=row.cancel_requested_at,
        worker=row.worker,
        payload_loaded=payload,
        blob_bytes=sizes,
        **blobs,
    )


def _encode_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Column values for ``fields``: JSON text, encoded blobs, checked kind and status."""
    unknown = set(fields) - set(_JSON_FIELDS) - set(_BLOB_FIELDS) - set(_PLAIN_FIELDS)
    if unknown:
        raise TypeError(f"unknown run fields: {sorted(unknown)}")
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name in _JSON_FIELDS:
            out[name] = None if value is None else dumps(value).decode()
        elif name in _BLOB_FIELDS:
            out[name] = None if value is None else encode_blob(value)
        else:
            out[name] = value
    if "kind" in out and out["kind"] not in RUN_KINDS:
        raise ConfigurationError(f"unknown run kind {out['kind']!r}; valid: {RUN_KINDS}")
    if "status" in out and out["status"] not in RUN_STATUSES:
        raise ConfigurationError(f"unknown run status {out['status']!r}; valid: {RUN_STATUSES}")
    return out


@dataclass(frozen=True)
class RunFilter:
    """What ``list`` and ``count`` select; None means any. Times are unix seconds (created)."""

    kind: str | None = None
    coin: str | None = None
    interval: str | None = None
    strategy: str | None = None
    status: str | None = None
    created_from: int | None = None
    created_to: int | None = None

    def clauses(self) -> builtins.list[ColumnElement[bool]]:
        where: builtins.list[ColumnElement[bool]] = []
        for name in ("kind", "coin", "interval", "strategy", "status"):
            value = getattr(self, name)
            if value is not None:
                where.append(getattr(BacktestRun, name) == value)
        if self.created_from is not None:
            where.append(BacktestRun.created_at >= self.created_from)
        if self.created_to is not None:
            where.append(BacktestRun.created_at <= self.created_to)
        return where


class RunRepository:
    """``backtest_runs`` rows. Never commits."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self,
        kind: str,
        request: Mapping[str, Any],
        *,
        request_hash: str,
        code_version: str,
        status: str = "queued",
        run_id: str | None = None,
        created_at: int | None = None,
        **fields: Any,
    ) -> str:
        """Record a new run; returns its id (a fresh uuid4 unless ``run_id`` is given).

        ``fields`` are any other columns (seed, coin, summary, equity, ...); JSON and blob
        columns take plain Python/NumPy values and are encoded here.
        """
        run_id = run_id or str(uuid.uuid4())
        values = _encode_fields(
            {
                "kind": kind,
                "status": status,
                "request": dict(request),
                "request_hash": request_hash,
                "code_version": code_version,
                "created_at": int(time.time()) if created_at is None else created_at,
                **fields,
            }
        )
        self.session.add(BacktestRun(id=run_id, **values))
        self.session.flush()
        return run_id

    def update(self, run_id: str, **fields: Any) -> None:
        """Set ``fields`` on run ``run_id`` (encoded as in :meth:`add`);
        ``RunNotFoundError`` when there is no such run."""
        row = self.session.get(BacktestRun, run_id)
        if row is None:
            raise RunNotFoundError(run_id)
        for name, value in _encode_fields(fields).items():
            setattr(row, name, value)
        self.session.flush()

    def get(self, run_id: str, *, payload: bool = True) -> RunRecord | None:
        """Run ``run_id`` decoded, with its blobs unless ``payload`` is false; None if absent."""
        query = select(BacktestRun).where(BacktestRun.id == run_id)
        if not payload:
            query = query.options(*(defer(getattr(BacktestRun, b)) for b in _BLOB_FIELDS))
        row = self.session.scalars(query).first()
        return None if row is None else _record(row, payload)

    def find_by_job(self, job_id: str) -> RunRecord | None:
        """The run a Ray job submission id belongs to (payload included), or None."""
        row = self.session.scalars(
            select(BacktestRun)
            .where(BacktestRun.job_id == job_id)
            .order_by(BacktestRun.created_at.desc())
        ).first()
        return None if row is None else _record(row, True)

    def list(
        self,
        filters: RunFilter | None = None,
        *,
        limit: int = 50,
        offset: int = 0,
    ) -> builtins.list[RunRecord]:
        """Runs matching ``filters``, newest first, without their blobs (``limit`` at most
        ``MAX_PAGE``)."""
        if not 1 <= limit <= MAX_PAGE:
            raise ConfigurationError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        if offset < 0:
            raise ConfigurationError(f"offset must be >= 0, got {offset}")
        query = (
            select(BacktestRun)
            .where(*(filters or RunFilter()).clauses())
            .options(*(defer(getattr(BacktestRun, b)) for b in _BLOB_FIELDS))
            .order_by(BacktestRun.created_at.desc(), BacktestRun.id)
            .limit(limit)
            .offset(offset)
        )
        return [_record(row, False) for row in self.session.scalars(query)]

    def count(self, filters: RunFilter | None = None) -> int:
        """How many runs match ``filters``."""
        query = select(func.count()).select_from(BacktestRun)
        query = query.where(*(filters or RunFilter()).clauses())
        return int(self.session.scalar(query) or 0)

    def counts_by_kind_status(self) -> dict[tuple[str, str], int]:
        """How many runs the registry holds per (kind, status)."""
        query = select(BacktestRun.kind, BacktestRun.status, func.count()).group_by(
            BacktestRun.kind, BacktestRun.status
        )
        return {(kind, status): int(n) for kind, status, n in self.session.execute(query)}

    def duration_histogram(
        self, bounds: tuple[float, ...]
    ) -> dict[str, tuple[builtins.list[int], int, float]]:
        """Per kind, over the finished runs with a duration: the cumulative count of runs at or
        under each bound, the count of all and the sum of their durations (one scan)."""
        columns = [
            func.sum(case((BacktestRun.duration_s <= bound, 1), else_=0)) for bound in bounds
        ]
        query = (
            select(BacktestRun.kind, func.count(), func.sum(BacktestRun.duration_s), *columns)
            .where(BacktestRun.duration_s.is_not(None))
            .group_by(BacktestRun.kind)
        )
        out: dict[str, tuple[builtins.list[int], int, float]] = {}
        for kind, n, total, *cumulative in self.session.execute(query):
            out[kind] = ([int(c or 0) for c in cumulative], int(n), float(total or 0.0))
        return out

    # ------------------------------------------------------------------------- lifecycle
    def beat(self, run_id: str, now: int, progress: Mapping[str, Any] | None = None) -> bool:
        """Record a sign of life of an active run (and its progress); returns whether a
        cancel was asked. A run that already finished is left alone (returns False)."""
        values: dict[str, Any] = {"heartbeat_at": now}
        if progress is not None:
            values["progress"] = dumps(dict(progress)).decode()
        self.session.execute(
            sa_update(BacktestRun)
            .where(BacktestRun.id == run_id, BacktestRun.status.in_(ACTIVE_STATUSES))
            .values(**values)
        )
        asked = self.session.scalar(
            select(BacktestRun.cancel_requested_at).where(BacktestRun.id == run_id)
        )
        return asked is not None

    def request_cancel(self, run_id: str, now: int) -> str | None:
        """Ask an active run to stop: a queued one is cancelled at once, a running one is
        flagged for its executor. Returns the status after the call (None: no such run)."""
        row = self.session.get(BacktestRun, run_id)
        if row is None:
            return None
        if row.status == "queued":
            row.status = "cancelled"
            row.finished_at = now
            row.error = "cancelled before it started"
        if row.status in ACTIVE_STATUSES and row.cancel_requested_at is None:
            row.cancel_requested_at = now
        self.session.flush()
        return row.status

    def claim(self, run_id: str, now: int, worker: str) -> bool:
        """Mark a queued run as running on ``worker``; False if it is no longer queued
        (cancelled meanwhile, or claimed by another executor)."""
        done = self.session.execute(
            sa_update(BacktestRun)
            .where(BacktestRun.id == run_id, BacktestRun.status == "queued")
            .values(status="running", started_at=now, heartbeat_at=now, worker=worker)
        )
        return bool(done.rowcount)  # type: ignore[attr-defined]

    def fail_stale(
        self, now: int, timeout_s: float, queued_timeout_s: float | None = None
    ) -> builtins.list[str]:
        """Mark as failed every running run whose last heartbeat is older than ``timeout_s``
        (its executor died) and every queued run older than ``queued_timeout_s`` (default
        ``timeout_s``: nothing ever started it); returns their ids. Runs recorded before
        heartbeats existed (heartbeat NULL) count from their creation. Sweeps run as Ray
        jobs and are followed by Ray, not here."""
        queued_limit = now - (timeout_s if queued_timeout_s is None else queued_timeout_s)
        beat = func.coalesce(BacktestRun.heartbeat_at, BacktestRun.created_at)
        stale = builtins.list(
            self.session.scalars(
                select(BacktestRun.id).where(
                    BacktestRun.job_id.is_(None),
                    or_(
                        (BacktestRun.status == "running") & (beat < now - timeout_s),
                        (BacktestRun.status == "queued") & (BacktestRun.created_at < queued_limit),
                    ),
                )
            )
        )
        if stale:
            self.session.execute(
                sa_update(BacktestRun)
                .where(BacktestRun.id.in_(stale), BacktestRun.status.in_(ACTIVE_STATUSES))
                .values(
                    status="failed",
                    finished_at=now,
                    error=f"worker lost: no heartbeat for more than {timeout_s:g} s "
                    "(the process running it stopped), or never started",
                )
            )
        return stale
