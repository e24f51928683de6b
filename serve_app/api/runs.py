"""The run registry over HTTP: ``GET /runs``, ``GET /runs/{id}``, ``DELETE /runs/{id}``.

One lifecycle for every long piece of work (``queued -> running -> succeeded | failed |
cancelled``, progress in the work's own unit, a heartbeat); the per-kind routes
(``/backtest/runs``, ``/risk/simulations/{id}``) keep working. The rendering helpers here are
shared with the backtest routes.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Query

from serve_app.api.deps import SessionDep, SessionFactoryDep
from serve_app.api.schemas.backtest import EquityOut
from serve_app.api.schemas.common import ErrorBody
from serve_app.api.schemas.runs import RunDetailOut, RunsPage, RunSummaryOut
from serve_app.services import runs as service
from serve_app.services.results import thin_indices
from serve_app.timefmt import iso, iso_array
from storage.models import RUN_KINDS, RUN_STATUSES
from storage.runs import MAX_PAGE, RunRecord

router = APIRouter(prefix="/runs", tags=["runs"])

MAX_POINTS = 100_000
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no run with that id"}
}
RunId = Annotated[str, Path(max_length=64, description="registry id")]


# --------------------------------------------------------------------------------- render
def _column(values: Any, idx: np.ndarray) -> list[Any]:
    arr = np.asarray(values if values is not None else [], dtype=object)
    return [None if v is None else float(v) for v in arr[idx]] if len(arr) else []


def equity_out(equity: dict[str, Any] | None, points: int) -> EquityOut | None:
    """A stored equity curve (already thinned by ``stored_equity``) for a response."""
    if not equity or "ts" not in equity:
        return None
    ts = np.asarray(equity["ts"], dtype=np.int64)
    idx, stride = thin_indices(len(ts), points)
    return EquityOut(
        ts=iso_array(ts[idx]),
        ts_unix=ts[idx].tolist(),
        equity=_column(equity.get("equity"), idx),
        drawdown=_column(equity.get("drawdown"), idx),
        position=_column(equity.get("position"), idx),
        total_points=int(equity.get("total_points", len(ts))),
        stride=stride * int(equity.get("stride", 1)),
    )


def with_iso(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row (trade, metrics) with every ``*_ts`` unix time given as ISO-8601 UTC in
    ``*_ts`` and as unix seconds in ``*_ts_unix``."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        is_time = key.endswith("_ts") and (value is None or isinstance(value, int))
        if is_time and not isinstance(value, bool):
            out[key] = None if value is None else iso(int(value))
            out[f"{key}_unix"] = value
        else:
            out[key] = value
    return out


def rows_with_iso(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`with_iso` of every row, the times of each ``*_ts`` column converted at once
    (trades share their keys; a row with other keys falls back to :func:`with_iso`)."""
    if not rows:
        return []
    keys = list(rows[0])
    if any(list(r) != keys for r in rows):
        return [with_iso(r) for r in rows]
    times = {}
    for key in keys:
        values = [r[key] for r in rows]
        if key.endswith("_ts") and all(
            v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values
        ):
            known = [v for v in values if v is not None]
            texts = iter(iso_array(np.asarray(known, np.int64))) if known else iter(())
            times[key] = [None if v is None else next(texts) for v in values]
    out = []
    for i, row in enumerate(rows):
        new: dict[str, Any] = {}
        for key, value in row.items():
            if key in times:
                new[key] = times[key][i]
                new[f"{key}_unix"] = value
            else:
                new[key] = value
        out.append(new)
    return out


def _time(value: int | None) -> str | None:
    return None if value is None else iso(value)


def summary_out(run: RunRecord) -> RunSummaryOut:
    return RunSummaryOut(
        run_id=run.id,
        kind=run.kind,
        status=run.status,
        created_at=iso(run.created_at),
        created_at_unix=run.created_at,
        started_at=_time(run.started_at),
        started_at_unix=run.started_at,
        finished_at=_time(run.finished_at),
        finished_at_unix=run.finished_at,
        heartbeat_at=_time(run.heartbeat_at),
        heartbeat_at_unix=run.heartbeat_at,
        cancel_requested=run.cancel_requested_at is not None,
        worker=run.worker,
        coin=run.coin,
        interval=run.interval,
        strategy=run.strategy,
        seed=run.seed,
        code_version=run.code_version,
        data_fingerprint=run.data_fingerprint,
        request_hash=run.request_hash,
        duration_s=run.duration_s,
        progress=run.progress,
        metrics=run.summary,
        job_id=run.job_id,
        rerun_of=run.rerun_of,
        error=run.error,
    )


def detail_out(run: RunRecord, equity_points: int, max_trades: int) -> RunDetailOut:
    trades = run.trades if isinstance(run.trades, list) else None
    return RunDetailOut(
        **summary_out(run).model_dump(),
        request=run.request,
        equity=equity_out(run.equity, equity_points),
        trades=None if trades is None else rows_with_iso(trades[:max_trades]),
        trades_total=None if trades is None else len(trades),
        results=run.results if isinstance(run.results, dict) else None,
    )


def page_out(query: service.RunQuery, session: Any) -> RunsPage:
    total, runs = service.list_runs(session, query)
    nxt = query.offset + len(runs)
    return RunsPage(
        total=total,
        limit=query.limit,
        offset=query.offset,
        next_offset=nxt if nxt < total else None,
        runs=[summary_out(r) for r in runs],
    )


# --------------------------------------------------------------------------------- routes
KindQuery = Annotated[str | None, Query(description=f"one of {', '.join(RUN_KINDS)}")]
StatusQuery = Annotated[str | None, Query(description=f"one of {', '.join(RUN_STATUSES)}")]
CoinFilter = Annotated[str | None, Query(max_length=20, description="base asset")]
StrategyFilter = Annotated[str | None, Query(max_length=40, description="strategy name")]
IntervalFilter = Annotated[str | None, Query(max_length=8, description="bar interval")]
SinceQuery = Annotated[
    str | None, Query(description="created at or after (ISO-8601 or unix seconds)")
]
UntilQuery = Annotated[
    str | None, Query(description="created at or before (ISO-8601 or unix seconds)")
]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size")]
OffsetQuery = Annotated[int, Query(ge=0, le=10_000_000, description="runs to skip")]
PointsQuery = Annotated[int, Query(ge=2, le=MAX_POINTS, description="most equity points returned")]
TradesQuery = Annotated[int, Query(ge=0, le=100_000, description="most trades returned")]


@router.get(
    "",
    response_model=RunsPage,
    summary="Every kind of run, newest first (filters, pages)",
    responses={422: {"model": ErrorBody, "description": "bad filter or page"}},
)
def list_runs(
    session: SessionDep,
    kind: KindQuery = None,
    status: StatusQuery = None,
    coin: CoinFilter = None,
    strategy: StrategyFilter = None,
    interval: IntervalFilter = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> RunsPage:
    """Backtests, walk-forwards, sweeps, simulations and feature builds in one list, each with
    its status, progress (``done``/``total`` in the work's unit) and heartbeat."""
    query = service.RunQuery(kind, coin, interval, strategy, status, since, until, limit, offset)
    return page_out(query, session)


@router.get(
    "/{run_id}",
    response_model=RunDetailOut,
    summary="One run: status, progress, heartbeat, request and results",
    responses=NOT_FOUND,
)
def get_run(
    session: SessionDep,
    run_id: RunId,
    equity_points: PointsQuery = 1000,
    max_trades: TradesQuery = 1000,
) -> RunDetailOut:
    return detail_out(service.get_run(session, run_id), equity_points, max_trades)


@router.delete(
    "/{run_id}",
    response_model=RunSummaryOut,
    summary="Cancel a queued or running run",
    responses={
        **NOT_FOUND,
        409: {"model": ErrorBody, "description": "the run already finished"},
    },
)
def cancel_run(sessions: SessionFactoryDep, run_id: RunId) -> RunSummaryOut:
    """A queued run is cancelled at once; a running one stops at its next progress point (its
    outstanding Ray work is cancelled) and is then ``cancelled``; ``cancel_requested`` is true
    meanwhile. A sweep's Ray job is stopped."""
    return summary_out(service.cancel(sessions, run_id))
