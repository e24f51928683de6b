"""squall's error tree. Each kind is mapped once to an HTTP status at the API edge.

It lives in ``storage`` because storage is the one package every other squall package
(except the pure ``compute`` kernels) may import.
"""

from __future__ import annotations


class SquallError(Exception):
    """Base of every error squall raises on purpose."""


class ConfigurationError(SquallError):
    """A setting or request parameter is invalid; the message says what to change."""


class DataIntegrityError(SquallError):
    """Data violates a contract (OHLC consistency, alignment, volume sign ...)."""


class InsufficientDataError(SquallError):
    """Not enough stored data to answer; carries what was needed and what was found."""

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.details = details


class TemporaryExchangeError(SquallError):
    """An exchange or provider failed in a way worth retrying later."""


class RateLimitedError(TemporaryExchangeError):
    """The exchange asked us to slow down; ``retry_after_s`` says for how long."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
