"""Binance REST wire schemas: what the venue sends, decoded once, kept apart from our rows.

Each dataclass mirrors one public market-data payload of the official API docs (spot
``/api/v3``, USDT-M futures ``/fapi/v1`` and ``/futures/data``), with snake_case names. Binance
sends prices and quantities as decimal **strings** to keep precision; they are parsed to
``float`` here, exactly once, and nowhere else. Times stay as the venue sends them: epoch ms.

A payload that does not have the documented shape raises ``DataIntegrityError`` naming the
endpoint and the field, so a venue-side schema change fails loudly instead of storing garbage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from storage.errors import DataIntegrityError

# Kline array positions (GET /api/v3/klines, /fapi/v1/klines).
KLINE_FIELDS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
    "ignore",
)


@dataclass(frozen=True, slots=True)
class BinanceKline:
    """One kline: ``[openTime, "open", "high", "low", "close", "volume", closeTime,
    "quoteAssetVolume", numberOfTrades, "takerBuyBase", "takerBuyQuote", "0"]``."""

    open_time: int  # ms, bar open
    open: float
    high: float
    low: float
    close: float
    volume: float  # base asset
    close_time: int  # ms, open_time + interval - 1 for a complete bar
    quote_volume: float
    trades: int
    taker_buy_base_volume: float
    taker_buy_quote_volume: float


@dataclass(frozen=True, slots=True)
class BinanceFundingRate:
    """One settlement of ``GET /fapi/v1/fundingRate``."""

    symbol: str
    funding_time: int  # ms (Binance's settlement stamp, may be a few ms past the hour)
    funding_rate: float
    mark_price: float | None  # "" in old records


@dataclass(frozen=True, slots=True)
class BinanceOpenInterest:
    """``GET /fapi/v1/openInterest``: the current open interest in base-asset units."""

    symbol: str
    open_interest: float
    time: int  # ms


@dataclass(frozen=True, slots=True)
class BinanceOpenInterestHist:
    """One point of ``GET /futures/data/openInterestHist``."""

    symbol: str
    sum_open_interest: float  # base-asset units
    sum_open_interest_value: float  # quote notional
    timestamp: int  # ms


@dataclass(frozen=True, slots=True)
class BinancePremiumIndex:
    """``GET /fapi/v1/premiumIndex``: mark and index prices and the funding rate."""

    symbol: str
    mark_price: float
    index_price: float
    estimated_settle_price: float | None
    last_funding_rate: float | None  # "" for delivery contracts
    interest_rate: float | None
    next_funding_time: int  # ms
    time: int  # ms


@dataclass(frozen=True, slots=True)
class BinanceTicker24h:
    """``GET /api/v3/ticker/24hr`` (spot) or ``/fapi/v1/ticker/24hr`` (futures, no bid/ask)."""

    symbol: str
    last_price: float
    bid_price: float | None  # spot only
    ask_price: float | None  # spot only
    open_price: float
    high_price: float
    low_price: float
    volume: float  # base asset, rolling 24h
    quote_volume: float  # quote asset, rolling 24h
    open_time: int  # ms
    close_time: int  # ms
    count: int  # trades


@dataclass(frozen=True, slots=True)
class BinanceBookTicker:
    """``GET /api/v3/ticker/bookTicker`` or ``/fapi/v1/ticker/bookTicker``: best bid and ask."""

    symbol: str
    bid_price: float
    bid_qty: float
    ask_price: float
    ask_qty: float


def _bad(endpoint: str, detail: str, payload: object) -> DataIntegrityError:
    return DataIntegrityError(
        f"binance {endpoint} sent an unexpected payload: {detail}: {str(payload)[:200]}"
    )


def _object(endpoint: str, payload: object) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise _bad(endpoint, "expected a JSON object", payload)
    return payload


def _list(endpoint: str, payload: object) -> list[Any]:
    if not isinstance(payload, list):
        raise _bad(endpoint, "expected a JSON array", payload)
    return payload


def _float(endpoint: str, obj: Mapping[str, Any], key: str) -> float:
    try:
        return float(obj[key])
    except (KeyError, TypeError, ValueError):
        raise _bad(endpoint, f"field {key!r} is missing or not a number", obj) from None


def _opt_float(endpoint: str, obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    return _float(endpoint, obj, key)


def _int(endpoint: str, obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _bad(endpoint, f"field {key!r} is missing or not an integer", obj)
    try:
        return int(value)
    except ValueError:
        raise _bad(endpoint, f"field {key!r} is not an integer", obj) from None


def _str(endpoint: str, obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _bad(endpoint, f"field {key!r} is missing or not a string", obj)
    return value


def parse_klines(payload: object, endpoint: str = "klines") -> list[BinanceKline]:
    """Decode a klines response (a list of 12-element arrays, prices as strings)."""
    out: list[BinanceKline] = []
    for row in _list(endpoint, payload):
        if not isinstance(row, list) or len(row) < 11:
            raise _bad(endpoint, "expected a kline array of 12 elements", row)
        try:
            out.append(
                BinanceKline(
                    open_time=int(row[0]),
                    open=float(row[1]),
                    high=float(row[2]),
                    low=float(row[3]),
                    close=float(row[4]),
                    volume=float(row[5]),
                    close_time=int(row[6]),
                    quote_volume=float(row[7]),
                    trades=int(row[8]),
                    taker_buy_base_volume=float(row[9]),
                    taker_buy_quote_volume=float(row[10]),
                )
            )
        except (TypeError, ValueError):
            raise _bad(endpoint, "a kline field is not a number", row) from None
    return out


def parse_funding_rates(payload: object) -> list[BinanceFundingRate]:
    """Decode ``GET /fapi/v1/fundingRate``."""
    ep = "fundingRate"
    return [
        BinanceFundingRate(
            symbol=_str(ep, item, "symbol"),
            funding_time=_int(ep, item, "fundingTime"),
            funding_rate=_float(ep, item, "fundingRate"),
            mark_price=_opt_float(ep, item, "markPrice"),
        )
        for item in (_object(ep, raw) for raw in _list(ep, payload))
    ]


def parse_open_interest(payload: object) -> BinanceOpenInterest:
    """Decode ``GET /fapi/v1/openInterest``."""
    ep = "openInterest"
    obj = _object(ep, payload)
    return BinanceOpenInterest(
        symbol=_str(ep, obj, "symbol"),
        open_interest=_float(ep, obj, "openInterest"),
        time=_int(ep, obj, "time"),
    )


def parse_open_interest_hist(payload: object) -> list[BinanceOpenInterestHist]:
    """Decode ``GET /futures/data/openInterestHist``."""
    ep = "openInterestHist"
    return [
        BinanceOpenInterestHist(
            symbol=_str(ep, item, "symbol"),
            sum_open_interest=_float(ep, item, "sumOpenInterest"),
            sum_open_interest_value=_float(ep, item, "sumOpenInterestValue"),
            timestamp=_int(ep, item, "timestamp"),
        )
        for item in (_object(ep, raw) for raw in _list(ep, payload))
    ]


def parse_premium_index(payload: object) -> BinancePremiumIndex:
    """Decode ``GET /fapi/v1/premiumIndex?symbol=`` (one object when a symbol is given)."""
    ep = "premiumIndex"
    obj = _object(ep, payload)
    return BinancePremiumIndex(
        symbol=_str(ep, obj, "symbol"),
        mark_price=_float(ep, obj, "markPrice"),
        index_price=_float(ep, obj, "indexPrice"),
        estimated_settle_price=_opt_float(ep, obj, "estimatedSettlePrice"),
        last_funding_rate=_opt_float(ep, obj, "lastFundingRate"),
        interest_rate=_opt_float(ep, obj, "interestRate"),
        next_funding_time=_int(ep, obj, "nextFundingTime"),
        time=_int(ep, obj, "time"),
    )


def parse_ticker_24h(payload: object) -> BinanceTicker24h:
    """Decode a 24h ticker (spot has bid/ask; futures does not, so they may be None)."""
    ep = "ticker/24hr"
    obj = _object(ep, payload)
    return BinanceTicker24h(
        symbol=_str(ep, obj, "symbol"),
        last_price=_float(ep, obj, "lastPrice"),
        bid_price=_opt_float(ep, obj, "bidPrice"),
        ask_price=_opt_float(ep, obj, "askPrice"),
        open_price=_float(ep, obj, "openPrice"),
        high_price=_float(ep, obj, "highPrice"),
        low_price=_float(ep, obj, "lowPrice"),
        volume=_float(ep, obj, "volume"),
        quote_volume=_float(ep, obj, "quoteVolume"),
        open_time=_int(ep, obj, "openTime"),
        close_time=_int(ep, obj, "closeTime"),
        count=_int(ep, obj, "count"),
    )


def parse_book_ticker(payload: object) -> BinanceBookTicker:
    """Decode a book ticker for one symbol."""
    ep = "ticker/bookTicker"
    obj = _object(ep, payload)
    return BinanceBookTicker(
        symbol=_str(ep, obj, "symbol"),
        bid_price=_float(ep, obj, "bidPrice"),
        bid_qty=_float(ep, obj, "bidQty"),
        ask_price=_float(ep, obj, "askPrice"),
        ask_qty=_float(ep, obj, "askQty"),
    )


def error_message(response: httpx.Response) -> str:
    """Binance's error body ``{"code": -1121, "msg": "Invalid symbol."}`` as ``code -1121:
    Invalid symbol.``; the raw text when the body is something else (a proxy's HTML page)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, Mapping) and "msg" in body:
        return f"code {body.get('code')}: {body['msg']}"
    return str(body)[:300]
