"""Risk routes: ``POST /risk/report`` (VaR/ES by three methods, drawdown, vol targeting,
rolling VaR, portfolio VaR/ES), ``GET /risk/correlation`` (Pearson or Spearman, rolling,
Ledoit-Wolf shrinkage), and the stress simulation: ``POST /risk/simulate`` and
``GET /risk/simulations/{id}``.

Thin: the request models check every cap; :mod:`serve_app.services.risk` and
:mod:`serve_app.services.simulation` do the work; each answer is checked against its response
model before it is sent. Definitions: ``docs/risk.md``, ``docs/risk-simulation.md``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from serve_app.api.deps import SessionDep, SessionFactoryDep, SettingsDep
from serve_app.api.encoding import typed_json
from serve_app.api.guards import COSTLY_RESPONSES, Costly
from serve_app.api.schemas.common import ErrorBody
from serve_app.api.schemas.risk import CorrelationResponse, RiskReportResponse, SimulationResponse
from serve_app.services import risk as service
from serve_app.services import simulation
from serve_app.services.requests.risk import MAX_ROWS_PER_COIN, RiskReportRequest, Shrinkage
from serve_app.services.requests.simulation import SimulateRequest

router = APIRouter(prefix="/risk", tags=["risk"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown coin or run id"},
    422: {
        "model": ErrorBody,
        "description": "invalid parameter, a cap exceeded (the message says what to lower), or "
        "insufficient_data (details: required and received returns, dropped timestamps)",
    },
    503: {"model": ErrorBody, "description": "the database is down or not migrated"},
}


@router.post(
    "/report",
    response_model=RiskReportResponse,
    summary="VaR/ES, drawdown, vol targeting of coins or a run",
    responses={**_ERRORS, **COSTLY_RESPONSES},
    dependencies=[Costly],
)
def post_report(body: RiskReportRequest, session: SessionDep, settings: SettingsDep) -> Response:
    """Per series (each coin, or the run) and for the weighted portfolio: VaR and ES at each
    level by the historical, normal and Cornish-Fisher methods; moments; drawdown; causal
    vol-targeting scale; rolling VaR with breach counts and Kupiec's test."""
    return typed_json(RiskReportResponse, service.report(session, settings, body))


@router.get(
    "/correlation",
    response_model=CorrelationResponse,
    summary="Correlation matrix of coins on aligned returns",
    responses=_ERRORS,
)
def get_correlation(
    session: SessionDep,
    settings: SettingsDep,
    coins: Annotated[
        str,
        Query(max_length=2000, description="comma-separated coins, 2 to 50", examples=["BTC,ETH"]),
    ],
    interval: Annotated[str, Query(max_length=8, description="bar interval")] = "1d",
    window: Annotated[
        int,
        Query(ge=3, le=MAX_ROWS_PER_COIN, description="latest N returns (when start is omitted)"),
    ] = 365,
    start: Annotated[str | None, Query(description="first bar (ISO-8601 or unix s)")] = None,
    end: Annotated[str | None, Query(description="last bar, inclusive")] = None,
    method: Annotated[
        Literal["pearson", "spearman"], Query(description="pearson or spearman")
    ] = "pearson",
    rolling_window: Annotated[
        int | None,
        Query(ge=3, le=MAX_ROWS_PER_COIN, description="returns per rolling window; omitted: none"),
    ] = None,
    rolling_step: Annotated[
        int | None,
        Query(ge=1, le=MAX_ROWS_PER_COIN, description="bars between rolling windows"),
    ] = None,
    shrinkage: Annotated[
        Shrinkage | None, Query(description="Ledoit-Wolf target: constant_correlation or identity")
    ] = None,
) -> Response:
    """Correlation and covariance (ddof=1) of one-bar close-to-close returns on the
    timestamps every coin has (how many were dropped is reported), optionally Ledoit-Wolf
    shrunk and as rolling matrices anchored at the last bar."""
    q = service.CorrelationQuery(
        coins, interval, window, start, end, method, rolling_window, rolling_step, shrinkage
    )
    return typed_json(CorrelationResponse, service.correlation(session, settings, q))


@router.post(
    "/simulate",
    response_model=SimulationResponse,
    responses={
        202: {"model": SimulationResponse, "description": "accepted: poll the run"},
        **_ERRORS,
        **COSTLY_RESPONSES,
    },
    dependencies=[Costly],
    summary="Monte Carlo stress simulation of a strategy's returns",
)
def simulate(req: SimulateRequest, sessions: SessionFactoryDep, settings: SettingsDep) -> Response:
    """Block bootstrap or regime-switching paths with black-swan and liquidity shocks,
    reduced to drawdown percentiles, VaR/ES of the horizon return, ruin and liquidation
    probabilities, time under water and an equity fan. Large requests answer 202 with a run
    id; the same request always gives the same numbers (recorded in the run registry)."""
    status, body = simulation.submit(sessions, settings, req)
    return typed_json(SimulationResponse, body, status)


@router.get(
    "/simulations/{run_id}",
    response_model=SimulationResponse,
    responses=_ERRORS,
    summary="Progress and result of a simulation run",
)
def simulation_status(
    sessions: SessionFactoryDep,
    run_id: Annotated[str, Path(max_length=64, description="the id POST /risk/simulate returned")],
) -> Response:
    """Status, progress (paths done / total) and, once succeeded, the result."""
    return typed_json(SimulationResponse, simulation.status(sessions, run_id))
