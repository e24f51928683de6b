"""One error shape for every failure, and squall's error tree mapped once to HTTP statuses.

Every error body is ``{"error": "<snake_case_code>", "message": "<what to fix>", ...extra}``
plus ``request_id`` (also sent as the ``X-Request-ID`` header) so a report can be traced in
the logs. The mapping, chosen so that bad input is never a 5xx:

=========================  ======  ===========================================================
exception                  status  why
=========================  ======  ===========================================================
ConfigurationError          422    a setting or parameter is invalid; the message names it
DataIntegrityError          422    submitted data breaks a contract (OHLC, alignment, volume)
InsufficientDataError       422    the request needs more stored data; ``details`` say how much
RateLimitedError            429    an exchange asked us to slow down; ``Retry-After`` header
TemporaryExchangeError      503    a provider failed in a retryable way
SQLAlchemy DBAPIError       503    the database is down or not migrated (see ``/ready``)
RequestValidationError      422    a query/body parameter failed validation; ``details`` list
HTTPException               as is  unknown route (404), wrong method (405) ...
anything else               500    a bug: logged with the traceback (observability middleware)
=========================  ======  ===========================================================
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from serve_app.observability import current_request_id
from storage.errors import (
    ConfigurationError,
    DataIntegrityError,
    InsufficientDataError,
    RateLimitedError,
    SquallError,
    TemporaryExchangeError,
)


class ApiError(Exception):
    """An error the API answers with ``status`` and the uniform body; ``extra`` is merged in."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def error_response(
    status_code: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """The uniform JSON error response."""
    body: dict[str, Any] = {"error": code, "message": message, **extra}
    request_id = current_request_id()
    if request_id is not None:
        body["request_id"] = request_id
    return Response(
        orjson.dumps(body, default=str),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


# Most specific first: the first class in an exception's MRO found here decides.
_SQUALL_STATUS: dict[type[SquallError], tuple[int, str]] = {
    ConfigurationError: (422, "configuration_error"),
    DataIntegrityError: (422, "data_integrity"),
    InsufficientDataError: (422, "insufficient_data"),
    RateLimitedError: (429, "rate_limited"),
    TemporaryExchangeError: (503, "temporarily_unavailable"),
}


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)


async def _squall_error(_: Request, exc: Exception) -> Response:
    for cls in type(exc).__mro__:
        if cls in _SQUALL_STATUS:
            status, code = _SQUALL_STATUS[cls]
            break
    else:
        status, code = 500, "internal_error"
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, InsufficientDataError):
        extra["details"] = exc.details
    if isinstance(exc, RateLimitedError):
        retry = 1 if exc.retry_after_s is None else max(1, math.ceil(exc.retry_after_s))
        headers["Retry-After"] = str(retry)
        extra["retry_after_s"] = retry
    return error_response(status, code, str(exc), headers, **extra)


async def _database_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, DBAPIError)
    orig = exc.orig if exc.orig is not None else exc
    first_line = (str(orig).strip().splitlines() or [""])[0][:200]
    if isinstance(exc, IntegrityError):
        return error_response(
            422, "data_integrity", f"the database rejected the data: {first_line}"
        )
    return error_response(
        503,
        "database_unavailable",
        f"the database could not answer ({type(orig).__name__}: {first_line}); "
        "check that it is running and migrated (GET /ready says which)",
    )


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] in ("query", "path", "header", "cookie"):
        return f"{parts[0]} parameter '{'.'.join(parts[1:])}'"
    if parts and parts[0] == "body":
        return "body" + "".join(f"[{p!r}]" for p in loc[1:])
    return ".".join(parts) or "request"


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = []
    for err in exc.errors():
        where = _location(err.get("loc", ()))
        item: dict[str, Any] = {"location": where, "message": str(err.get("msg", ""))}
        if "input" in err and err["input"] is not None:
            item["input"] = repr(err["input"])[:100]
        details.append(item)
    message = "; ".join(f"{d['location']}: {d['message']}" for d in details)
    return error_response(422, "invalid_request", message or "invalid request", details=details)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == 404 and exc.detail == "Not Found":
        message = f"no route {request.method} {request.url.path}; the API is listed at /docs"
        return error_response(404, "not_found", message, headers)
    if status == 405:
        allowed = headers.get("Allow") or headers.get("allow") or "see /docs"
        message = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
        return error_response(405, "method_not_allowed", message, headers)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    code = phrase.lower().replace(" ", "_").replace("-", "_").replace("'", "")
    return error_response(status, code, str(exc.detail), headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the uniform shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(SquallError, _squall_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
