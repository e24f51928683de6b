"""The HTTP API (FastAPI): one router per area, built by :func:`create_app`.

``create_app`` is imported on first use, so that importing one router or schema module (the
CLI renders its answers with them) does not build every router and import JAX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serve_app.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from serve_app.api.app import create_app

        return create_app
    raise AttributeError(f"module 'serve_app.api' has no attribute {name!r}")
