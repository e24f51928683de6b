"""The provider interface every source of market data implements.

Providers return *our* rows (canonical frames, see ``storage.columns``), never wire payloads;
they return only **closed** candles; they raise ``storage.errors.TemporaryExchangeError`` (or
``RateLimitedError``) for failures worth retrying and ``ConfigurationError`` for requests that
can never succeed (unknown symbol, unsupported interval). Methods are synchronous; the async
actor loops call them in a worker thread.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import pandas as pd

#: Columns of a funding-rate frame: settlement time (unix s), rate per period, mark price.
FUNDING_COLUMNS: tuple[str, ...] = ("coin", "ts", "funding_rate", "mark_price", "source")
#: Columns of an open-interest frame: time (unix s), OI in base units and in quote notional.
OPEN_INTEREST_COLUMNS: tuple[str, ...] = (
    "coin",
    "ts",
    "open_interest",
    "open_interest_quote",
    "source",
)


@runtime_checkable
class Provider(Protocol):
    """A source of candles, snapshots and derivatives data."""

    name: str

    @property
    def source(self) -> str:
        """The ``source`` of the candle rows it returns (``synthetic``, ``file``,
        ``binance:spot`` ...): a series belongs to one source (``storage.series``), and
        ingestion checks it before it fetches anything."""
        ...

    def fetch_candles(
        self, coin: str, interval: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        """Closed candles with ``start <= ts <= end`` (bar open times, unix seconds).

        Canonical candle frame (``storage.columns.CANDLE_COLUMNS``), ascending by ``ts``, no
        duplicates. A bar whose close time ``ts + interval`` is after ``now`` (default: the
        wall clock) is never returned. An empty frame means the source has no data there.
        """
        ...

    def fetch_snapshot(self, coin: str, *, now: int | None = None) -> dict[str, Any]:
        """The current market view as a ``market_snapshots`` row (see ``storage.snapshots``)."""
        ...

    def fetch_funding(
        self, coin: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        """Funding settlements with ``start <= ts <= end`` (``FUNDING_COLUMNS``)."""
        ...

    def fetch_open_interest(
        self, coin: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        """Open-interest observations with ``start <= ts <= end`` (``OPEN_INTEREST_COLUMNS``)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
