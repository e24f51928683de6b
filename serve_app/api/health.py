"""Probes: ``/live`` (the process serves), ``/ready`` (the database answers and is migrated)
and ``/health`` (details for humans and dashboards: DB latency and revision, the age of each
configured series, Ray resources)."""

from __future__ import annotations

import sys
import time
from functools import lru_cache
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from serve_app.api.deps import EngineDep, SettingsDep
from serve_app.api.errors import error_response
from serve_app.api.schemas.health import (
    DatabaseHealth,
    ExecutionHealth,
    HealthResponse,
    IngestionHealth,
    LiveResponse,
    NotReadyResponse,
    RayHealth,
    ReadyResponse,
    RevisionOut,
    SeriesHealth,
)
from serve_app.ingest import supervisor_status
from serve_app.settings import Settings
from serve_app.timefmt import iso
from serve_app.version import package_version
from storage.candles import CandleRepository
from storage.engine import ping, redact_url
from storage.intervals import interval_seconds
from storage.migrate import current_revision, head_revision
from storage.series import SeriesRepository

router = APIRouter(tags=["health"])


@lru_cache(maxsize=1)
def _head() -> str | None:
    """The newest migration shipped with this code (read once: it cannot change at runtime)."""
    return head_revision()


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0][:200]
    return f"{type(orig).__name__}: {first}"


@router.get("/live", response_model=LiveResponse, summary="Liveness: the process serves")
async def live() -> LiveResponse:
    """Never touches the database: a slow or down database must not get the process killed."""
    return LiveResponse(status="ok")


@router.get(
    "/ready",
    response_model=ReadyResponse,
    summary="Readiness: database reachable and migrated",
    responses={503: {"model": NotReadyResponse, "description": "not ready, with reasons"}},
)
def ready(engine: EngineDep, settings: SettingsDep) -> ReadyResponse | Response:
    reasons: list[str] = []
    current = None
    try:
        current = current_revision(engine)
    except Exception as exc:
        reasons.append(f"database unreachable ({_short(exc)}); check SQUALL_DATABASE_URL")
    else:
        head = _head()
        if current != head:
            reasons.append(
                f"database schema is at revision {current or 'none (empty)'}, this code needs "
                f"{head}; run `squall db upgrade`"
            )
    status, problem = supervisor_status(settings)
    if problem:
        reasons.append(problem)
    elif status is not None and status["stalled"]:
        lags = {j["job"]: j["stalled_by_s"] for j in status["jobs"]}
        reasons.append(
            "ingestion stalled: "
            + ", ".join(f"{job} (behind by {lags[job]:.0f}s)" for job in status["stalled"])
        )
    if settings.ready_after_warm_up and settings.warm_up:
        from serve_app.execution.warmup import STATE

        if STATE["state"] not in ("done", "failed"):
            reasons.append(f"compiling the common kernels (warm-up {STATE['state']})")
    if reasons:
        return _not_ready(reasons)
    return ReadyResponse(status="ready", revision=current)


def _not_ready(reasons: list[str]) -> Response:
    return error_response(503, "not_ready", "; ".join(reasons), status="not_ready", reasons=reasons)


def _database(engine: Engine) -> DatabaseHealth:
    backend = engine.dialect.name
    url = redact_url(engine.url.render_as_string(hide_password=False))
    try:
        latency_ms = ping(engine)
        current = current_revision(engine)
    except Exception as exc:
        return DatabaseHealth(
            ok=False, backend=backend, url=url, latency_ms=None, error=_short(exc), revision=None
        )
    head = _head()
    return DatabaseHealth(
        ok=True,
        backend=backend,
        url=url,
        latency_ms=round(latency_ms, 3),
        error=None,
        revision=RevisionOut(current=current, head=head, up_to_date=current == head),
    )


def _series(engine: Engine, settings: Settings, now: int) -> list[SeriesHealth]:
    out = []
    with Session(engine) as session:
        repo = CandleRepository(session)
        owners = {(o.coin, o.interval): o.source for o in SeriesRepository(session).all()}
        for coin in settings.coins:
            for interval in settings.intervals:
                latest = repo.latest_ts(coin, interval)
                step = interval_seconds(interval)
                age = None if latest is None else now - (latest + step)
                out.append(
                    SeriesHealth(
                        coin=coin,
                        interval=interval,
                        latest_ts=None if latest is None else iso(latest),
                        latest_ts_unix=latest,
                        source=owners.get((coin, interval)),
                        age_s=age,
                        stale=age is None or age > step + settings.ingest_grace_s,
                    )
                )
    return out


def _ray() -> RayHealth | None:
    ray = sys.modules.get("ray")  # never import Ray just to say it is not running
    if ray is None or not ray.is_initialized():
        return None
    return RayHealth(
        cluster_resources={k: float(v) for k, v in ray.cluster_resources().items()},
        available_resources={k: float(v) for k, v in ray.available_resources().items()},
    )


def _execution() -> ExecutionHealth:
    from serve_app.execution.warmup import STATE

    workers = None
    if _ray() is not None:
        from serve_app.execution.workers import pool

        try:
            workers = pool().status()
        except Exception as exc:  # the workers' state must not make /health fail
            workers = [{"error": f"{type(exc).__name__}: {exc}"[:300]}]
    return ExecutionHealth(warm_up=dict(STATE), workers=workers)


def _ingestion(settings: Settings) -> IngestionHealth | None:
    status, problem = supervisor_status(settings)
    if problem:
        return IngestionHealth(
            running=False,
            role=None,
            reason=problem,
            data_source=settings.data_source,
            lock=None,
            stalled=[],
            jobs=[],
            gap_checks=[],
        )
    if status is None:
        return None
    fields = set(IngestionHealth.model_fields) - {"reason"}
    return IngestionHealth(reason=None, **{k: v for k, v in status.items() if k in fields})


@router.get("/health", response_model=HealthResponse, summary="Details for humans and dashboards")
def health(engine: EngineDep, settings: SettingsDep) -> HealthResponse:
    """Always 200 (``/ready`` is the probe to gate traffic on); ``status`` summarises."""
    now = int(time.time())
    database = _database(engine)
    series = None
    status: Literal["ok", "degraded", "down"] = "down"
    if database.ok:
        up_to_date = database.revision is not None and database.revision.up_to_date
        try:
            series = _series(engine, settings, now) if up_to_date else None
        except Exception:
            series = None
        fresh = series is not None and not any(s.stale for s in series)
        status = "ok" if up_to_date and fresh else "degraded"
    ingestion = _ingestion(settings)
    if ingestion is not None and (ingestion.reason or ingestion.stalled) and status == "ok":
        status = "degraded"
    return HealthResponse(
        execution=_execution(),
        ingestion=ingestion,
        status=status,
        version=package_version(),
        time=iso(now),
        time_unix=now,
        database=database,
        series=series,
        ray=_ray(),
    )
