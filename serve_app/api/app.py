"""The FastAPI app factory: routers, error handlers, middleware, and the lazily created engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from serve_app.api import analytics, backtest, health, market, metrics, risk, simulate
from serve_app.api.deps import dispose_engine
from serve_app.api.errors import install_error_handlers
from serve_app.api.version import package_version
from serve_app.observability import RequestContextMiddleware, configure_logging
from serve_app.settings import Settings, get_settings

DESCRIPTION = """\
Market data of squall: candles, coverage, gaps and snapshots.

Every time is given as ISO-8601 UTC (`ts`) and unix seconds (`ts_unix`); time parameters
accept either. Every error body is `{"error": code, "message": text, ...}`.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    dispose_engine(app)


def create_app(
    settings: Settings | None = None,
    *,
    configure_logs: bool = True,
    echo_request_id: bool = True,
) -> FastAPI:
    """Build the API. Touches no database: the engine is created on the first request that
    needs one (so under Ray Serve it is created inside each replica).

    ``echo_request_id=False`` under Ray Serve, which echoes ``X-Request-ID`` itself.
    """
    settings = settings if settings is not None else get_settings()
    if configure_logs:
        configure_logging(settings.log_level)
    app = FastAPI(
        title="squall",
        version=package_version(),
        description=DESCRIPTION,
        docs_url="/docs",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.engine = None
    app.state.sessions = None
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, echo_request_id=echo_request_id)
    app.include_router(health.router)
    app.include_router(market.router)
    app.include_router(analytics.router)
    app.include_router(metrics.router)
    app.include_router(backtest.router)
    app.include_router(risk.router)
    app.include_router(simulate.router)
    return app
