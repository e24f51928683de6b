"""The HTTP API (FastAPI): one router per area, built by :func:`create_app`."""

from serve_app.api.app import create_app

__all__ = ["create_app"]
