"""``/metrics``: Prometheus text exposition of this replica's HTTP and process series and of the
platform's series (ingestion counters, run registry), which every replica serves alike."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serve_app.api.deps import SettingsDep, app_sessions
from serve_app.observability import metrics_payload
from serve_app.platform_metrics import platform_payload

router = APIRouter(tags=["observability"])


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics: this replica's HTTP series and the platform's",
    responses={200: {"content": {"text/plain": {}}, "description": "text exposition format"}},
)
def metrics(request: Request, settings: SettingsDep) -> Response:
    """Request counts by method, route template and status, latency histograms and process
    stats of the replica that answers; and, the same from every replica, the ingestion
    counters (`jobs_ok_total`, `jobs_failed_total`, `candles_inserted_total`, stalls) read
    from the supervisor and the run counts and durations read from the registry. See
    docs/operations.md for every series and its labels."""
    body, content_type = metrics_payload()
    body += platform_payload(settings, app_sessions(request.app))
    return Response(body, media_type=content_type)
