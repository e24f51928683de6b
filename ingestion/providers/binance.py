"""Binance public market data (spot and USDT-M futures) behind the ``Provider`` interface.

Two layers, as in nautilus_trader's Binance adapter:

* ``query_*`` methods make **one** request and return the decoded wire objects of
  ``binance_wire`` (what the venue sent, prices already parsed from strings once);
* ``fetch_*`` methods implement ``ingestion.providers.base.Provider``: they paginate, drop
  what is not final, and return *our* rows (canonical candle frames, funding and
  open-interest frames, a ``market_snapshots`` row).

Transport concerns (rate limit, ``Retry-After``, retries with jittered backoff, the error
tree) live in ``ingestion.providers.http.RetryingClient``.

Kline pagination is ``ingestion.providers.paging.walk_candle_pages`` (one bar of overlap
between full pages, deduplicated by open time; short and empty pages move the cursor on, so
an outage never ends the walk early and the walk always terminates).

Only closed bars are returned: bars whose ``closeTime`` is at or after ``now``, or differs
from ``openTime + interval - 1 ms`` (a partial bar), are dropped.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np
import pandas as pd

from ingestion.providers import binance_wire as wire
from ingestion.providers.base import FUNDING_COLUMNS, OPEN_INTEREST_COLUMNS
from ingestion.providers.http import RetryingClient
from ingestion.providers.paging import walk_candle_pages
from storage.columns import CANDLE_COLUMNS
from storage.errors import ConfigurationError
from storage.intervals import INTERVAL_SECONDS
from storage.validation import prepare_candles

DEFAULT_SPOT_BASE_URL = "https://api.binance.com"
DEFAULT_FUTURES_BASE_URL = "https://fapi.binance.com"

#: Largest ``limit`` each endpoint accepts.
SPOT_KLINES_LIMIT = 1000
FUTURES_KLINES_LIMIT = 1500
FUNDING_LIMIT = 1000
OPEN_INTEREST_HIST_LIMIT = 500
#: ``period`` values of ``/futures/data/openInterestHist`` and their length in ms.
OPEN_INTEREST_PERIODS_MS: dict[str, int] = {
    name: INTERVAL_SECONDS[name] * 1000
    for name in ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
}
#: Binance serves open-interest history for the latest 30 days only.
OPEN_INTEREST_HISTORY_MS = 30 * 86_400_000

Market = Literal["spot", "um"]


class BinanceProvider:
    """Candles, snapshots, funding and open interest from Binance's public REST API.

    ``spot_base_url`` and ``futures_base_url`` come from the app's settings (the real hosts
    are ``DEFAULT_SPOT_BASE_URL`` and ``DEFAULT_FUTURES_BASE_URL``). ``market`` picks where
    candles and tickers come from: ``spot`` or USDT-M perpetual futures (``um``); funding,
    mark price and open interest always come from the futures API. ``clock`` (unix seconds)
    says what "now" is, ``sleep`` and ``rng`` are injectable so tests need not wait.
    """

    name = "binance"

    def __init__(
        self,
        spot_base_url: str = DEFAULT_SPOT_BASE_URL,
        futures_base_url: str = DEFAULT_FUTURES_BASE_URL,
        quote_asset: str = "USDT",
        market: Market = "spot",
        timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        requests_per_second: float = 10.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        *,
        klines_page_limit: int | None = None,
        open_interest_period: str = "1h",
        rng: random.Random | None = None,
    ) -> None:
        if market not in ("spot", "um"):
            raise ConfigurationError(f"market must be 'spot' or 'um', got {market!r}")
        if not quote_asset.isalnum():
            raise ConfigurationError(f"quote_asset must be alphanumeric, got {quote_asset!r}")
        max_limit = SPOT_KLINES_LIMIT if market == "spot" else FUTURES_KLINES_LIMIT
        limit = max_limit if klines_page_limit is None else klines_page_limit
        if not 2 <= limit <= max_limit:
            raise ConfigurationError(f"klines_page_limit must be in [2, {max_limit}], got {limit}")
        if open_interest_period not in OPEN_INTEREST_PERIODS_MS:
            valid = ", ".join(OPEN_INTEREST_PERIODS_MS)
            raise ConfigurationError(
                f"open_interest_period {open_interest_period!r} is not one of {valid}"
            )
        self.spot_base_url = spot_base_url.rstrip("/")
        self.futures_base_url = futures_base_url.rstrip("/")
        self.quote_asset = quote_asset.upper()
        self.market: Market = market
        self.klines_page_limit = limit
        self.open_interest_period = open_interest_period
        self._clock = clock
        self._http = RetryingClient(
            name="binance",
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            requests_per_second=requests_per_second,
            error_message=wire.error_message,
            sleep=sleep,
            rng=rng,
        )

    # ------------------------------------------------------------------ naming and urls

    def symbol(self, coin: str) -> str:
        """The venue symbol of ``coin``: base + quote asset (``BTC`` -> ``BTCUSDT``)."""
        if not coin or not coin.isalnum():
            raise ConfigurationError(f"coin must be a non-empty alphanumeric name, got {coin!r}")
        return coin.upper() + self.quote_asset

    def _market_url(self, market: Market | None, spot_path: str, futures_path: str) -> str:
        if (market or self.market) == "spot":
            return self.spot_base_url + spot_path
        return self.futures_base_url + futures_path

    @property
    def source(self) -> str:
        """The ``source`` of the candle rows: the venue and market, ``binance:spot|um``."""
        return f"binance:{self.market}"

    def _now_ms(self, now: int | None) -> int:
        return int((self._clock() if now is None else now) * 1000)

    # ------------------------------------------------------------------ query_*: one request

    def query_klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
        market: Market | None = None,
    ) -> list[wire.BinanceKline]:
        """One page of ``GET /api/v3/klines`` (spot) or ``/fapi/v1/klines`` (USDT-M)."""
        params: dict[str, str | int] = {"symbol": symbol, "interval": interval}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        if limit is not None:
            params["limit"] = limit
        url = self._market_url(market, "/api/v3/klines", "/fapi/v1/klines")
        return wire.parse_klines(self._http.get_json(url, params))

    def query_funding_rates(
        self,
        symbol: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = FUNDING_LIMIT,
    ) -> list[wire.BinanceFundingRate]:
        """One page of ``GET /fapi/v1/fundingRate``."""
        params: dict[str, str | int] = {"symbol": symbol, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        url = self.futures_base_url + "/fapi/v1/fundingRate"
        return wire.parse_funding_rates(self._http.get_json(url, params))

    def query_open_interest(self, symbol: str) -> wire.BinanceOpenInterest:
        """``GET /fapi/v1/openInterest``: open interest now."""
        url = self.futures_base_url + "/fapi/v1/openInterest"
        return wire.parse_open_interest(self._http.get_json(url, {"symbol": symbol}))

    def query_open_interest_hist(
        self,
        symbol: str,
        period: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = OPEN_INTEREST_HIST_LIMIT,
    ) -> list[wire.BinanceOpenInterestHist]:
        """One page of ``GET /futures/data/openInterestHist``."""
        params: dict[str, str | int] = {"symbol": symbol, "period": period, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        url = self.futures_base_url + "/futures/data/openInterestHist"
        return wire.parse_open_interest_hist(self._http.get_json(url, params))

    def query_premium_index(self, symbol: str) -> wire.BinancePremiumIndex:
        """``GET /fapi/v1/premiumIndex``: mark, index and last funding rate."""
        url = self.futures_base_url + "/fapi/v1/premiumIndex"
        return wire.parse_premium_index(self._http.get_json(url, {"symbol": symbol}))

    def query_ticker_24h(self, symbol: str, market: Market | None = None) -> wire.BinanceTicker24h:
        """``GET /api/v3/ticker/24hr`` or ``/fapi/v1/ticker/24hr``."""
        url = self._market_url(market, "/api/v3/ticker/24hr", "/fapi/v1/ticker/24hr")
        return wire.parse_ticker_24h(self._http.get_json(url, {"symbol": symbol}))

    def query_book_ticker(
        self, symbol: str, market: Market | None = None
    ) -> wire.BinanceBookTicker:
        """``GET /api/v3/ticker/bookTicker`` or ``/fapi/v1/ticker/bookTicker``."""
        url = self._market_url(market, "/api/v3/ticker/bookTicker", "/fapi/v1/ticker/bookTicker")
        return wire.parse_book_ticker(self._http.get_json(url, {"symbol": symbol}))

    # ------------------------------------------------------------------ fetch_*: our rows

    def fetch_candles(
        self, coin: str, interval: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        """Closed candles with ``start <= ts <= end`` (see ``Provider.fetch_candles``)."""
        if interval not in INTERVAL_SECONDS:
            valid = ", ".join(INTERVAL_SECONDS)
            raise ConfigurationError(f"unknown interval {interval!r}; valid intervals: {valid}")
        symbol = self.symbol(coin)
        step_ms = INTERVAL_SECONDS[interval] * 1000
        now_ms = self._now_ms(now)
        start_ms = start * 1000
        stop_ms = min(end * 1000, now_ms - step_ms)  # last open time whose bar can be closed
        limit = self.klines_page_limit
        rows = walk_candle_pages(
            lambda cursor: self.query_klines(
                symbol, interval, start_ms=cursor, end_ms=stop_ms, limit=limit
            ),
            lambda kline: kline.open_time,
            start_ms=start_ms,
            stop_ms=stop_ms,
            step_ms=step_ms,
            limit=limit,
            what=f"binance {symbol} {interval} klines",
        )
        closed = closed_klines(rows.values(), step_ms, now_ms)
        return klines_to_frame(closed, coin.upper(), interval, self.source)

    def fetch_funding(
        self, coin: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        """Funding settlements with ``start <= ts <= end`` (``FUNDING_COLUMNS``)."""
        symbol = self.symbol(coin)
        start_ms = start * 1000
        end_ms = min(end * 1000 + 999, self._now_ms(now))  # ts is fundingTime floored to s
        rows: dict[int, wire.BinanceFundingRate] = {}
        cursor = start_ms
        while cursor <= end_ms:
            page = self.query_funding_rates(symbol, start_ms=cursor, end_ms=end_ms)
            for item in page:
                if start_ms <= item.funding_time <= end_ms:
                    rows[item.funding_time] = item
            if len(page) < FUNDING_LIMIT:
                break
            cursor = max(max(item.funding_time for item in page) + 1, cursor + 1)
        ordered = [rows[k] for k in sorted(rows)]
        return pd.DataFrame(
            {
                "coin": pd.Series([coin.upper()] * len(ordered), dtype="str"),
                "ts": np.array([r.funding_time // 1000 for r in ordered], dtype=np.int64),
                "funding_rate": np.array([r.funding_rate for r in ordered], dtype=np.float64),
                "mark_price": np.array(
                    [np.nan if r.mark_price is None else r.mark_price for r in ordered],
                    dtype=np.float64,
                ),
                "source": pd.Series(["binance:um"] * len(ordered), dtype="str"),
            },
            columns=list(FUNDING_COLUMNS),
        )

    def fetch_open_interest(
        self, coin: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        """Open-interest history with ``start <= ts <= end`` at ``open_interest_period``.

        Binance keeps 30 days of it, so ``start`` is clamped to ``now - 30 days``. Requests
        cover windows of at most one page of points, so the venue's ordering within a window
        never matters.
        """
        symbol = self.symbol(coin)
        period_ms = OPEN_INTEREST_PERIODS_MS[self.open_interest_period]
        now_ms = self._now_ms(now)
        start_ms = max(start * 1000, now_ms - OPEN_INTEREST_HISTORY_MS)
        end_ms = min(end * 1000 + 999, now_ms)
        rows: dict[int, wire.BinanceOpenInterestHist] = {}
        cursor = start_ms
        while cursor <= end_ms:
            window_end = min(end_ms, cursor + (OPEN_INTEREST_HIST_LIMIT - 1) * period_ms)
            page = self.query_open_interest_hist(
                symbol, self.open_interest_period, start_ms=cursor, end_ms=window_end
            )
            for item in page:
                if start_ms <= item.timestamp <= end_ms:
                    rows[item.timestamp] = item
            cursor = window_end + 1
        ordered = [rows[k] for k in sorted(rows)]
        return pd.DataFrame(
            {
                "coin": pd.Series([coin.upper()] * len(ordered), dtype="str"),
                "ts": np.array([r.timestamp // 1000 for r in ordered], dtype=np.int64),
                "open_interest": np.array([r.sum_open_interest for r in ordered], dtype=np.float64),
                "open_interest_quote": np.array(
                    [r.sum_open_interest_value for r in ordered], dtype=np.float64
                ),
                "source": pd.Series(["binance:um"] * len(ordered), dtype="str"),
            },
            columns=list(OPEN_INTEREST_COLUMNS),
        )

    def fetch_snapshot(self, coin: str, *, now: int | None = None) -> dict[str, Any]:
        """A ``market_snapshots`` row: ticker (last, bid, ask, 24h volumes) of ``market``,
        plus mark/index price, last funding rate and open interest from the futures API.

        When the coin has no USDT-M perpetual (the futures API answers "invalid symbol"), the
        futures fields are None. Temporary futures failures are raised, not hidden.
        """
        symbol = self.symbol(coin)
        ticker = self.query_ticker_24h(symbol)
        bid, ask = ticker.bid_price, ticker.ask_price
        if bid is None or ask is None:  # the futures 24h ticker has no book prices
            book = self.query_book_ticker(symbol)
            bid, ask = book.bid_price, book.ask_price
        premium: wire.BinancePremiumIndex | None
        open_interest: wire.BinanceOpenInterest | None
        try:
            premium = self.query_premium_index(symbol)
        except ConfigurationError:
            premium, open_interest = None, None
        else:
            try:
                open_interest = self.query_open_interest(symbol)
            except ConfigurationError:
                open_interest = None
        return {
            "coin": coin.upper(),
            "ts": int(self._clock() if now is None else now),
            "last_price": ticker.last_price,
            "bid": bid,
            "ask": ask,
            "mark_price": premium.mark_price if premium else None,
            "index_price": premium.index_price if premium else None,
            "volume_base_24h": ticker.volume,
            "volume_quote_24h": ticker.quote_volume,
            "funding_rate": premium.last_funding_rate if premium else None,
            "open_interest": open_interest.open_interest if open_interest else None,
            "source": self.source,
        }

    def close(self) -> None:
        """Release pooled connections."""
        self._http.close()

    def __enter__(self) -> BinanceProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def closed_klines(
    klines: Iterable[wire.BinanceKline], step_ms: int, now_ms: int
) -> list[wire.BinanceKline]:
    """The final bars only, ascending: ``closeTime < now`` and ``closeTime`` exactly
    ``openTime + interval - 1 ms`` (anything else is a partial or still-open bar)."""
    kept = [
        k for k in klines if k.close_time == k.open_time + step_ms - 1 and k.close_time < now_ms
    ]
    return sorted(kept, key=lambda k: k.open_time)


def klines_to_frame(
    klines: list[wire.BinanceKline], coin: str, interval: str, source: str
) -> pd.DataFrame:
    """Canonical candle frame (``storage.columns``) from decoded klines, validated."""
    n = len(klines)
    frame = pd.DataFrame(
        {
            "coin": pd.Series([coin] * n, dtype="str"),
            "interval": pd.Series([interval] * n, dtype="str"),
            "ts": np.array([k.open_time // 1000 for k in klines], dtype=np.int64),
            "open": np.array([k.open for k in klines], dtype=np.float64),
            "high": np.array([k.high for k in klines], dtype=np.float64),
            "low": np.array([k.low for k in klines], dtype=np.float64),
            "close": np.array([k.close for k in klines], dtype=np.float64),
            "volume_base": np.array([k.volume for k in klines], dtype=np.float64),
            "volume_quote": np.array([k.quote_volume for k in klines], dtype=np.float64),
            "trade_count": np.array([k.trades for k in klines], dtype=np.float64),
            "source": pd.Series([source] * n, dtype="str"),
        },
        columns=list(CANDLE_COLUMNS),
    )
    return prepare_candles(frame)
