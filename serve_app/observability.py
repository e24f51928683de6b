"""Structured logs, request ids and Prometheus metrics for the HTTP API.

- Logs: one JSON object per line (``ts, level, logger, message, request_id`` and, for the
  access log, ``method, path, status, duration_ms``), so they can be shipped and queried.
- Request ids: taken from ``X-Request-ID`` when it is a sane token, else a fresh uuid4 hex;
  echoed in the response header, kept in a contextvar that the log formatter and the error
  bodies read.
- Metrics: a request counter by method, route template and status, and a latency histogram,
  in the process-wide ``prometheus_client`` registry (one per Serve replica).

The middleware is pure ASGI (no ``BaseHTTPMiddleware``, which costs a task and a stream per
request) because the candles endpoint is benchmarked.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
ACCESS_LOGGER = "squall.access"
_request_id: ContextVar[str | None] = ContextVar("squall_request_id", default=None)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_QUIET_PATHS = frozenset({"/live", "/metrics"})  # probes and scrapes log at DEBUG
_ACCESS_FIELDS = ("method", "path", "status", "duration_ms")

REQUESTS = Counter(
    "squall_http_requests_total",
    "HTTP requests answered, by method, route template and status code",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "squall_http_request_duration_seconds",
    "Time from receiving a request to sending its last byte, by method and route template",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    return _request_id.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the request id comes from the record or the contextvar."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "ts": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or _request_id.get(),
        }
        for field in _ACCESS_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class _SquallHandler(logging.StreamHandler):
    """Marker class so :func:`configure_logging` can replace its own handler, and only it."""


def configure_logging(level: str | int = "INFO", stream: IO[str] | None = None) -> None:
    """Send every log record to ``stream`` (stderr) as JSON lines; idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _SquallHandler):
            root.removeHandler(handler)
    handler = _SquallHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)


def metrics_payload() -> tuple[bytes, str]:
    """The Prometheus text exposition of this process's registry and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            return text if _SAFE_ID.match(text) else None
    return None


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


_INTERNAL_ERROR_BODY = (
    "an unexpected error occurred on the server; quote the request_id when reporting it"
)


class RequestContextMiddleware:
    """Request id, access log line and metrics for every HTTP request (pure ASGI)."""

    def __init__(self, app: ASGIApp, *, echo_request_id: bool = True) -> None:
        self.app = app
        # Ray Serve (its proxy, or the replica under direct ingress) already puts the id in
        # the request headers and echoes it on the response: echoing again would send the
        # header twice, so under Serve this middleware only reads it.
        self.echo_request_id = echo_request_id
        self.log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        token = _request_id.set(request_id)
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                if self.echo_request_id:
                    message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            self.log.exception("unhandled error", extra={"request_id": request_id})
            if not started:
                body = {
                    "error": "internal_error",
                    "message": _INTERNAL_ERROR_BODY,
                    "request_id": request_id,
                }
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": orjson.dumps(body)})
            raise
        finally:
            elapsed = time.perf_counter() - start
            method = scope.get("method", "")
            route = _route_template(scope)
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(elapsed)
            path = scope.get("path", "")
            level = logging.DEBUG if path in _QUIET_PATHS else logging.INFO
            if self.log.isEnabledFor(level):
                self.log.log(
                    level,
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "path": path,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )
            _request_id.reset(token)
