"""What keeps one replica alive and its costly routes to whom they belong: credentials, an
admission limit on costly work, and a cap on request bodies.

- **Auth.** With ``SQUALL_API_TOKEN`` or ``SQUALL_API_KEYS_FILE`` set, every ``POST`` and
  ``DELETE`` (each one writes the registry or computes) needs ``Authorization: Bearer <token>``
  or ``X-API-Key: <token>``; reads too with ``SQUALL_AUTH_READS``, except the probes, the
  scrape, the API document and the dashboard's page files (the page asks for the token).
  401 ``unauthorized`` without credentials (with ``WWW-Authenticate``), 403 ``forbidden``
  with a wrong one. Every accepted token is compared with :func:`hmac.compare_digest`, all of
  them every time, and no token is ever put in a log line or an answer.
- **Admission.** A costly route admits ``SQUALL_MAX_CONCURRENT_JOBS`` requests at once per
  replica and lets ``SQUALL_JOB_QUEUE_SIZE`` more wait up to ``SQUALL_JOB_QUEUE_TIMEOUT_S``;
  past either, 503 ``busy`` with ``Retry-After`` at once: the work a replica holds is bounded,
  so is its memory.
- **Body cap.** A body over ``SQUALL_MAX_BODY_BYTES`` is 413 ``body_too_large`` before any
  of it is parsed: by its ``Content-Length``, or counted as it streams in without one.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.api.deps import app_settings
from serve_app.api.errors import ApiError, error_response
from serve_app.api.schemas.common import ErrorBody
from serve_app.settings import Settings
from storage.errors import BusyError

# Reads that stay open even with SQUALL_AUTH_READS: probes, the scrape, the API document and
# the dashboard's files (its page asks for the token and sends it on every call).
OPEN_PATHS = frozenset({"/live", "/ready", "/metrics", "/docs", "/openapi.json", "/ui", "/ui/"})
OPEN_PREFIXES = ("/ui/static/", "/ui/vega.js", "/docs/")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

APP_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorBody,
        "description": "`unauthorized`: auth is on (SQUALL_API_TOKEN or a keys file) and the "
        "request has no `Authorization: Bearer` or `X-API-Key` credentials",
    },
    403: {"model": ErrorBody, "description": "`forbidden`: the credentials are not accepted"},
    422: {
        "model": ErrorBody,
        "description": "`invalid_request` (a parameter or the body failed validation: "
        "`details` lists each problem) or the route's own checks",
    },
}
COSTLY_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "`body_too_large`: over SQUALL_MAX_BODY_BYTES"},
    503: {
        "model": ErrorBody,
        "description": "`busy` (this replica is at SQUALL_MAX_CONCURRENT_JOBS with a full "
        "queue, or the wait passed SQUALL_JOB_QUEUE_TIMEOUT_S), `too_many_runs` "
        "(SQUALL_MAX_ACTIVE_RUNS asynchronous runs queued or running): retry after "
        "`Retry-After` seconds; or the database is down or not migrated",
    },
}

_bearer = HTTPBearer(
    auto_error=False,
    description="the token of SQUALL_API_TOKEN or of a line of SQUALL_API_KEYS_FILE; needed "
    "on POST and DELETE when one is set (and on reads with SQUALL_AUTH_READS)",
)
_api_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="the same token, as an API key header"
)


# ------------------------------------------------------------------------------- tokens
class _Keys:
    """The accepted tokens: SQUALL_API_TOKEN and the lines of the keys file, the file read
    again whenever its modification time or size changes (keys rotate without a restart)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamp: tuple[str, float, int] | None = None
        self._file_keys: tuple[bytes, ...] = ()

    def _from_file(self, path: str) -> tuple[bytes, ...]:
        try:
            st = os.stat(path)
        except OSError:
            return ()  # a missing file accepts nothing from it (and auth stays on: see active)
        stamp = (path, st.st_mtime, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                with open(path, encoding="utf-8") as handle:
                    lines = (line.strip() for line in handle)
                    keys = tuple(k.encode() for k in lines if k and not k.startswith("#"))
                self._file_keys, self._stamp = keys, stamp
            return self._file_keys

    def accepted(self, settings: Settings) -> tuple[bytes, ...]:
        keys: list[bytes] = []
        if settings.api_token is not None and settings.api_token.get_secret_value():
            keys.append(settings.api_token.get_secret_value().encode())
        if settings.api_keys_file:
            keys.extend(self._from_file(settings.api_keys_file))
        return tuple(keys)


KEYS = _Keys()


def auth_enabled(settings: Settings) -> bool:
    """Whether credentials are asked for: a token or a keys file is configured (a keys file
    that is missing or empty accepts nothing, it does not turn auth off)."""
    token = settings.api_token is not None and bool(settings.api_token.get_secret_value())
    return token or bool(settings.api_keys_file)


def token_accepted(presented: str, settings: Settings) -> bool:
    """Constant-time comparison against every accepted token (no early exit)."""
    given = presented.encode()
    ok = False
    for key in KEYS.accepted(settings):
        ok |= hmac.compare_digest(given, key)
    return ok


def _needs_credentials(request: Request, settings: Settings) -> bool:
    if request.method not in READ_METHODS:
        return True
    path = request.url.path
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return False
    return settings.auth_reads


async def require_credentials(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> None:
    """The app-wide guard (see the module docstring)."""
    settings = app_settings(request.app)
    if not auth_enabled(settings) or not _needs_credentials(request, settings):
        return
    presented = bearer.credentials if bearer is not None else api_key
    if not presented:
        raise ApiError(
            401,
            "unauthorized",
            f"{request.method} {request.url.path} needs credentials: send "
            "`Authorization: Bearer <token>` or `X-API-Key: <token>` (the token of "
            "SQUALL_API_TOKEN or of the keys file)",
            headers={"WWW-Authenticate": 'Bearer realm="squall"'},
        )
    if not token_accepted(presented, settings):
        raise ApiError(403, "forbidden", "the token sent is not accepted by this API")


# ---------------------------------------------------------------------------- admission
class Admission:
    """Slots for costly work in one replica, and a bounded, timed wait for one.

    Loop-agnostic (a lock and counters, the wait a short sleep loop), so one app serves from
    any event loop (uvicorn, Ray Serve, a test client)."""

    POLL_S = 0.02

    def __init__(self, slots: int, queue: int, timeout_s: float) -> None:
        self.slots, self.queue, self.timeout_s = slots, queue, timeout_s
        self._lock = threading.Lock()
        self.active = 0
        self.waiting = 0
        self.peak = 0  # the most admitted at once since start (tests read it)

    def _try(self) -> bool:
        with self._lock:
            if self.active < self.slots:
                self.active += 1
                self.peak = max(self.peak, self.active)
                return True
            return False

    def _busy(self, why: str) -> BusyError:
        return BusyError(
            f"this API replica is busy: {why}; retry after the Retry-After seconds "
            "(SQUALL_MAX_CONCURRENT_JOBS, SQUALL_JOB_QUEUE_SIZE set the capacity)",
            retry_after_s=max(1.0, min(self.timeout_s, 5.0)),
            active_jobs=self.active,
            queued_jobs=self.waiting,
        )

    async def acquire(self) -> None:
        if self._try():
            return
        with self._lock:
            if self.waiting >= self.queue:
                raise self._busy(f"{self.active} costly requests running, {self.waiting} waiting")
            self.waiting += 1
        try:
            deadline = time.monotonic() + self.timeout_s
            while not self._try():
                if time.monotonic() >= deadline:
                    raise self._busy(f"no slot freed within {self.timeout_s:g} s")
                await asyncio.sleep(self.POLL_S)
        finally:
            with self._lock:
                self.waiting -= 1

    def release(self) -> None:
        with self._lock:
            self.active -= 1


def admission(app: FastAPI) -> Admission:
    """The app's admission control, made from its settings on first use."""
    current: Admission | None = getattr(app.state, "admission", None)
    if current is None:
        s = app_settings(app)
        current = Admission(s.max_concurrent_jobs, s.job_queue_size, s.job_queue_timeout_s)
        app.state.admission = current
    return current


async def _admit(request: Request) -> AsyncIterator[None]:
    gate = admission(request.app)
    await gate.acquire()
    try:
        yield
    finally:
        gate.release()


Costly = Depends(_admit)


# ----------------------------------------------------------------------------- body cap
class BodyLimitMiddleware:
    """413 ``body_too_large`` for a body over ``max_bytes``, before the app reads any of it
    (pure ASGI). A declared ``Content-Length`` is checked at once; a body without one
    (chunked) is read here up to the cap and handed on only when it fits."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, seen: str) -> Any:
        return error_response(
            413,
            "body_too_large",
            f"the request body is {seen}; the largest accepted is {self.max_bytes} bytes "
            "(SQUALL_MAX_BODY_BYTES)",
            max_body_bytes=self.max_bytes,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: str | None = None
        chunked = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                length = value.decode("latin-1")
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if length is not None and not chunked:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > self.max_bytes:
                await self._too_large(f"{declared} bytes")(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if scope.get("method", "GET") in READ_METHODS and not chunked:
            await self.app(scope, receive, send)
            return
        # No length declared: read the body here, at most the cap, then replay it.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(f"over {self.max_bytes} bytes")(scope, receive, send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
