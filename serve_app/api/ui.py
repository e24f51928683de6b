"""The research dashboard at ``/ui``: static HTML, CSS and JavaScript shipped inside the
package (``serve_app/ui/static``), served by the same app as the API.

* ``GET /ui``: the page (one document; the views are ``#/data``, ``#/ingestion``, ``#/runs``,
  ``#/compare``, ``#/launch``, ``#/run/{id}``). The strategy catalogue is embedded so the
  launch form knows every strategy, parameter, default and range;
* ``GET /ui/static/{file}``: the scripts and the stylesheet (plain modern JavaScript, no
  build step, no node);
* ``GET /ui/vega.js``: the Vega / Vega-Lite / vega-embed bundle the reports inline, for the
  dashboard's own charts: nothing is ever fetched from another origin (a Content-Security-
  Policy says so to the browser too).

The JavaScript reads only the API's JSON routes, and inserts every value as text, never as
HTML. These routes are left out of ``/openapi.json``: they are pages, not API.
"""

from __future__ import annotations

import functools
import hashlib
import html
import re
from pathlib import Path

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from compute.backtest.strategies import STRATEGIES
from serve_app.api.errors import ApiError
from serve_app.reports.page import javascript_bundle
from serve_app.version import package_version

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "ui" / "static"
MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
NAME = re.compile(r"^[a-z0-9_-]+\.(js|css)$")
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'"
)


@functools.cache
def _asset(name: str) -> tuple[bytes, str]:
    """A static file's bytes and ETag (read once per process: the package does not change)."""
    data = (STATIC / name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


@functools.cache
def _vega() -> tuple[bytes, str]:
    data = javascript_bundle().encode("utf-8")
    return data, '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


def _cached(request: Request, data: bytes, etag: str, media_type: str) -> Response:
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


def _catalogue() -> str:
    """The strategies as JSON safe inside ``<script>``."""
    raw = orjson.dumps([s.describe() for s in STRATEGIES.values()]).decode()
    return raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@router.get("/ui")
@router.get("/ui/")
def index(request: Request) -> Response:
    """The dashboard page, with the API's root (behind a path prefix) and the catalogue."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    root = str(request.scope.get("root_path") or "").rstrip("/")
    page = (
        page.replace("__ROOT__", html.escape(root, quote=True))
        .replace("__VERSION__", html.escape(package_version()))
        .replace("__STRATEGIES__", _catalogue())
    )
    headers = {
        "Content-Security-Policy": CSP,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    return Response(page, media_type="text/html; charset=utf-8", headers=headers)


@router.get("/ui/vega.js")
def vega(request: Request) -> Response:
    data, etag = _vega()
    return _cached(request, data, etag, MEDIA[".js"])


@router.get("/ui/static/{name}")
def static(request: Request, name: str) -> Response:
    if not NAME.match(name) or not (STATIC / name).is_file():
        raise ApiError(404, "not_found", f"no dashboard file {name!r}; the dashboard is at /ui")
    data, etag = _asset(name)
    return _cached(request, data, etag, MEDIA[Path(name).suffix])
