"""squall's Python client: the HTTP API as typed methods returning pandas frames.

    from squall import Client          # or: from squall.client import Client

It imports nothing of the server (``serve_app``, ``compute``, ``storage``): it talks HTTP
only, to ``make run`` on a laptop or a cluster's API. See ``docs/client.md``.
"""

from __future__ import annotations

from squall.client import Client
from squall.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    RunFailedError,
    ServerError,
    SquallAPIError,
    SquallConnectionError,
    SquallError,
    UnavailableError,
    WaitTimeoutError,
)
from squall.results import BacktestResult, RiskReport, Run, SimulationResult, WalkForwardResult

__all__ = [
    "AuthError",
    "BacktestResult",
    "BadRequestError",
    "Client",
    "ConflictError",
    "InvalidRequestError",
    "NotFoundError",
    "RateLimitedError",
    "RiskReport",
    "Run",
    "RunFailedError",
    "ServerError",
    "SimulationResult",
    "SquallAPIError",
    "SquallConnectionError",
    "SquallError",
    "UnavailableError",
    "WaitTimeoutError",
    "WalkForwardResult",
]
