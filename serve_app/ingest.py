"""The API's side of ingestion: start the one supervisor, ask it how it is, stop it.

The supervisor is a detached named Ray actor (``ingestion.supervisor``); every replica and
``squall up`` get-or-create it, so replicas, redeploys and restarts converge on one.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from serve_app.settings import Settings, ingest_config

STATUS_TIMEOUT_S = 2.0


def ray_running() -> bool:
    ray = sys.modules.get("ray")  # never import Ray just to learn that it is not running
    return bool(ray is not None and ray.is_initialized())


def ensure_supervisor(settings: Settings) -> Any:
    """Create the supervisor (and the feature refresher, if enabled) unless they exist."""
    from ingestion.supervisor import get_or_create

    if settings.features_enabled:
        from serve_app import feature_refresher

        series = [(c, i) for c in settings.coins for i in settings.intervals]
        feature_refresher.get_or_create(settings.database_url, series)
    return get_or_create(ingest_config(settings))


def supervisor_status(settings: Settings) -> tuple[dict[str, Any] | None, str | None]:
    """(status, None) from the running supervisor, or (None, why not) — never raises.

    Returns (None, None) when the check does not apply: ingestion disabled, or no Ray here.
    """
    if not settings.ingest_enabled or not ray_running():
        return None, None
    import ray

    from ingestion.supervisor import find

    actor = find()
    if actor is None:
        return None, "ingestion supervisor is not running (start it with `squall up`)"
    try:
        return ray.get(actor.status.remote(), timeout=STATUS_TIMEOUT_S), None
    except Exception as exc:
        return None, (
            f"ingestion supervisor did not answer within {STATUS_TIMEOUT_S:g}s "
            f"({exc.__class__.__name__})"
        )


def supervisor_metrics() -> list[dict[str, Any]] | None:
    """The supervisor's per-job counters (``IngestionSupervisor.metrics``), or None when no
    supervisor answers within ``STATUS_TIMEOUT_S`` (or Ray is not running here)."""
    if not ray_running():
        return None
    import ray

    from ingestion.supervisor import find

    actor = find()
    if actor is None:
        return None
    try:
        jobs: list[dict[str, Any]] = ray.get(actor.metrics.remote(), timeout=STATUS_TIMEOUT_S)
    except Exception:
        return None
    return jobs


def stop_supervisor(timeout_s: float = 60.0) -> dict[str, Any] | None:
    """Let writes in flight finish, stop the loops, release the lock, remove the actor."""
    import ray

    from ingestion.supervisor import find
    from serve_app.feature_refresher import NAMESPACE as FEATURES_NS
    from serve_app.feature_refresher import REFRESHER_NAME

    try:
        refresher = ray.get_actor(REFRESHER_NAME, namespace=FEATURES_NS)
    except ValueError:
        refresher = None
    if refresher is not None:
        try:
            ray.get(refresher.stop.remote(), timeout=timeout_s)
        finally:
            ray.kill(refresher, no_restart=True)
    actor = find()
    if actor is None:
        return None
    try:
        status: dict[str, Any] = ray.get(actor.stop.remote(), timeout=timeout_s)
        return status
    finally:
        ray.kill(actor, no_restart=True)
        # ray.kill is asynchronous: until the name is released, a get-or-create (a restart,
        # the next `squall up`) would be handed the stopped actor instead of a new one.
        deadline = time.monotonic() + 10.0
        while find() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
