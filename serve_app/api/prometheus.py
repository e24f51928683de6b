"""``/metrics``: Prometheus text exposition of this process (one Serve replica)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from serve_app.observability import metrics_payload

router = APIRouter(tags=["observability"])


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics of this process",
    responses={200: {"content": {"text/plain": {}}, "description": "text exposition format"}},
)
async def metrics() -> Response:
    """Request counts by method, route template and status; latency histograms; process
    stats. Under Ray Serve each replica has its own registry: scrape replicas, or use the Ray
    dashboard's Prometheus endpoint for cluster-wide Serve metrics."""
    body, content_type = metrics_payload()
    return Response(body, media_type=content_type)
