"""The Ray Serve deployment of the HTTP API.

``serve run serve_app.deployment:app`` / ``serve deploy serve_config.yaml`` use ``app``
(settings from the replica's ``SQUALL_*`` environment, set by ``runtime_env`` in the config);
``serve_app.deployment:build_app`` accepts settings overrides as application args;
``squall up`` binds the deployment with its own settings (see ``serve_app.runner``).

The FastAPI app is built late, inside each replica (``__serve_build_asgi_app__``), and it
creates its database engine on the first request: no engine, connection or settings object
from the driver is ever pickled. Replica count, concurrency and HTTP options live in
``serve_config.yaml``, not here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application, Deployment

from serve_app.api import create_app
from serve_app.ingest import ensure_supervisor
from serve_app.settings import Settings, get_settings


class SquallAPIReplica:
    """One API replica: builds its own FastAPI app and (lazily) its own engine."""

    def __init__(self, settings_overrides: dict[str, Any] | None = None) -> None:
        # Settings are rebuilt here, in the replica's process, from plain values.
        self.settings = Settings(**settings_overrides) if settings_overrides else get_settings()
        if self.settings.ingest_enabled:
            # get-or-create: every replica, redeploy and restart finds the same supervisor
            ensure_supervisor(self.settings)

    def __serve_build_asgi_app__(self) -> FastAPI:
        # Serve echoes X-Request-ID itself (and hands us the same id in the request).
        return create_app(self.settings, echo_request_id=False)


# Functional form of ``@serve.deployment @serve.ingress()`` so the result is typed Deployment.
SquallAPI: Deployment = serve.deployment(name="SquallAPI")(serve.ingress()(SquallAPIReplica))


def build_app(args: dict[str, Any]) -> Application:
    """Application builder: ``serve run serve_app.deployment:build_app database_url=...``;
    each arg overrides the matching ``Settings`` field (``SQUALL_*`` env fills the rest)."""
    unknown = sorted(set(args) - set(Settings.model_fields))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; valid: {sorted(Settings.model_fields)}")
    return SquallAPI.bind(dict(args) or None)


app = SquallAPI.bind()
