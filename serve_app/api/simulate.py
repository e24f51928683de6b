"""Stress-simulation routes: ``POST /risk/simulate`` and ``GET /risk/simulations/{id}``.

Thin: the body model checks every cap, :mod:`serve_app.simulations` resolves the source,
prepares the generator, fans the paths out and records the run. Work runs in FastAPI's
thread pool (the handlers are plain ``def``), never on the event loop.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Path
from fastapi.responses import Response

from serve_app import simulations
from serve_app.api.deps import SessionFactoryDep, SettingsDep
from serve_app.api.models import ErrorBody
from serve_app.api.simulate_models import SimulateRequest, SimulationResponse

router = APIRouter(tags=["risk"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown run id (source run or simulation)"},
    422: {"model": ErrorBody, "description": "invalid body, cap exceeded, unusable source"},
    503: {"model": ErrorBody, "description": "the database is down or not migrated"},
}


def _json(status: int, body: dict[str, Any]) -> Response:
    data = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    return Response(data, status_code=status, media_type="application/json")


@router.post(
    "/risk/simulate",
    response_model=SimulationResponse,
    responses={
        202: {"model": SimulationResponse, "description": "accepted: poll the run"},
        **_ERRORS,
    },
    summary="Monte Carlo stress simulation of a strategy's returns",
)
def simulate(req: SimulateRequest, sessions: SessionFactoryDep, settings: SettingsDep) -> Response:
    """Block bootstrap or regime-switching paths with black-swan and liquidity shocks,
    reduced to drawdown percentiles, VaR/ES of the horizon return, ruin and liquidation
    probabilities, time under water and an equity fan. Large requests answer 202 with a run
    id; the same request always gives the same numbers (recorded in the run registry)."""
    status, body = simulations.submit(sessions, settings, req)
    return _json(status, body)


@router.get(
    "/risk/simulations/{run_id}",
    response_model=SimulationResponse,
    responses=_ERRORS,
    summary="Progress and result of a simulation run",
)
def simulation(
    sessions: SessionFactoryDep,
    run_id: str = Path(description="the run id POST /risk/simulate returned"),
) -> Response:
    """Status, progress (paths done / total) and, once succeeded, the result."""
    return _json(200, simulations.status(sessions, run_id))
