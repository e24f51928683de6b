"""Strategy routes: ``GET /strategies`` (built-ins and plugins with their parameters and
provenance) and ``POST /signals`` (any strategy's target weights per bar: a name, a plugin or
a declarative spec in a JSON body). Thin: the work is :mod:`serve_app.services.strategy` and
:mod:`serve_app.services.strategy_signals`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serve_app.api.backtest import JsonOnly
from serve_app.api.deps import SessionFactoryDep, SettingsDep
from serve_app.api.guards import COSTLY_RESPONSES, Costly
from serve_app.api.schemas.backtest import InvalidStrategyBody, LookaheadBody
from serve_app.api.schemas.common import ErrorBody, InsufficientDataBody
from serve_app.api.schemas.strategies import StrategiesResponse, StrategySignalsResponse
from serve_app.services import strategy as svc
from serve_app.services.requests.signals import SignalsRequest
from serve_app.services.strategy_signals import strategy_signals

router = APIRouter(tags=["strategies"])

_SIGNAL_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "parameters sent in the query string"},
    404: {"model": ErrorBody, "description": "unknown coin (the body lists known coins)"},
    422: {
        "model": InvalidStrategyBody | LookaheadBody | InsufficientDataBody | ErrorBody,
        "description": "invalid_strategy (field, token, position, valid), unknown_strategy, "
        "invalid_parameter, lookahead_detected / recursion_detected (the first bar that "
        "changed), insufficient_data",
    },
    503: {"model": ErrorBody, "description": "the database is down or not migrated"},
}


@router.get(
    "/strategies",
    response_model=StrategiesResponse,
    summary="Every strategy usable by name: built-ins and plugins, parameters, provenance",
    responses={422: {"model": ErrorBody, "description": "a configured plugin does not load"}},
)
def get_strategies(settings: SettingsDep) -> StrategiesResponse:
    """Built-ins, the plugins of the ``squall.strategies`` entry points and of
    ``SQUALL_STRATEGY_MODULES``; any of them, or a declarative spec, is accepted wherever a
    strategy is (``/backtest/run``, ``/backtest/walkforward``, sweeps, ``POST /signals``,
    ``/risk/simulate``)."""
    from serve_app.strategy_plugins import ENTRY_POINT_GROUP

    found = svc.catalogue(settings)
    return StrategiesResponse.model_validate(
        {
            "strategies": [
                {**svc.describe(found[n].plugin), "provenance": found[n].provenance()}
                for n in sorted(found)
            ],
            "modules": list(settings.strategy_modules),
            "entry_point_group": ENTRY_POINT_GROUP,
            "specs": svc.SPEC_NOTE,
        }
    )


@router.post(
    "/signals",
    response_model=StrategySignalsResponse,
    summary="Any strategy's target weights per bar (JSON body: a name, plugin or spec)",
    responses={**_SIGNAL_ERRORS, **COSTLY_RESPONSES},
    dependencies=[JsonOnly, Costly],
)
def post_signals(
    body: SignalsRequest, settings: SettingsDep, sessions: SessionFactoryDep
) -> StrategySignalsResponse:
    """Target weight at the close of each bar of the window (its warm-up read before it), flat
    inside the warm-up; no weight uses a later candle (a user strategy is checked: the
    ``checks`` block). ``GET /signals`` remains for the registry's signals by name."""
    return StrategySignalsResponse.model_validate(strategy_signals(sessions, settings, body))
