"""Responses of ``/live``, ``/ready`` and ``/health``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from serve_app.api.schemas.common import ApiModel


class LiveResponse(ApiModel):
    status: Literal["ok"] = Field(description="always 'ok' while the process serves")


class ReadyResponse(ApiModel):
    status: Literal["ready"] = Field(description="the database answers and is migrated")
    revision: str | None = Field(description="the database's (= head) migration revision")


class NotReadyResponse(ApiModel):
    status: Literal["not_ready"] = Field(description="not ready to serve traffic")
    error: Literal["not_ready"] = Field(description="error code (uniform error shape)")
    message: str = Field(description="the reasons joined, for a human")
    reasons: list[str] = Field(description="each reason the API is not ready")
    request_id: str | None = Field(None, description="the request's id")


class RevisionOut(ApiModel):
    current: str | None = Field(description="the database's migration revision")
    head: str | None = Field(description="the newest migration this code ships")
    up_to_date: bool = Field(description="current == head")


class DatabaseHealth(ApiModel):
    ok: bool = Field(description="whether the database answered")
    backend: str = Field(description="sqlite or postgresql")
    url: str = Field(description="database URL with the password redacted")
    latency_ms: float | None = Field(description="round trip of SELECT 1, milliseconds")
    error: str | None = Field(description="why it did not answer, if it did not")
    revision: RevisionOut | None = Field(description="migration revisions, when reachable")


class SeriesHealth(ApiModel):
    coin: str = Field(description="configured coin")
    interval: str = Field(description="configured interval")
    latest_ts: str | None = Field(description="latest stored bar open time, ISO-8601 UTC")
    latest_ts_unix: int | None = Field(description="latest stored bar open time, unix s")
    source: str | None = Field(
        description="the source the series belongs to (synthetic, file, binance:spot, ...); "
        "null while it holds no candles"
    )
    age_s: int | None = Field(
        description="seconds since the latest stored bar closed (open time + interval)"
    )
    stale: bool = Field(
        description="no candles, or age_s above one interval plus SQUALL_INGEST_GRACE_S"
    )


class RayHealth(ApiModel):
    cluster_resources: dict[str, float] = Field(description="ray.cluster_resources()")
    available_resources: dict[str, float] = Field(description="ray.available_resources()")


class IngestionJobHealth(ApiModel):
    job: str = Field(description="job name: candles:COIN:INTERVAL or derivatives:COIN")
    kind: str = Field(description="candles or derivatives")
    coin: str = Field(description="base asset")
    interval: str | None = Field(description="bar interval (candle jobs)")
    last_run_ts: int | None = Field(description="last run start, unix seconds")
    last_success_ts: int | None = Field(description="last successful run end, unix seconds")
    last_error: str | None = Field(description="last error message")
    last_error_ts: int | None = Field(description="when the last error happened, unix seconds")
    consecutive_failures: int = Field(description="failed runs since the last success")
    runs: int = Field(description="runs since the supervisor started")
    written_total: int = Field(description="rows inserted or changed since start")
    written_last_run: int = Field(description="rows inserted or changed by the last run")
    latest_ts: int | None = Field(description="newest stored bar (open time), unix seconds")
    age_s: float | None = Field(description="seconds since the newest stored bar closed")
    allowed_age_s: float | None = Field(description="interval plus grace: the stall threshold")
    stalled_by_s: float = Field(description="seconds beyond the allowance (0 when healthy)")
    stalled: bool = Field(description="stalled_by_s > 0")
    extra: dict[str, Any] = Field(description="job-specific details")


class IngestionHealth(ApiModel):
    running: bool = Field(description="the supervisor runs its loops as the writer")
    role: str | None = Field(description="writer, standby (another holds the lock) or stopped")
    reason: str | None = Field(description="why the supervisor could not be asked, if so")
    data_source: str | None = Field(description="provider the loops read from")
    lock: str | None = Field(description="the cross-process writer lock")
    stalled: list[str] = Field(description="jobs stalled beyond their allowance")
    jobs: list[IngestionJobHealth] = Field(description="every job's stats and stall fields")
    gap_checks: list[dict[str, Any]] = Field(description="recent gap checks and their results")


class ExecutionHealth(ApiModel):
    """Where compute runs: this replica's kernel warm-up and the warm workers."""

    warm_up: dict[str, Any] = Field(
        description="this replica's warm-up: state (not started, waiting, running, done, "
        "failed) and seconds"
    )
    workers: list[dict[str, Any]] | None = Field(
        description="each warm compute worker: node, pid, warm, calls, compiles (null without Ray)"
    )


class HealthResponse(ApiModel):
    status: Literal["ok", "degraded", "down"] = Field(
        description="ok; degraded (not migrated or a stale series); down (no database)"
    )
    version: str = Field(description="squall version")
    time: str = Field(description="server time, ISO-8601 UTC")
    time_unix: int = Field(description="server time, unix seconds")
    database: DatabaseHealth = Field(description="database reachability and revision")
    series: list[SeriesHealth] | None = Field(
        description="latest candle of each configured series (null if the DB is down)"
    )
    execution: ExecutionHealth | None = Field(
        None, description="kernel warm-up and warm compute workers"
    )
    ray: RayHealth | None = Field(description="Ray resources; null outside a Ray runtime")
    ingestion: IngestionHealth | None = Field(
        None, description="the ingestion supervisor; null when disabled or outside Ray"
    )
