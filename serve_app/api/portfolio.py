"""Portfolio routes: ``POST /backtest/portfolio`` (several coins, a momentum rule or a strategy
per coin, a rebalancing schedule) and ``POST /backtest/portfolio/walkforward``. Thin: the work
is :mod:`serve_app.services.portfolio` and :mod:`serve_app.services.portfolio_walkforward`;
the registry routes (``/backtest/runs``, ``/backtest/compare``, rerun) serve portfolio runs too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter

from serve_app.api.backtest import JsonOnly
from serve_app.api.deps import SessionFactoryDep, SettingsDep
from serve_app.api.guards import COSTLY_RESPONSES, Costly
from serve_app.api.runs import with_iso
from serve_app.api.schemas.backtest import (
    BacktestInsufficientBody,
    InvalidBacktestBody,
    InvalidStrategyBody,
    LookaheadBody,
    UseJsonBody,
)
from serve_app.api.schemas.common import ErrorBody
from serve_app.api.schemas.portfolio import (
    PortfolioEquityOut,
    PortfolioRunResponse,
    PortfolioWalkForwardResponse,
)
from serve_app.services import portfolio as service
from serve_app.services import portfolio_walkforward as pwf
from serve_app.services.requests.portfolio import PortfolioRequest, PortfolioWalkForwardRequest
from serve_app.services.results import thin_indices
from serve_app.timefmt import iso, iso_array

router = APIRouter(prefix="/backtest", tags=["portfolio"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": UseJsonBody, "description": "parameters sent in the query string"},
    404: {"model": ErrorBody, "description": "unknown coin (the body lists known coins)"},
    422: {
        "model": BacktestInsufficientBody | InvalidStrategyBody | LookaheadBody
        | InvalidBacktestBody | ErrorBody,
        "description": "insufficient_data (which coin, how many bars), invalid_strategy / "
        "unknown_strategy / invalid_parameter of a per-coin strategy, lookahead_detected, "
        "invalid_costs, caps, folds longer than the data, or a body field out of range",
    },
    503: {"model": ErrorBody, "description": "the database is down or not migrated"},
}  # fmt: skip


def _column(values: Any, idx: np.ndarray) -> list[float | None]:
    arr = np.asarray(values if values is not None else [], dtype=object)
    return [None if v is None else float(v) for v in arr[idx]] if len(arr) else []


def equity_out(equity: dict[str, Any], points: int) -> PortfolioEquityOut:
    """A stored portfolio equity curve, thinned to ``points`` for the response."""
    ts = np.asarray(equity["ts"], dtype=np.int64)
    idx, stride = thin_indices(len(ts), points)
    cols = {k: _column(equity.get(k), idx) for k in service.EQUITY_KEYS if k != "ts"}
    return PortfolioEquityOut(
        ts=iso_array(ts[idx]), ts_unix=ts[idx].tolist(), **cols,
        total_points=int(equity.get("total_points", len(ts))),
        stride=stride * int(equity.get("stride", 1)),
    )  # fmt: skip


def portfolio_response(rec: service.Recorded, req: PortfolioRequest) -> PortfolioRunResponse:
    m = rec.metrics
    return PortfolioRunResponse.model_validate(
        {
            "run_id": rec.run_id,
            "kind": "portfolio",
            "created_at": iso(rec.created_at),
            "created_at_unix": rec.created_at,
            "duration_s": rec.duration_s,
            "used": rec.used,
            "metrics": with_iso(m),
            "equity": equity_out(rec.equity, req.equity_points),
            "assets": rec.assets,
            "turnover": {k: m.get(k) for k in ("turnover", "turnover_annual", "rebalances")},
            "exposure": {
                "in_market": m.get("exposure"),
                "gross_avg": m.get("gross_exposure_avg"),
                "gross_max": m.get("gross_exposure_max"),
                "net_avg": m.get("net_exposure_avg"),
            },
            "regime_stats": rec.regime_stats,
            "execution": rec.extra.get("execution"),
        }
    )


@router.post(
    "/portfolio",
    response_model=PortfolioRunResponse,
    summary="Backtest a portfolio of coins: momentum rule or per-coin strategies (JSON body)",
    responses={**_ERRORS, **COSTLY_RESPONSES},
    dependencies=[JsonOnly, Costly],
)
def post_portfolio(
    body: PortfolioRequest, settings: SettingsDep, sessions: SessionFactoryDep
) -> PortfolioRunResponse:
    """Targets decided at the close of each decision bar, every traded leg set to its weight
    of the post-cost equity at the next open; no bar is invented. Recorded as a run of kind
    ``portfolio`` (rerun, compare and ``/risk/simulate`` with ``run_id`` take it)."""
    return portfolio_response(service.run_portfolio(sessions, settings, body), body)


@router.post(
    "/portfolio/walkforward",
    response_model=PortfolioWalkForwardResponse,
    summary="Walk-forward of a momentum portfolio: choose on train, evaluate OOS (JSON body)",
    responses={**_ERRORS, **COSTLY_RESPONSES},
    dependencies=[JsonOnly, Costly],
)
def post_portfolio_walkforward(
    body: PortfolioWalkForwardRequest, settings: SettingsDep, sessions: SessionFactoryDep
) -> PortfolioWalkForwardResponse:
    """Per fold the grid's lookback / top_k / short_k are backtested on the train bars (each
    window flat, fresh capital), the best by ``objective`` on the test bars; the test returns
    are stitched into one out-of-sample curve."""
    result = pwf.run_walkforward(sessions, settings, body)
    equity = result["oos"]["equity"]
    equity["ts"] = iso_array(np.asarray(equity["ts_unix"], np.int64))
    return PortfolioWalkForwardResponse.model_validate(result)
