"""Any exchange ccxt knows, behind the ``Provider`` interface (synchronous ccxt, like the
interface; the actor loops call it in worker threads).

What comes from where:

* candles: ``fetch_ohlcv`` on ``COIN/QUOTE`` (``market="spot"``) or the linear perpetual
  ``COIN/QUOTE:QUOTE`` (``market="swap"``), walked page by page with
  ``ingestion.providers.paging.walk_candle_pages`` (``since`` + ``limit`` only: ``until`` is
  not understood by every exchange, and rows past the end are dropped anyway);
* funding and open-interest history (``fetch_funding_rate_history``,
  ``fetch_open_interest_history``) and the snapshot's mark/index price, funding rate and open
  interest: always from the perpetual, as the Binance provider takes them from USDT-M. Where
  the exchange lacks the method (``exchange.has``) or lists no perpetual for the coin, the
  frame is empty (the snapshot's fields None) and the reason is kept in ``unsupported`` and
  logged once, instead of failing the derivatives job on every run.

ccxt's OHLCV rows are ``[open time ms, open, high, low, close, base volume]``; ccxt has parsed
the venue's strings to floats once. The quote volume and trade count are not in them, so
``volume_quote`` and ``trade_count`` are stored as NULL (unknown, as the data dictionary
says), never estimated as ``close * volume``. There is no ``closeTime`` either: a bar is
closed when ``open + interval <= now`` (the Binance provider also drops a bar whose
``closeTime`` says it is partial, which needs that field).

Transport (ccxt's own rate limiter made thread-safe, retries with jittered backoff on
temporary errors only, the ``Retry-After`` window, ccxt's errors mapped onto ours) lives in
``ingestion.providers.ccxt_transport.CcxtClient``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

from ingestion.providers.base import FUNDING_COLUMNS, OPEN_INTEREST_COLUMNS
from ingestion.providers.ccxt_transport import CcxtClient
from ingestion.providers.paging import walk_candle_pages
from storage.columns import CANDLE_COLUMNS
from storage.errors import ConfigurationError
from storage.intervals import INTERVAL_SECONDS
from storage.validation import prepare_candles

log = logging.getLogger(__name__)

Market = Literal["spot", "swap"]
#: Page size when ccxt's ``features`` give none for the market.
DEFAULT_OHLCV_LIMIT = 500
#: Page size asked of funding and open-interest history (accepted by the major venues).
DEFAULT_HISTORY_LIMIT = 100
#: Days of open-interest history a venue keeps, where known (a start before is clamped).
OPEN_INTEREST_RETENTION_DAYS: dict[str, int] = {"binance": 30, "binanceusdm": 30}


class CcxtProvider:
    """Candles, snapshots, funding and open interest from any ccxt exchange.

    ``urls`` replaces entries of the exchange's ``urls['api']`` (e.g. ``{"public":
    "http://127.0.0.1:9000/api/v3"}`` for binance spot); the keys must be ones the exchange
    has. ``clock`` (unix seconds) says what "now" is; ``sleep`` and ``rng`` drive the backoff
    so tests need not wait (ccxt's own limiter always sleeps for real: give tests a small
    ``rate_limit_ms``).
    """

    def __init__(
        self,
        exchange_id: str = "binance",
        *,
        quote_asset: str = "USDT",
        market: Market = "spot",
        urls: Mapping[str, Any] | None = None,
        timeout_s: float = 10.0,
        rate_limit_ms: float | None = None,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        ohlcv_page_limit: int | None = None,
        history_page_limit: int = DEFAULT_HISTORY_LIMIT,
        open_interest_period: str = "1h",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if market not in ("spot", "swap"):
            raise ConfigurationError(f"market must be 'spot' or 'swap', got {market!r}")
        if not quote_asset.isalnum():
            raise ConfigurationError(f"quote_asset must be alphanumeric, got {quote_asset!r}")
        if history_page_limit < 2:
            raise ConfigurationError(f"history_page_limit must be >= 2, got {history_page_limit}")
        if open_interest_period not in INTERVAL_SECONDS:
            raise ConfigurationError(f"unknown open_interest_period {open_interest_period!r}")
        self._client = CcxtClient(
            exchange_id,
            urls=urls,
            timeout_s=timeout_s,
            rate_limit_ms=rate_limit_ms,
            max_retries=max_retries,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            sleep=sleep,
            rng=rng,
        )
        self._call = self._client.call
        #: the ccxt exchange object (``ccxt.<exchange_id>``), instrumented by ``CcxtClient``
        self.exchange: Any = self._client.exchange
        self.exchange_id = exchange_id
        self.name = self._client.name
        self.quote_asset = quote_asset.upper()
        self.market: Market = market
        self.history_page_limit = history_page_limit
        self.open_interest_period = open_interest_period
        #: what this exchange cannot give, e.g. ``{"funding:ETH": "binance lists no ..."}``
        self.unsupported: dict[str, str] = {}
        self._clock = clock
        limit = self._feature_limit() if ohlcv_page_limit is None else ohlcv_page_limit
        if limit < 2:
            raise ConfigurationError(f"ohlcv_page_limit must be >= 2, got {limit}")
        self.ohlcv_page_limit = limit

    def _feature_limit(self) -> int:
        """The exchange's OHLCV page size for ``market`` from ccxt's ``features``."""
        features = self.exchange.features or {}
        node = features.get(self.market) or {}
        if self.market == "swap":
            node = node.get("linear") or {}
        limit = (node.get("fetchOHLCV") or {}).get("limit")
        return int(limit) if limit else DEFAULT_OHLCV_LIMIT

    def markets(self) -> dict[str, Any]:
        """The exchange's markets, loaded once (``load_markets``, retried like any call)."""
        return self._client.markets()

    # ------------------------------------------------------------------ naming

    def symbol(self, coin: str, market: Market | None = None) -> str:
        """ccxt's unified symbol: ``BTC/USDT`` (spot) or ``BTC/USDT:USDT`` (linear perpetual)."""
        if not coin or not coin.isalnum():
            raise ConfigurationError(f"coin must be a non-empty alphanumeric name, got {coin!r}")
        base, quote = coin.upper(), self.quote_asset
        return f"{base}/{quote}" if (market or self.market) == "spot" else f"{base}/{quote}:{quote}"

    def _listed(self, coin: str, market: Market) -> str | None:
        symbol = self.symbol(coin, market)
        return symbol if symbol in self.markets() else None

    def _require(self, coin: str) -> str:
        symbol = self._listed(coin, self.market)
        if symbol is None:
            raise ConfigurationError(
                f"{self.exchange_id} lists no {self.market} market {self.symbol(coin)} "
                f"(coin {coin!r}, quote asset {self.quote_asset}); check SQUALL_COINS, "
                "SQUALL_QUOTE_ASSET and SQUALL_CCXT_MARKET"
            )
        return symbol

    def _perpetual(self, coin: str, what: str, capability: str) -> str | None:
        """The coin's linear perpetual when it exists and ``has[capability]``; else None with
        the reason noted once."""
        reason = None
        if not self.exchange.has.get(capability):
            reason = f"{self.exchange_id} has no {capability} in ccxt"
        elif (swap := self._listed(coin, "swap")) is None:
            reason = f"{self.exchange_id} lists no perpetual {self.symbol(coin, 'swap')}"
        else:
            return swap
        key = f"{what}:{coin.upper()}"
        if key not in self.unsupported:
            self.unsupported[key] = reason
            log.warning("%s: no %s for %s: %s", self.name, what, coin, reason)
        return None

    @property
    def source(self) -> str:
        """The ``source`` of the candle rows: ``ccxt:<exchange>:<spot|swap>``. Its own series
        family: ccxt's OHLCV has no quote volume or trade count, so its rows do not mix with
        those of the direct Binance provider in one series (``--replace-source`` switches)."""
        return f"ccxt:{self.exchange_id}:{self.market}"

    @property
    def _source(self) -> str:
        return self.source

    def _now_ms(self, now: int | None) -> int:
        return int((self._clock() if now is None else now) * 1000)

    # ------------------------------------------------------------------ fetch_*: our rows

    def fetch_candles(
        self, coin: str, interval: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        """Closed candles with ``start <= ts <= end`` (see ``Provider.fetch_candles``)."""
        if interval not in INTERVAL_SECONDS:
            valid = ", ".join(INTERVAL_SECONDS)
            raise ConfigurationError(f"unknown interval {interval!r}; valid intervals: {valid}")
        if interval not in (self.exchange.timeframes or {}):
            offered = ", ".join(self.exchange.timeframes or {}) or "none"
            raise ConfigurationError(
                f"{self.exchange_id} has no {interval} candles; it offers: {offered}"
            )
        symbol = self._require(coin)
        step_ms = INTERVAL_SECONDS[interval] * 1000
        now_ms = self._now_ms(now)
        start_ms = start * 1000
        stop_ms = min(end * 1000, now_ms - step_ms)  # last open time whose bar can be closed
        limit = self.ohlcv_page_limit
        what = f"{symbol} {interval} ohlcv"
        rows = walk_candle_pages(
            lambda cursor: self._call(what, "fetch_ohlcv", symbol, interval, cursor, limit),
            lambda row: int(row[0]),
            start_ms=start_ms,
            stop_ms=stop_ms,
            step_ms=step_ms,
            limit=limit,
            what=f"{self.name} {what}",
        )
        closed = [rows[t] for t in sorted(rows) if t + step_ms <= now_ms]
        return ohlcv_to_frame(closed, coin.upper(), interval, self._source)

    def fetch_funding(
        self, coin: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        """Funding settlements with ``start <= ts <= end`` (``FUNDING_COLUMNS``); ccxt has no
        unified mark price at settlement, so ``mark_price`` is NaN."""
        swap = self._perpetual(coin, "funding", "fetchFundingRateHistory")
        if swap is None:
            return _frame(FUNDING_COLUMNS, coin, [], {}, self._source)
        start_ms = start * 1000
        end_ms = min(end * 1000 + 999, self._now_ms(now))  # ts is the settlement floored to s
        rows: dict[int, float] = {}
        cursor = start_ms
        while cursor <= end_ms:
            page = self._call(
                f"{swap} funding",
                "fetch_funding_rate_history",
                swap,
                cursor,
                self.history_page_limit,
            )
            fresh = [r for r in page if r.get("timestamp") is not None and r["timestamp"] >= cursor]
            for item in fresh:
                if start_ms <= item["timestamp"] <= end_ms:
                    rows[int(item["timestamp"])] = _num(item.get("fundingRate"))
            if not fresh or len(page) < self.history_page_limit:
                break
            cursor = max(int(r["timestamp"]) for r in fresh) + 1
        times = sorted(rows)
        columns = {"funding_rate": [rows[t] for t in times], "mark_price": [np.nan] * len(times)}
        return _frame(FUNDING_COLUMNS, coin, [t // 1000 for t in times], columns, self._source)

    def fetch_open_interest(
        self, coin: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        """Open-interest history with ``start <= ts <= end`` at ``open_interest_period``, in
        windows of at most one page of points (so a venue's order within one never matters);
        ``start`` is clamped to the venue's retention where known (Binance: 30 days)."""
        swap = self._perpetual(coin, "open_interest", "fetchOpenInterestHistory")
        if swap is None:
            return _frame(OPEN_INTEREST_COLUMNS, coin, [], {}, self._source)
        period_ms = INTERVAL_SECONDS[self.open_interest_period] * 1000
        now_ms = self._now_ms(now)
        start_ms = start * 1000
        if (days := OPEN_INTEREST_RETENTION_DAYS.get(self.exchange_id)) is not None:
            start_ms = max(start_ms, now_ms - days * 86_400_000)
        end_ms = min(end * 1000 + 999, now_ms)
        rows: dict[int, tuple[float, float]] = {}
        cursor = start_ms
        while cursor <= end_ms:
            window_end = min(end_ms, cursor + (self.history_page_limit - 1) * period_ms)
            page = self._call(
                f"{swap} open interest",
                "fetch_open_interest_history",
                swap,
                self.open_interest_period,
                cursor,
                self.history_page_limit,
                {"until": window_end},
            )
            for item in page:
                t = item.get("timestamp")
                if t is not None and start_ms <= t <= end_ms:
                    amount, value = item.get("openInterestAmount"), item.get("openInterestValue")
                    rows[int(t)] = (_num(amount), _num(value))
            cursor = window_end + 1
        times = sorted(rows)
        columns = {
            "open_interest": [rows[t][0] for t in times],
            "open_interest_quote": [rows[t][1] for t in times],
        }
        return _frame(
            OPEN_INTEREST_COLUMNS, coin, [t // 1000 for t in times], columns, self._source
        )

    def fetch_snapshot(self, coin: str, *, now: int | None = None) -> dict[str, Any]:
        """A ``market_snapshots`` row: the ticker of ``market`` (bid/ask from the book when the
        ticker has none), plus mark/index price, funding rate and open interest of the
        perpetual where the exchange gives them (None otherwise)."""
        symbol = self._require(coin)
        ticker = self._call(f"{symbol} ticker", "fetch_ticker", symbol)
        bid, ask = ticker.get("bid"), ticker.get("ask")
        if (bid is None or ask is None) and self.exchange.has.get("fetchBidsAsks"):
            book = self._call(f"{symbol} bids/asks", "fetch_bids_asks", [symbol]).get(symbol, {})
            bid, ask = book.get("bid"), book.get("ask")
        mark = index = rate = open_interest = None
        if (swap := self._perpetual(coin, "funding_rate", "fetchFundingRate")) is not None:
            funding = self._call(f"{swap} funding rate", "fetch_funding_rate", swap)
            mark, index = funding.get("markPrice"), funding.get("indexPrice")
            rate = funding.get("fundingRate")
        if (swap := self._perpetual(coin, "open_interest_now", "fetchOpenInterest")) is not None:
            oi = self._call(f"{swap} open interest now", "fetch_open_interest", swap)
            open_interest = oi.get("openInterestAmount")
        return {
            "coin": coin.upper(),
            "ts": int(self._clock() if now is None else now),
            "last_price": _opt(ticker.get("last")),
            "bid": _opt(bid),
            "ask": _opt(ask),
            "mark_price": _opt(mark),
            "index_price": _opt(index),
            "volume_base_24h": _opt(ticker.get("baseVolume")),
            "volume_quote_24h": _opt(ticker.get("quoteVolume")),
            "funding_rate": _opt(rate),
            "open_interest": _opt(open_interest),
            "source": self._source,
        }

    def close(self) -> None:
        """Release pooled connections."""
        self._client.close()

    def __enter__(self) -> CcxtProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _num(value: Any) -> float:
    return np.nan if value is None else float(value)


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def _frame(
    columns: tuple[str, ...], coin: str, ts: list[int], values: dict[str, list[float]], source: str
) -> pd.DataFrame:
    """A funding / open-interest frame of ``columns`` (coin, ts, values..., source)."""
    n = len(ts)
    data: dict[str, Any] = {
        "coin": pd.Series([coin.upper()] * n, dtype="str"),
        "ts": np.array(ts, dtype=np.int64),
        "source": pd.Series([source] * n, dtype="str"),
    }
    for name in columns:
        if name not in data:
            data[name] = np.array(values.get(name, []), dtype=np.float64)
    return pd.DataFrame(data, columns=list(columns))


def ohlcv_to_frame(rows: list[list[Any]], coin: str, interval: str, source: str) -> pd.DataFrame:
    """Canonical candle frame from ccxt OHLCV rows, validated. Quote volume and trade count
    are unknown (NULL), never estimated."""
    n = len(rows)
    cols = np.array([r[:6] for r in rows], dtype=np.float64).reshape(n, 6)
    frame = pd.DataFrame(
        {
            "coin": pd.Series([coin] * n, dtype="str"),
            "interval": pd.Series([interval] * n, dtype="str"),
            "ts": np.array([int(r[0]) // 1000 for r in rows], dtype=np.int64),
            "open": cols[:, 1],
            "high": cols[:, 2],
            "low": cols[:, 3],
            "close": cols[:, 4],
            "volume_base": cols[:, 5],
            "volume_quote": np.full(n, np.nan),
            "trade_count": np.full(n, np.nan),
            "source": pd.Series([source] * n, dtype="str"),
        },
        columns=list(CANDLE_COLUMNS),
    )
    return prepare_candles(frame)
