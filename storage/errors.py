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


class SourceConflictError(DataIntegrityError):
    """Rows of one source were about to go into a series another source owns.

    A (coin, interval) series holds one source (see ``storage.series``). The message names the
    series, the source that owns it, the source that was refused, and the remedies; nothing of
    the refused batch is written.
    """

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
            "how many rows it changed."
        )
