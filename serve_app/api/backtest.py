"""Backtest routes: run, walk-forward, and the backtest view of the run registry (list, get,
compare, rerun).

Thin: reject query strings on the POST routes (the contract is a JSON body), call the service
(:mod:`serve_app.services.backtest`, :mod:`serve_app.services.walkforward`,
:mod:`serve_app.services.runs`), render. Every time is given as ISO-8601 UTC and unix seconds.
``"mode": "async"`` answers 202 with the queued run; ``/runs/{id}`` follows and cancels it.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from serve_app.api.deps import SessionDep, SessionFactoryDep, SettingsDep
from serve_app.api.errors import ApiError
from serve_app.api.guards import COSTLY_RESPONSES, Costly
from serve_app.api.runs import (
    NOT_FOUND,
    CoinFilter,
    IntervalFilter,
    LimitQuery,
    OffsetQuery,
    PointsQuery,
    RunId,
    SinceQuery,
    StatusQuery,
    StrategyFilter,
    TradesQuery,
    UntilQuery,
    detail_out,
    equity_out,
    page_out,
    rows_with_iso,
    summary_out,
    with_iso,
)
from serve_app.api.schemas.backtest import (
    BacktestInsufficientBody,
    BacktestRunResponse,
    InvalidBacktestBody,
    InvalidStrategyBody,
    LookaheadBody,
    MetricDiffOut,
    RerunResponse,
    UsedOut,
    UseJsonBody,
    WalkForwardResponse,
)
from serve_app.api.schemas.common import ErrorBody
from serve_app.api.schemas.runs import (
    CompareEquityOut,
    CompareMetricOut,
    CompareResponse,
    ParamDiffOut,
    RunDetailOut,
    RunQueuedOut,
    RunsPage,
)
from serve_app.services import backtest as service
from serve_app.services import runs
from serve_app.services import walkforward as wf
from serve_app.services.requests.backtest import BacktestRunRequest, WalkForwardRequest
from serve_app.timefmt import iso, iso_array
from storage.models import RUN_KINDS

router = APIRouter(prefix="/backtest", tags=["backtest"])

_POST_ERRORS: dict[int | str, dict[str, Any]] = {
    202: {"model": RunQueuedOut, "description": 'mode "async": the run is queued'},
    400: {"model": UseJsonBody, "description": "parameters sent in the query string"},
    404: {"model": ErrorBody, "description": "unknown coin (the body lists known coins)"},
    422: {
        "model": BacktestInsufficientBody
        | InvalidStrategyBody
        | LookaheadBody
        | InvalidBacktestBody
        | ErrorBody,
        "description": "insufficient_data (counts, look-back, latest candle, suggested start), "
        "invalid_strategy (a spec: field, token, position, valid), lookahead_detected / "
        "recursion_detected (a user strategy reads the future: the first bar that changed), "
        "unknown_strategy / invalid_parameter (lists what is valid), grid or bars over a cap, "
        "folds longer than the data, or a body field out of range",
    },
    503: {"model": ErrorBody, "description": "the database is down or not migrated"},
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


def queued(body: dict[str, Any]) -> JSONResponse:
    """202 with the queued run (validated against its schema)."""
    return JSONResponse(RunQueuedOut.model_validate(body).model_dump(mode="json"), 202)


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
        trades=rows_with_iso(rec.trades[: req.max_trades]),
        trades_total=len(rec.trades),
        regime_stats=rec.regime_stats,
        execution=rec.extra.get("execution"),
    )


# ---------------------------------------------------------------------------------- runs
@router.post(
    "/run",
    response_model=BacktestRunResponse,
    summary="Backtest one strategy on one series (JSON body only)",
    responses={**_POST_ERRORS, **COSTLY_RESPONSES},
    dependencies=[JsonOnly, Costly],
)
def post_run(
    body: BacktestRunRequest, settings: SettingsDep, sessions: SessionFactoryDep
) -> BacktestRunResponse | JSONResponse:
    """Orders execute at the next bar's open; fees and slippage per side; funding from stored
    rates while a position is held. The run is recorded in the registry under ``run_id``."""
    if body.mode == "async":
        return queued(service.submit_backtest(sessions, settings, body))
    return backtest_response(service.run_backtest(sessions, settings, body), body)


@router.post(
    "/walkforward",
    response_model=WalkForwardResponse,
    summary="Walk-forward validation: choose on train, evaluate out of sample (JSON body)",
    responses={**_POST_ERRORS, **COSTLY_RESPONSES},
    dependencies=[JsonOnly, Costly],
)
def post_walkforward(
    body: WalkForwardRequest, settings: SettingsDep, sessions: SessionFactoryDep
) -> WalkForwardResponse | JSONResponse:
    """Small walk-forwards run in the replica; large ones spread their folds over the warm
    workers of every node (same numbers either way)."""
    if body.mode == "async":
        return queued(wf.submit_walkforward(sessions, settings, body))
    result = wf.run_walkforward(sessions, settings, body)
    equity = result["oos"]["equity"]
    ts = np.asarray(equity["ts_unix"], np.int64)
    equity["ts"], equity["ts_unix"] = iso_array(ts), ts.tolist()
    result.pop("status", None)
    return WalkForwardResponse.model_validate(result)


@router.get(
    "/runs",
    response_model=RunsPage,
    summary="Recorded runs, newest first (filters, pages); the same as /runs",
    responses={422: {"model": ErrorBody, "description": "bad filter or page"}},
)
def list_runs(
    session: SessionDep,
    coin: CoinFilter = None,
    strategy: StrategyFilter = None,
    kind: Annotated[str | None, Query(description=f"one of {', '.join(RUN_KINDS)}")] = None,
    interval: IntervalFilter = None,
    status: StatusQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> RunsPage:
    query = runs.RunQuery(kind, coin, interval, strategy, status, since, until, limit, offset)
    return page_out(query, session)


@router.get(
    "/runs/{run_id}",
    response_model=RunDetailOut,
    summary="One recorded run with its request and results",
    responses=NOT_FOUND,
)
def get_run_detail(
    session: SessionDep,
    run_id: RunId,
    equity_points: PointsQuery = 1000,
    max_trades: TradesQuery = 1000,
) -> RunDetailOut:
    return detail_out(runs.get_run(session, run_id), equity_points, max_trades)


@router.get(
    "/compare",
    response_model=CompareResponse,
    summary="Runs side by side: metrics, parameter differences, equity on one time axis",
    responses={**NOT_FOUND, 422: {"model": ErrorBody, "description": "bad ids"}},
)
def compare_runs(
    session: SessionDep,
    ids: Annotated[
        str,
        Query(max_length=1000, description=f"2 to {runs.MAX_COMPARE} run ids, comma-separated"),
    ],
    equity_points: Annotated[
        int, Query(ge=2, le=100_000, description="most points on the time axis")
    ] = 1000,
) -> CompareResponse:
    wanted = [i.strip() for i in ids.split(",") if i.strip()]
    c = runs.compare(session, wanted, equity_points)
    shown = c.equity["ts_unix"]
    return CompareResponse(
        runs=[summary_out(r) for r in c.runs],
        metrics=[CompareMetricOut.model_validate(m) for m in c.metrics],
        param_diffs=[ParamDiffOut.model_validate(d) for d in c.param_diffs],
        equity=CompareEquityOut(
            ts=iso_array(shown),
            ts_unix=shown.tolist(),
            series=c.equity["series"],
            stride=c.equity["stride"],
        ),
    )


@router.post(
    "/runs/{run_id}/rerun",
    response_model=RerunResponse,
    summary="Run a recorded backtest or portfolio again with the same request; say if it is "
    "identical",
    responses={**_POST_ERRORS, **NOT_FOUND, **COSTLY_RESPONSES},
    dependencies=[JsonOnly, Costly],
)
def rerun(settings: SettingsDep, sessions: SessionFactoryDep, run_id: RunId) -> RerunResponse:
    """A backtest or a portfolio run, again with its recorded request (a spec's text and a
    plugin's source hash are part of what is compared: ``same_strategy``)."""
    return rerun_response(run_id, service.rerun(sessions, settings, run_id))


def rerun_response(run_id: str, again: service.Rerun) -> RerunResponse:
    """The answer of a rerun (the route and ``squall backtest rerun`` print the same)."""
    from serve_app.api.portfolio import portfolio_response

    run = (
        backtest_response(again.recorded, again.request)
        if isinstance(again.request, BacktestRunRequest)
        else portfolio_response(again.recorded, again.request)
    )
    return RerunResponse(
        original_id=run_id,
        run=run,
        same_strategy=again.same_strategy,
        identical=again.identical,
        same_data=again.original.data_fingerprint == again.again.data_fingerprint,
        same_code=again.original.code_version == again.again.code_version,
        differences=[MetricDiffOut.model_validate(d) for d in again.differences],
        equity_identical=again.equity_identical,
        trades_identical=again.trades_identical,
    )
