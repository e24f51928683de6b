"""The run registry as use cases: record a run, find it, list, compare, cancel.

Every long piece of work (backtest, walk-forward, sweep, simulation, feature build) is one
registry row with one lifecycle::

    queued -> running -> succeeded | failed | cancelled

``progress`` is ``{"done", "total", "unit"}`` in the unit of the work (paths, folds, grid
points, rows); ``heartbeat_at`` is refreshed by the process running it
(:mod:`serve_app.execution.runs`), and a run whose heartbeat is older than
``Settings.run_heartbeat_timeout_s`` is marked ``failed`` with the reason
(:func:`fail_stale`, on start-up and periodically).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from serve_app.services.provenance import canonical_request, code_version, request_hash
from serve_app.services.results import thin_indices
from serve_app.timefmt import parse_time
from storage.engine import transaction
from storage.errors import ConfigurationError, ConflictError, NotFoundError
from storage.models import ACTIVE_STATUSES, RUN_KINDS, RUN_STATUSES
from storage.runs import MAX_PAGE, RunFilter, RunRecord, RunRepository

MAX_COMPARE = 10


# ------------------------------------------------------------------------------ recording
def start_run(
    sessions: sessionmaker[Session],
    kind: str,
    req: BaseModel | dict[str, Any],
    *,
    status: str = "running",
    coin: str | None = None,
    interval: str | None = None,
    strategy: str | None = None,
    seed: int | None = None,
    rerun_of: str | None = None,
    **fields: Any,
) -> tuple[str, int]:
    """Record a new run (``running``, or ``queued`` for work handed to a worker); returns its
    id and creation time. Its heartbeat starts now."""
    created = int(time.time())
    if status == "running":
        fields.setdefault("started_at", created)
    with transaction(sessions) as session:
        run_id = RunRepository(session).add(
            kind,
            canonical_request(req),
            request_hash=request_hash(req),
            code_version=code_version(),
            status=status,
            created_at=created,
            heartbeat_at=created,
            coin=coin,
            interval=interval,
            strategy=strategy,
            seed=seed,
            rerun_of=rerun_of,
            **fields,
        )
    return run_id, created


def fail_run(
    sessions: sessionmaker[Session], run_id: str, exc: BaseException, started: float
) -> None:
    """Record why a run failed (``cancelled`` when it was asked to stop)."""
    from serve_app.execution.runs import RunCancelledError

    cancelled = isinstance(exc, RunCancelledError)
    with transaction(sessions) as session:
        RunRepository(session).update(
            run_id,
            status="cancelled" if cancelled else "failed",
            error=("cancelled on request" if cancelled else f"{type(exc).__name__}: {exc}")[:2000],
            duration_s=max(0.0, time.perf_counter() - started),
            finished_at=int(time.time()),
        )


def fail_stale(
    sessions: sessionmaker[Session], timeout_s: float, queued_timeout_s: float | None = None
) -> list[str]:
    """Mark running runs whose heartbeat is older than ``timeout_s``, and queued runs no
    worker took within ``queued_timeout_s``, as failed; their ids."""
    with transaction(sessions) as session:
        return RunRepository(session).fail_stale(int(time.time()), timeout_s, queued_timeout_s)


# -------------------------------------------------------------------------------- reading
def get_run(session: Session, run_id: str, *, payload: bool = True) -> RunRecord:
    run = RunRepository(session).get(run_id, payload=payload)
    if run is None:
        raise NotFoundError(
            f"no run with id {run_id!r} is recorded; GET /runs lists the runs",
            code="run_not_found",
            parameter="run_id",
        )
    return run


@dataclass(frozen=True)
class RunQuery:
    """Filters and page of a run listing, as the user gives them (checked by :func:`list_runs`)."""

    kind: str | None = None
    coin: str | None = None
    interval: str | None = None
    strategy: str | None = None
    status: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int = 50
    offset: int = 0


def list_runs(session: Session, q: RunQuery) -> tuple[int, list[RunRecord]]:
    """(runs matching, the page of them newest first)."""
    if q.kind is not None and q.kind not in RUN_KINDS:
        raise ConfigurationError(
            f"unknown kind {q.kind!r}; valid kinds: {', '.join(RUN_KINDS)}",
            code="unknown_kind",
            parameter="kind",
        )
    if q.status is not None and q.status not in RUN_STATUSES:
        raise ConfigurationError(
            f"unknown status {q.status!r}; valid statuses: {', '.join(RUN_STATUSES)}",
            code="unknown_status",
            parameter="status",
        )
    if not 1 <= q.limit <= MAX_PAGE or q.offset < 0:
        raise ConfigurationError(
            f"limit must be 1 to {MAX_PAGE} and offset >= 0", code="invalid_page", parameter="limit"
        )
    filters = RunFilter(
        kind=q.kind,
        coin=None if q.coin is None else q.coin.strip().upper(),
        interval=q.interval,
        strategy=q.strategy,
        status=q.status,
        created_from=None if q.since is None else parse_time(q.since, "since"),
        created_to=None if q.until is None else parse_time(q.until, "until"),
    )
    repo = RunRepository(session)
    return repo.count(filters), repo.list(filters, limit=q.limit, offset=q.offset)


# -------------------------------------------------------------------------------- compare
def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def param_diffs(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Request fields (dotted for nested ones) whose values differ between the runs."""
    flat = [_flatten(r) for r in requests]
    keys = sorted(set().union(*flat))
    return [
        {"field": k, "values": [f.get(k) for f in flat]}
        for k in keys
        if len({repr(f.get(k)) for f in flat}) > 1
    ]


def equity_axis(runs: list[RunRecord], points: int) -> dict[str, Any]:
    """Every run's equity on the union of their bar times (None where a run has no bar)."""
    curves = {
        r.id: (np.asarray(r.equity["ts"], np.int64), np.asarray(r.equity["equity"], object))
        for r in runs
        if isinstance(r.equity, dict) and "ts" in r.equity and "equity" in r.equity
    }
    axis = (
        np.unique(np.concatenate([ts for ts, _ in curves.values()]))
        if curves
        else np.empty(0, np.int64)
    )
    idx, stride = thin_indices(len(axis), points)
    shown = axis[idx]
    series: dict[str, list[float | None]] = {}
    for run in runs:
        if run.id not in curves:
            series[run.id] = [None] * len(shown)
            continue
        ts, values = curves[run.id]
        pos = np.searchsorted(ts, shown)
        hit = (pos < len(ts)) & (ts[np.clip(pos, 0, len(ts) - 1)] == shown)
        series[run.id] = [
            None if not h or values[p] is None else float(values[p])
            for h, p in zip(hit.tolist(), pos.tolist(), strict=True)
        ]
    return {"ts_unix": shown, "series": series, "stride": stride}


@dataclass(frozen=True)
class Comparison:
    runs: list[RunRecord]
    metrics: list[dict[str, Any]]
    param_diffs: list[dict[str, Any]]
    equity: dict[str, Any]


def compare(session: Session, ids: list[str], equity_points: int) -> Comparison:
    """Runs side by side: their metrics, the request fields that differ, equity on one axis."""
    if not 2 <= len(ids) <= MAX_COMPARE or len(set(ids)) != len(ids):
        raise ConfigurationError(
            f"ids takes 2 to {MAX_COMPARE} distinct run ids separated by commas; got "
            f"{len(ids)} ({len(set(ids))} distinct)",
            code="invalid_ids",
            parameter="ids",
        )
    runs = [get_run(session, i) for i in ids]
    names: list[str] = []
    for run in runs:
        names.extend(k for k in (run.summary or {}) if k not in names)
    metrics = [
        {
            "metric": m,
            "values": [
                v if isinstance(v := (r.summary or {}).get(m), int | float) or v is None else None
                for r in runs
            ],
        }
        for m in names
    ]
    return Comparison(
        runs, metrics, param_diffs([_compared(r) for r in runs]), equity_axis(runs, equity_points)
    )


def _compared(run: RunRecord) -> dict[str, Any]:
    """What ``param_diffs`` compares: the request, and the strategy's recorded provenance
    (a plugin's version and source hash, a spec's canonical text) as ``strategy_provenance``."""
    results = run.results if isinstance(run.results, dict) else {}
    provenance = (results.get("used") or {}).get("provenance")
    return {**run.request, "strategy_provenance": provenance} if provenance else run.request


# --------------------------------------------------------------------------------- cancel
def cancel(sessions: sessionmaker[Session], run_id: str) -> RunRecord:
    """Ask a run to stop. A queued run is cancelled at once; a running one stops at its next
    progress point (its executor sees the flag with its heartbeat and cancels its Ray tasks).
    A finished run is a ConflictError; a sweep runs as a Ray job and is stopped there."""
    with transaction(sessions) as session:
        run = get_run(session, run_id, payload=False)
        if run.status not in ACTIVE_STATUSES:
            raise ConflictError(
                f"run {run_id} already finished ({run.status}); only queued or running runs "
                "can be cancelled",
                code="run_finished",
                parameter="run_id",
                status=run.status,
            )
        RunRepository(session).request_cancel(run_id, int(time.time()))
    if run.job_id:
        from serve_app.services import sweep

        sweep.stop_job(run)  # the job's driver is killed: record the outcome here
        with transaction(sessions) as session:
            RunRepository(session).update(
                run_id,
                status="cancelled",
                error="cancelled on request",
                finished_at=int(time.time()),
            )
    with sessions() as session:
        return get_run(session, run_id, payload=False)
