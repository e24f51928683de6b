"""One error shape for every failure, and squall's error tree mapped once to HTTP statuses.

Services raise the domain errors of ``storage.errors`` (with a ``code`` and the body's extra
fields); :class:`ApiError` is only for what exists at the HTTP edge alone (a query string on a
JSON route).

Every error body is ``{"error": "<snake_case_code>", "message": "<what to fix>", ...extra}``
plus ``request_id`` (also sent as the ``X-Request-ID`` header) so a report can be traced in
the logs. The mapping, chosen so that bad input is never a 5xx:

=========================  ======  ===========================================================
exception                  status  why
=========================  ======  ===========================================================
NotFoundError               404    the coin or run named does not exist; the body lists what does
ConflictError               409    valid, but not in this state (cancelling a finished run)
SourceConflictError         409    rows of another source for a series (one source a series)
ConfigurationError          422    a setting or parameter is invalid; the message names it
LimitExceededError          422    a cap (bars, paths, grid ...) is exceeded; ``cap`` says which
DataIntegrityError          422    submitted data breaks a contract (OHLC, alignment, volume)
InsufficientDataError       422    the request needs more stored data; the body says how much
compute SpecError           422    a kernel rejected a parameter (services usually say first)
compute InputDataError      422    a kernel rejected the data
BusyError                   503    at capacity for this kind of work; ``Retry-After`` header
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

from compute.core.errors import ComputeError, SpecError
from serve_app.observability import current_request_id
from storage.errors import (
    BusyError,
    ConfigurationError,
    ConflictError,
    DataIntegrityError,
    InsufficientDataError,
    LimitExceededError,
    NotFoundError,
    RateLimitedError,
    SourceConflictError,
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
_SQUALL_STATUS: dict[type[SquallError], int] = {
    NotFoundError: 404,
    ConflictError: 409,
    SourceConflictError: 409,
    LimitExceededError: 422,
    ConfigurationError: 422,
    DataIntegrityError: 422,
    InsufficientDataError: 422,
    BusyError: 503,
    RateLimitedError: 429,
    TemporaryExchangeError: 503,
}


def status_of(exc: SquallError) -> int:
    """The HTTP status of a squall error (500 for a kind not in the table: a bug)."""
    for cls in type(exc).__mro__:
        if cls in _SQUALL_STATUS:
            return _SQUALL_STATUS[cls]
    return 500


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)


async def _squall_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, SquallError)
    status = status_of(exc)
    code = exc.code if status != 500 else "internal_error"
    extra: dict[str, Any] = dict(exc.extra)
    headers: dict[str, str] = {}
    if isinstance(exc, InsufficientDataError) and exc.details is not None:
        extra["details"] = exc.details
    if isinstance(exc, RateLimitedError | BusyError):
        retry = 1 if exc.retry_after_s is None else max(1, math.ceil(exc.retry_after_s))
        headers["Retry-After"] = str(retry)
        extra["retry_after_s"] = retry
    return error_response(status, code, exc.message or str(exc), headers, **extra)


async def _compute_error(_: Request, exc: Exception) -> Response:
    """A kernel's own check that a service did not translate: still the caller's input."""
    assert isinstance(exc, ComputeError)
    if isinstance(exc, SpecError):
        return error_response(422, "invalid_parameter", f"{exc}; fix that parameter")
    return error_response(422, "data_integrity", f"the data cannot be used: {exc}")


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
    if status == 400 and exc.detail == "There was an error parsing the body":
        # FastAPI's answer to a body that is not text or JSON at all: invalid input, like
        # any other body that fails validation
        return error_response(
            422,
            "invalid_request",
            "the request body could not be read as JSON (UTF-8); send a JSON object with "
            "Content-Type: application/json (the schema is at /docs)",
            headers,
        )
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
    app.add_exception_handler(ComputeError, _compute_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
