"""The FastAPI app factory: routers, error handlers, middleware, and the lazily created engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from serve_app.api import (
    analytics,
    backtest,
    features,
    health,
    market,
    prometheus,
    reports,
    risk,
    runs,
    ui,
)
from serve_app.api.deps import app_sessions, app_settings, dispose_engine
from serve_app.api.errors import install_error_handlers
from serve_app.api.guards import APP_RESPONSES, BodyLimitMiddleware, require_credentials
from serve_app.api.portfolio import router as portfolio_router
from serve_app.api.strategies import router as strategies_router
from serve_app.observability import RequestContextMiddleware, configure_logging
from serve_app.settings import Settings, get_settings
from serve_app.version import package_version

DESCRIPTION = """\
squall: market data (candles, coverage, gaps, snapshots, microstructure), analytics
(indicators, signals, regimes, features), backtests and walk-forward, risk reports and stress
simulations, and the run registry (`/runs`: status, progress, cancel) of every long job.

Every time is given as ISO-8601 UTC (`ts`) and unix seconds (`ts_unix`); time parameters
accept either. Every error body is `{"error": code, "message": text, ...}`.

With `SQUALL_API_TOKEN` (or `SQUALL_API_KEYS_FILE`) set, POST and DELETE routes need
`Authorization: Bearer <token>` or `X-API-Key: <token>` (401 without, 403 with a wrong one);
reads too with `SQUALL_AUTH_READS=true`. Costly routes admit a bounded number of requests at
once per replica: past that, 503 `busy` with `Retry-After`. Bodies over
`SQUALL_MAX_BODY_BYTES` are 413.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start-up of a serving process: the execution layer's settings (compilation cache,
    warm workers), the stale-run reaper, and the kernel warm-up in the background (readiness
    never waits for it). Shutdown: stop the reaper, close the pool."""
    settings = app_settings(app)
    stop = None
    if app.state.background:
        from serve_app.execution import warmup, workers
        from serve_app.execution.runs import start_reaper

        workers.configure(settings)
        stop = start_reaper(
            settings.database_url,
            settings.run_heartbeat_timeout_s,
            queued_timeout_s=settings.run_queue_timeout_s,
        )
        if settings.warm_up:
            warmup.start_in_background(
                warmup.warm_up_replica,
                app_sessions(app),
                settings,
                cache_dir=settings.jax_cache_dir,
            )
    yield
    if stop is not None:
        stop.set()
    dispose_engine(app)


def create_app(
    settings: Settings | None = None,
    *,
    configure_logs: bool = True,
    echo_request_id: bool = True,
    background: bool = True,
) -> FastAPI:
    """Build the API. Touches no database: the engine is created on the first request that
    needs one (so under Ray Serve it is created inside each replica).

    ``echo_request_id=False`` under Ray Serve, which echoes ``X-Request-ID`` itself;
    ``background=False`` starts no reaper and no warm-up (tests of single routes).
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
        dependencies=[Depends(require_credentials)],
        responses=APP_RESPONSES,
    )
    app.state.settings = settings
    app.state.engine = None
    app.state.sessions = None
    app.state.background = background
    install_error_handlers(app)
    # Added first, so it runs inside the request context (its 413 carries the request id).
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, echo_request_id=echo_request_id)
    routers = (health, prometheus, market, analytics, features, backtest, risk, runs, reports, ui)
    for module in routers:
        app.include_router(module.router)
    app.include_router(strategies_router)
    app.include_router(portfolio_router)
    return app
