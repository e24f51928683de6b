"""squall's error tree. Each kind is mapped once to an HTTP status at the API edge
(``serve_app/api/errors.py``); the CLI and Ray jobs print the same messages.

It lives in ``storage`` because storage is the one package every other squall package
(except the pure ``compute`` kernels) may import.

Every error carries a ``message`` that says what to fix, a snake_case ``code`` that names the
case (``unknown_coin``, ``too_many_bars`` ...; the class default when none is given) and
``extra``: the fields an API error body carries beside ``error`` and ``message`` (the
parameter at fault, what is valid, the cap that was exceeded ...).
"""

from __future__ import annotations

from typing import Any, ClassVar


class SquallError(Exception):
    """Base of every error squall raises on purpose."""

    default_code: ClassVar[str] = "error"

    def __init__(self, message: str = "", *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.extra = extra


class ConfigurationError(SquallError):
    """A setting or request parameter is invalid; the message says what to change."""

    default_code = "configuration_error"


class LimitExceededError(ConfigurationError):
    """A request is above a cap (bars, paths, grid size ...); ``extra['cap']`` says which."""

    default_code = "limit_exceeded"


class NotFoundError(SquallError):
    """What the request names (a coin, a run) does not exist; the message lists what does."""

    default_code = "not_found"


class ConflictError(SquallError):
    """The request is valid but not in the current state (e.g. cancelling a finished run)."""

    default_code = "conflict"


class DataIntegrityError(SquallError):
    """Data violates a contract (OHLC consistency, alignment, volume sign ...)."""

    default_code = "data_integrity"


class InsufficientDataError(SquallError):
    """Not enough stored data to answer. ``details`` (a nested object in the API body) and
    ``extra`` (top-level fields) say what was needed and what was found."""

    default_code = "insufficient_data"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message, code=code, **extra)
        self.details = details


class BusyError(SquallError):
    """squall is at capacity for this kind of work; retry after ``retry_after_s``."""

    default_code = "busy"

    def __init__(self, message: str, retry_after_s: float = 1.0, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after_s = retry_after_s


class TemporaryExchangeError(SquallError):
    """An exchange or provider failed in a way worth retrying later."""

    default_code = "temporarily_unavailable"


class RateLimitedError(TemporaryExchangeError):
    """The exchange asked us to slow down; ``retry_after_s`` says for how long."""

    default_code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SourceConflictError(DataIntegrityError):
    """Rows of one source were about to go into a series another source owns.

    A (coin, interval) series holds one source (see ``storage.series``). The message names the
    series, the source that owns it, the source that was refused, and the remedies; nothing of
    the refused batch is written.
    """

    default_code = "source_conflict"

    def __init__(
        self,
        coin: str,
        interval: str,
        owner: str,
        attempted: str,
        *,
        rows: int | None = None,
        stored: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.coin, self.interval, self.owner, self.attempted = coin, interval, owner, attempted
        what = "rows" if rows is None else f"{rows} row{'' if rows == 1 else 's'}"
        given = f" ({detail})" if detail and detail != attempted else ""
        held = f" ({stored})" if stored else ""
        syn = f"SYN-{coin.removeprefix('SYN-')}"
        super().__init__(
            f"{coin} {interval} belongs to source {owner!r}{held}; refusing to write {what} "
            f"of source {attempted!r}{given} into it: a series holds one source, and nothing "
            "was written. Remedies: use another database (SQUALL_DATABASE_URL); or keep the "
            f"two apart under another coin name, e.g. {syn} for the synthetic market "
            "(SQUALL_COINS) or `squall import --coin NAME`; or pass --replace-source to "
            f"`squall import` / `squall backfill`, which rewrites the overlapping time range "
            f"with the {attempted!r} rows, makes {attempted!r} the series' source and reports "
            "how many rows it changed.",
            series=f"{coin} {interval}",
            owner_source=owner,
            attempted_source=attempted,
        )
