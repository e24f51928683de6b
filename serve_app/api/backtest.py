"""Backtest routes: run, walk-forward, and the run registry (list, get, compare, rerun).

Thin: reject query strings on the POST routes (the contract is a JSON body), call the service
(:mod:`serve_app.backtests`, :mod:`serve_app.walkforward`), render registry rows. Every time is
given as ISO-8601 UTC and unix seconds.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request

from serve_app import backtests as service  # a module: serve_app.backtests imports this package
from serve_app.api.backtest_models import (
    BacktestInsufficientBody,
    BacktestRunRequest,
    BacktestRunResponse,
    CompareEquityOut,
    CompareMetricOut,
    CompareResponse,
    EquityOut,
    InvalidBacktestBody,
    MetricDiffOut,
    ParamDiffOut,
    RerunResponse,
    RunDetailOut,
    RunsPage,
    RunSummaryOut,
    UsedOut,
    UseJsonBody,
    WalkForwardRequest,
    WalkForwardResponse,
)
from serve_app.api.deps import SessionDep, SessionFactoryDep, SettingsDep
from serve_app.api.errors import ApiError
from serve_app.api.models import ErrorBody
from serve_app.api.timefmt import iso, iso_array, parse_time
from storage.models import RUN_KINDS
from storage.runs import MAX_PAGE, RunFilter, RunRecord, RunRepository

router = APIRouter(prefix="/backtest", tags=["backtest"])

MAX_COMPARE = 10
MAX_POINTS = 100_000

_POST_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": UseJsonBody, "description": "parameters sent in the query string"},
    404: {"model": ErrorBody, "description": "unknown coin (the body lists known coins)"},
    422: {
        "model": BacktestInsufficientBody | InvalidBacktestBody | ErrorBody,
        "description": "insufficient_data (counts, look-back, latest candle, suggested start), "
        "unknown_strategy / invalid_parameter (lists what is valid), grid or bars over a cap, "
        "folds longer than the data, or a body field out of range",
    },
    503: {"model": ErrorBody, "description": "the database is down or not migrated"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no run with that id"}
}

_RUN_EXAMPLE = {"coin": "BTC", "interval": "1h", "strategy": "ema_cross", "params": {"fast": 12}}


def json_body_only(request: Request) -> None:
    """400 when the POST carries a query string: the request is a JSON body, nothing else."""
    if request.query_params:
        names = sorted(set(request.query_params.keys()))
        raise ApiError(
            400,
            "use JSON body",
            f"{request.url.path} takes a JSON body (Content-Type: application/json), not query "
            f"parameters; got {', '.join(names)}. Send them as fields of the body, e.g. "
            f"{_RUN_EXAMPLE}; the schema is at /docs",
            query_parameters=names,
            example=_RUN_EXAMPLE,
        )


JsonOnly = Depends(json_body_only)


# --------------------------------------------------------------------------------- render
def _column(values: Any, idx: np.ndarray) -> list[Any]:
    arr = np.asarray(values if values is not None else [], dtype=object)
    return [None if v is None else float(v) for v in arr[idx]] if len(arr) else []


def equity_out(equity: dict[str, Any] | None, points: int) -> EquityOut | None:
    """A stored equity curve (already thinned by ``stored_equity``) for a response."""
    if not equity or "ts" not in equity:
        return None
    ts = np.asarray(equity["ts"], dtype=np.int64)
    idx, stride = service.thin_indices(len(ts), points)
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


def backtest_response(rec: service.Recorded, req: BacktestRunRequest) -> BacktestRunResponse:
    equity = equity_out(rec.equity, req.equity_points)
    assert equity is not None
    return BacktestRunResponse(
        run_id=rec.run_id,
        kind="backtest",
        created_at=iso(rec.created_at),
        created_at_unix=rec.created_at,
        duration_s=rec.duration_s,
        used=UsedOut.model_validate(rec.used),
        metrics=with_iso(rec.metrics),
        equity=equity,
        trades=[with_iso(t) for t in rec.trades[: req.max_trades]],
        trades_total=len(rec.trades),
        regime_stats=rec.regime_stats,
    )


def summary_out(run: RunRecord) -> RunSummaryOut:
    return RunSummaryOut(
        run_id=run.id,
        kind=run.kind,
        status=run.status,
        created_at=iso(run.created_at),
        created_at_unix=run.created_at,
        finished_at=None if run.finished_at is None else iso(run.finished_at),
        finished_at_unix=run.finished_at,
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


def get_run(session: Any, run_id: str, *, payload: bool = True) -> RunRecord:
    run = RunRepository(session).get(run_id, payload=payload)
    if run is None:
        raise ApiError(
            404,
            "run_not_found",
            f"no run with id {run_id!r} is recorded; GET /backtest/runs lists the runs",
            parameter="run_id",
        )
    return run


# ---------------------------------------------------------------------------------- runs
@router.post(
    "/run",
    response_model=BacktestRunResponse,
    summary="Backtest one strategy on one series (JSON body only)",
    responses=_POST_ERRORS,
    dependencies=[JsonOnly],
)
def post_run(
    body: BacktestRunRequest, settings: SettingsDep, sessions: SessionFactoryDep
) -> BacktestRunResponse:
    """Orders execute at the next bar's open; fees and slippage per side; funding from stored
    rates while a position is held. The run is recorded in the registry under ``run_id``."""
    rec = service.run_backtest_request(sessions, settings, body)
    return backtest_response(rec, body)


@router.post(
    "/walkforward",
    response_model=WalkForwardResponse,
    summary="Walk-forward validation: choose on train, evaluate out of sample (JSON body)",
    responses=_POST_ERRORS,
    dependencies=[JsonOnly],
)
def post_walkforward(
    body: WalkForwardRequest, settings: SettingsDep, sessions: SessionFactoryDep
) -> WalkForwardResponse:
    """Folds run as Ray tasks in parallel when Ray is up (in-process otherwise)."""
    from serve_app.walkforward import run_walkforward_request

    return run_walkforward_request(sessions, settings, body)


@router.get(
    "/runs",
    response_model=RunsPage,
    summary="Recorded runs, newest first (filters, pages)",
    responses={422: {"model": ErrorBody, "description": "bad filter or page"}},
)
def list_runs(
    session: SessionDep,
    coin: Annotated[str | None, Query(description="base asset")] = None,
    strategy: Annotated[str | None, Query(description="strategy name")] = None,
    kind: Annotated[str | None, Query(description=f"one of {', '.join(RUN_KINDS)}")] = None,
    interval: Annotated[str | None, Query(description="bar interval")] = None,
    status: Annotated[str | None, Query(description="queued, running, succeeded, failed")] = None,
    since: Annotated[
        str | None, Query(description="created at or after (ISO-8601 or unix seconds)")
    ] = None,
    until: Annotated[
        str | None, Query(description="created at or before (ISO-8601 or unix seconds)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size")] = 50,
    offset: Annotated[int, Query(ge=0, description="runs to skip")] = 0,
) -> RunsPage:
    if kind is not None and kind not in RUN_KINDS:
        raise ApiError(
            422,
            "unknown_kind",
            f"unknown kind {kind!r}; valid kinds: {', '.join(RUN_KINDS)}",
            parameter="kind",
        )
    filters = RunFilter(
        kind=kind,
        coin=None if coin is None else coin.strip().upper(),
        interval=interval,
        strategy=strategy,
        status=status,
        created_from=None if since is None else parse_time(since, "since"),
        created_to=None if until is None else parse_time(until, "until"),
    )
    repo = RunRepository(session)
    total = repo.count(filters)
    runs = repo.list(filters, limit=limit, offset=offset)
    nxt = offset + len(runs)
    return RunsPage(
        total=total,
        limit=limit,
        offset=offset,
        next_offset=nxt if nxt < total else None,
        runs=[summary_out(r) for r in runs],
    )


@router.get(
    "/runs/{run_id}",
    response_model=RunDetailOut,
    summary="One recorded run with its request and results",
    responses=_NOT_FOUND,
)
def get_run_detail(
    session: SessionDep,
    run_id: Annotated[str, Path(max_length=64, description="registry id")],
    equity_points: Annotated[
        int, Query(ge=2, le=MAX_POINTS, description="most equity points returned")
    ] = 1000,
    max_trades: Annotated[int, Query(ge=0, le=100_000, description="most trades returned")] = 1000,
) -> RunDetailOut:
    run = get_run(session, run_id)
    trades = run.trades if isinstance(run.trades, list) else None
    return RunDetailOut(
        **summary_out(run).model_dump(),
        request=run.request,
        equity=equity_out(run.equity, equity_points),
        trades=None if trades is None else [with_iso(t) for t in trades[:max_trades]],
        trades_total=None if trades is None else len(trades),
        results=run.results if isinstance(run.results, dict) else None,
    )


# -------------------------------------------------------------------------------- compare
def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def param_diffs(requests: list[dict[str, Any]]) -> list[ParamDiffOut]:
    flat = [_flatten(r) for r in requests]
    keys = sorted(set().union(*flat))
    return [
        ParamDiffOut(field=k, values=[f.get(k) for f in flat])
        for k in keys
        if len({repr(f.get(k)) for f in flat}) > 1
    ]


def equity_axis(runs: list[RunRecord], points: int) -> CompareEquityOut:
    """Every run's equity on the union of their bar times (null where a run has no bar)."""
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
    idx, stride = service.thin_indices(len(axis), points)
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
    return CompareEquityOut(
        ts=iso_array(shown), ts_unix=shown.tolist(), series=series, stride=stride
    )


@router.get(
    "/compare",
    response_model=CompareResponse,
    summary="Runs side by side: metrics, parameter differences, equity on one time axis",
    responses={**_NOT_FOUND, 422: {"model": ErrorBody, "description": "bad ids"}},
)
def compare_runs(
    session: SessionDep,
    ids: Annotated[
        str, Query(max_length=1000, description=f"2 to {MAX_COMPARE} run ids, comma-separated")
    ],
    equity_points: Annotated[
        int, Query(ge=2, le=MAX_POINTS, description="most points on the time axis")
    ] = 1000,
) -> CompareResponse:
    wanted = [i.strip() for i in ids.split(",") if i.strip()]
    if not 2 <= len(wanted) <= MAX_COMPARE or len(set(wanted)) != len(wanted):
        raise ApiError(
            422,
            "invalid_ids",
            f"ids takes 2 to {MAX_COMPARE} distinct run ids separated by commas; got "
            f"{len(wanted)} ({len(set(wanted))} distinct)",
            parameter="ids",
        )
    runs = [get_run(session, i) for i in wanted]
    names: list[str] = []
    for run in runs:
        names.extend(k for k in (run.summary or {}) if k not in names)
    metrics = [
        CompareMetricOut(
            metric=m,
            values=[
                v if isinstance(v := (r.summary or {}).get(m), int | float) or v is None else None
                for r in runs
            ],
        )
        for m in names
    ]
    return CompareResponse(
        runs=[summary_out(r) for r in runs],
        metrics=metrics,
        param_diffs=param_diffs([r.request for r in runs]),
        equity=equity_axis(runs, equity_points),
    )


# ---------------------------------------------------------------------------------- rerun
@router.post(
    "/runs/{run_id}/rerun",
    response_model=RerunResponse,
    summary="Run a recorded backtest again with the same request; say if it is identical",
    responses={**_POST_ERRORS, **_NOT_FOUND},
    dependencies=[JsonOnly],
)
def rerun(
    settings: SettingsDep,
    sessions: SessionFactoryDep,
    run_id: Annotated[str, Path(max_length=64, description="registry id")],
) -> RerunResponse:
    with sessions() as session:
        original = get_run(session, run_id)
    if original.kind != "backtest":
        raise ApiError(
            422,
            "not_rerunnable",
            f"run {run_id} is a {original.kind}; only backtest runs can be re-run here "
            "(re-submit a walk-forward or sweep with its recorded request)",
            parameter="run_id",
        )
    req = BacktestRunRequest.model_validate(original.request)
    rec = service.run_backtest_request(sessions, settings, req, rerun_of=run_id)
    with sessions() as session:
        again = get_run(session, rec.run_id)
    before, after = original.summary or {}, again.summary or {}
    diffs = [
        MetricDiffOut(metric=k, original=before.get(k), rerun=after.get(k))
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k)
    ]
    same_equity = original.equity == again.equity
    same_trades = original.trades == again.trades
    return RerunResponse(
        original_id=run_id,
        run=backtest_response(rec, req),
        identical=not diffs and same_equity and same_trades,
        same_data=original.data_fingerprint == again.data_fingerprint,
        same_code=original.code_version == again.code_version,
        differences=diffs,
        equity_identical=same_equity,
        trades_identical=same_trades,
    )
