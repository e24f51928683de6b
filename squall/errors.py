"""The errors the client raises: every non-2xx answer becomes a :class:`SquallAPIError`
subclass carrying the API's ``error`` code and ``message`` (what to fix) and the whole body.

===========================  ======  ==============================================
class                        status  when
===========================  ======  ==============================================
:class:`BadRequestError`      400    parameters sent the wrong way (query on a POST)
:class:`AuthError`            401    credentials needed (SQUALL_API_TOKEN), or 403 not accepted
:class:`NotFoundError`        404    the coin, run or chart named does not exist
:class:`ConflictError`        409    valid but not now (cancel a finished run ...)
:class:`InvalidRequestError`  422    a parameter, a cap, or not enough stored data
:class:`RateLimitedError`     429    slow down (``retry_after_s``)
:class:`UnavailableError`     503    busy, or the database is down (``retry_after_s``)
:class:`ServerError`          5xx    a bug on the server (the body has the request id)
===========================  ======  ==============================================

:class:`SquallConnectionError` means the server could not be reached at all, and
:class:`RunFailedError` that a run the client waited for failed or was cancelled.
"""

from __future__ import annotations

from typing import Any


class SquallError(Exception):
    """Base of every error of the client."""


class SquallAPIError(SquallError):
    """The API answered with an error status."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body

    @property
    def request_id(self) -> str | None:
        """The id the server logged the request under (give it with a bug report)."""
        value = self.body.get("request_id")
        return None if value is None else str(value)

    @property
    def retry_after_s(self) -> float | None:
        value = self.body.get("retry_after_s")
        return None if value is None else float(value)


class BadRequestError(SquallAPIError):
    """400: the request was sent the wrong way."""


class AuthError(SquallAPIError):
    """401 (no credentials: set SQUALL_API_TOKEN or pass ``token``) or 403 (not accepted)."""


class NotFoundError(SquallAPIError):
    """404: what the request names does not exist; the body lists what does."""


class ConflictError(SquallAPIError):
    """409: the request is valid but not in the current state."""


class InvalidRequestError(SquallAPIError):
    """422: a parameter is invalid, a cap is exceeded, or stored data is insufficient."""


class RateLimitedError(SquallAPIError):
    """429: an exchange asked squall to slow down."""


class UnavailableError(SquallAPIError):
    """503: squall is busy or its database is down; retry after ``retry_after_s``."""


class ServerError(SquallAPIError):
    """5xx other than 503: a bug on the server."""


_BY_STATUS: dict[int, type[SquallAPIError]] = {
    400: BadRequestError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidRequestError,
    429: RateLimitedError,
    503: UnavailableError,
}


def error_for(status: int, body: Any, fallback_text: str = "") -> SquallAPIError:
    """The exception of an error answer (``body`` is its decoded JSON, if it was JSON)."""
    data = body if isinstance(body, dict) else {}
    code = str(data.get("error") or f"http_{status}")
    message = str(data.get("message") or fallback_text.strip()[:500] or "no message")
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else SquallAPIError)
    return cls(status, code, message, data)


class SquallConnectionError(SquallError, ConnectionError):
    """The server could not be reached (not started, wrong address, or it went away)."""


class RunFailedError(SquallError):
    """A run the client waited for ended ``failed`` or ``cancelled``; ``run`` is its state."""

    def __init__(self, run: dict[str, Any]) -> None:
        self.run = run
        self.run_id = str(run.get("run_id"))
        self.status = str(run.get("status"))
        self.error = run.get("error")
        super().__init__(f"run {self.run_id} {self.status}: {self.error or 'no reason given'}")


class WaitTimeoutError(SquallError, TimeoutError):
    """A run was still queued or running when the client stopped waiting."""
