"""A fake Binance: a real HTTP server on 127.0.0.1 speaking the public market-data endpoints.

Tests run the real ``BinanceProvider`` (httpx, timeouts, retries, pagination) against it, so
what they exercise is the wire, not a mock. Payloads mirror the official docs: klines are
12-element arrays with prices as strings; ``fundingRate``, ``openInterest``,
``openInterestHist``, ``premiumIndex``, ``ticker/24hr`` and ``ticker/bookTicker`` are JSON
objects of strings and epoch-ms integers; errors are ``{"code": -1121, "msg": "..."}``.

Data: spot and USDT-M ``BTCUSDT`` 1h candles come from the real file
``../shared/data/binance_spot_BTCUSDT_1h_2022-01_kline12.csv`` (read with
``ingestion.fileimport.parse_candle_file``), or from a deterministic random walk when that
folder is absent; ``ETHUSDT`` is a synthetic spot-only pair (no futures, to test snapshots
of coins without a perpetual). ``load_file``/``add_series`` add more (e.g. the 1m futures
files). Funding, open interest, premium index and tickers are derived deterministically from
the candles. "Now" is settable; the bar containing it is served as Binance serves it: still
open, with its future ``closeTime`` and partial values.

Misbehaviour on command (all thread-safe; faults queue up and are consumed in order by the
next matching requests, optionally only those whose path starts with ``path``):
``rate_limit(n, retry_after_s, status=429|418)``, ``fail(n, status=500|502|503)``,
``slow(n, delay_s)``, ``duplicate_pages()``, ``overlap_pages(n_rows)``,
``partial_last_candle()``, ``outage(start_ms, end_ms)``, ``windowed_pages()``,
``down("refuse"|"503")`` / ``up()``, ``reset()``. Every request is recorded in ``requests``
(path, params, ``time.monotonic()`` at arrival, status) so tests can assert on timing.

Use the ``fake_exchange`` fixture from a conftest with either of::

    pytest_plugins = ["tests.fakes.exchange"]  # in the top-level tests/conftest.py
    from tests.fakes.exchange import fake_exchange  # noqa: F401

In a test module whose tests take ``fake_exchange`` as an argument, bind it as
``fake_exchange = exchange.fake_exchange`` (an import would trip ruff's F811). Or use it as a
context manager: ``with FakeExchange() as fake: ... fake.base_url ...``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingestion.fileimport import parse_candle_file
from storage.intervals import INTERVAL_SECONDS

DEFAULT_FILE = "binance_spot_BTCUSDT_1h_2022-01_kline12.csv"
SYNTHETIC_START_MS = 1_640_995_200_000  # 2022-01-01 00:00 UTC, like the default file
FUNDING_EVERY_MS = 8 * 3_600_000
OI_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
KLINE_LIMITS = {"spot": (500, 1000), "um": (500, 1500)}  # (default, max)
Market = Literal["spot", "um"]
QUOTE_ASSETS = ("USDT", "USDC", "FDUSD", "BTC")


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the repository (or ``SQUALL_SHARED_DATA``), if present."""
    override = os.environ.get("SQUALL_SHARED_DATA")
    root = Path(__file__).resolve().parents[2]
    path = Path(override) if override else root.parent / "shared" / "data"
    return path if path.is_dir() else None


def fmt(x: float) -> str:
    """A price as Binance writes it (8 decimals), or the shortest exact form when 8 decimals
    would not round-trip, so ``float(fmt(x)) == x`` always."""
    text = f"{x:.8f}"
    return text if float(text) == x else np.format_float_positional(x, unique=True)


@dataclass
class Series:
    """Candles of one (market, symbol, interval): numbers for maths, open times for slicing."""

    interval: str
    open_time: np.ndarray  # int64 ms, ascending, unique
    values: np.ndarray  # float64 (n, 7): open, high, low, close, volume, quote volume, trades

    @property
    def step_ms(self) -> int:
        return INTERVAL_SECONDS[self.interval] * 1000

    def kline(self, i: int, frac: float = 1.0, close_time: int | None = None) -> list[Any]:
        """Row ``i`` as a Binance kline array; ``frac < 1`` gives a partial (still open) bar."""
        o, h, lo, c, v, qv, n = (float(x) for x in self.values[i])
        if frac < 1.0:
            partial_close = o + (c - o) * frac
            h = max(o, partial_close) + (h - max(o, c)) * frac
            lo = min(o, partial_close) - (min(o, c) - lo) * frac
            c = partial_close
            v, qv, n = v * frac, qv * frac, float(int(n * frac))
        ot = int(self.open_time[i])
        ct = ot + self.step_ms - 1 if close_time is None else close_time
        return [
            ot,
            fmt(o),
            fmt(h),
            fmt(lo),
            fmt(c),
            fmt(v),
            ct,
            fmt(qv),
            int(n),
            fmt(v / 2),
            fmt(qv / 2),
            "0",
        ]


@lru_cache(maxsize=8)
def _file_series(path: str, interval: str) -> Series:
    frame = parse_candle_file(path, coin="X", interval=interval).frame
    cols = ["open", "high", "low", "close", "volume_base", "volume_quote", "trade_count"]
    values = frame[cols].to_numpy(np.float64).copy()
    values[:, 6] = np.nan_to_num(values[:, 6])
    values[:, 5] = np.where(np.isnan(values[:, 5]), values[:, 4] * values[:, 3], values[:, 5])
    return Series(interval, frame["ts"].to_numpy(np.int64) * 1000, values)


def synthetic_series(interval: str, n: int, *, seed: int, price: float, start_ms: int) -> Series:
    """A deterministic random walk of ``n`` bars (geometric, 0.5% per bar)."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0.0, 0.005, n)))
    open_ = np.concatenate([[price], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.003, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.003, n))
    volume = np.round(rng.uniform(100, 1000, n), 5)
    trades = rng.integers(1000, 50_000, n).astype(np.float64)
    values = np.column_stack([open_, high, low, close, volume, volume * close, trades])
    step = INTERVAL_SECONDS[interval] * 1000
    return Series(interval, start_ms + step * np.arange(n, dtype=np.int64), np.round(values, 8))


@dataclass
class RecordedRequest:
    """One request as the fake saw it; ``status`` is filled in once it is answered."""

    path: str
    params: dict[str, str]
    t: float  # time.monotonic() at arrival
    status: int | None = None


@dataclass(frozen=True)
class _Fault:
    kind: Literal["rate_limit", "fail", "slow"]
    path: str | None
    status: int = 0
    retry_after_s: float | None = None
    delay_s: float = 0.0


@dataclass
class _Quirks:
    duplicate_pages: bool = False
    overlap_rows: int = 0
    partial_last: bool = False
    outages: list[tuple[int, int]] = field(default_factory=list)
    windowed: bool = False
    down_503: bool = False


def _error(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"code": code, "msg": msg}, status_code=status, headers=headers)


class FakeExchange:
    """The fake venue; ``base_url`` serves both the spot and the futures paths."""

    def __init__(self, data_dir: Path | None = None, *, now_ms: int | None = None) -> None:
        data_dir = data_dir if data_dir is not None else shared_data_dir()
        path = data_dir / DEFAULT_FILE if data_dir is not None else None
        if path is not None and path.is_file():
            btc = _file_series(str(path), "1h")
        else:
            btc = synthetic_series("1h", 744, seed=1, price=46_000.0, start_ms=SYNTHETIC_START_MS)
        eth = synthetic_series("1h", 744, seed=2, price=3_700.0, start_ms=SYNTHETIC_START_MS)
        self._series: dict[tuple[str, str], dict[str, Series]] = {
            ("spot", "BTCUSDT"): {"1h": btc},
            ("um", "BTCUSDT"): {"1h": btc},
            ("spot", "ETHUSDT"): {"1h": eth},
        }
        self._now_ms = now_ms
        self._follow_wall_clock = False
        self._lock = threading.Lock()
        self._faults: deque[_Fault] = deque()
        self._quirks = _Quirks()
        self.requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self.app = Starlette(routes=[Route("/{path:path}", self._handle)])

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FakeExchange:
        """Serve on a free loopback port (the same port again after ``down("refuse")``)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        self._stopping.clear()
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake exchange did not start")
            time.sleep(0.005)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving; requests still sleeping in ``slow`` are cut short."""
        self._stopping.set()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self._server = self._thread = None

    def __enter__(self) -> FakeExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ data and clock

    def add_series(self, market: Market, symbol: str, series: Series) -> None:
        with self._lock:
            self._series.setdefault((market, symbol), {})[series.interval] = series

    def load_file(self, market: Market, symbol: str, interval: str, path: Path) -> Series:
        """Serve a real kline/OHLCV file for (market, symbol, interval)."""
        series = _file_series(str(path), interval)
        self.add_series(market, symbol, series)
        return series

    def series(self, market: Market, symbol: str, interval: str) -> Series:
        return self._series[(market, symbol)][interval]

    @property
    def now_ms(self) -> int:
        """The fake's "now": settable, the wall clock after ``follow_wall_clock()``, by
        default just after the end of all its data."""
        with self._lock:
            if self._follow_wall_clock:
                return int(time.time() * 1000)
            if self._now_ms is not None:
                return self._now_ms
            return max(
                int(s.open_time[-1]) + s.step_ms for m in self._series.values() for s in m.values()
            )

    def set_now(self, now_ms: int | None) -> None:
        with self._lock:
            self._now_ms = now_ms
            self._follow_wall_clock = False

    def follow_wall_clock(self) -> None:
        """Serve bars as they close in real time (for tests of live ingestion loops)."""
        with self._lock:
            self._follow_wall_clock = True

    # ------------------------------------------------------------------ controls

    def rate_limit(
        self,
        n: int,
        retry_after_s: float | None = 1.0,
        *,
        status: int = 429,
        path: str | None = None,
    ) -> None:
        """The next ``n`` requests get ``status`` (429, or 418 = IP ban) with ``Retry-After``."""
        self._queue(n, _Fault("rate_limit", path, status=status, retry_after_s=retry_after_s))

    def fail(self, n: int, status: int = 503, *, path: str | None = None) -> None:
        """The next ``n`` requests fail with a 5xx."""
        self._queue(n, _Fault("fail", path, status=status))

    def slow(self, n: int, delay_s: float, *, path: str | None = None) -> None:
        """The next ``n`` requests are answered only after ``delay_s`` (past client timeouts)."""
        self._queue(n, _Fault("slow", path, delay_s=delay_s))

    def duplicate_pages(self, on: bool = True) -> None:
        """Every klines page comes back twice over (each row repeated)."""
        with self._lock:
            self._quirks.duplicate_pages = on

    def overlap_pages(self, n_rows: int = 3) -> None:
        """Klines pages start ``n_rows`` bars before ``startTime`` (still ``limit`` rows)."""
        with self._lock:
            self._quirks.overlap_rows = n_rows

    def partial_last_candle(self, on: bool = True) -> None:
        """The newest bar served is partial: half its values and a ``closeTime`` short of
        ``openTime + interval - 1`` (the live bar if "now" is inside the data)."""
        with self._lock:
            self._quirks.partial_last = on

    def outage(self, start_ms: int, end_ms: int) -> None:
        """No candles open in ``[start_ms, end_ms)``, silently (no error, just absent)."""
        with self._lock:
            self._quirks.outages.append((start_ms, end_ms))

    def windowed_pages(self, on: bool = True) -> None:
        """A klines page covers only ``[startTime, startTime + limit * interval)`` instead of
        skipping ahead to the next bars as Binance does, so an outage longer than a page
        yields empty pages and one crossing a page boundary yields a short page."""
        with self._lock:
            self._quirks.windowed = on

    def down(self, mode: Literal["refuse", "503"] = "refuse") -> None:
        """Refuse connections (the server stops; same port on ``up``) or answer 503 to all."""
        if mode == "503":
            with self._lock:
                self._quirks.down_503 = True
        else:
            self.stop()

    def up(self) -> None:
        with self._lock:
            self._quirks.down_503 = False
        if self._server is None:
            self.start()

    def reset(self) -> None:
        """Forget faults, quirks and the request log (data and "now" are kept)."""
        with self._lock:
            self._faults.clear()
            self._quirks = _Quirks()
            self.requests.clear()

    def _queue(self, n: int, fault: _Fault) -> None:
        with self._lock:
            self._faults.extend([fault] * n)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        record = RecordedRequest(path, dict(request.query_params), time.monotonic())
        with self._lock:
            self.requests.append(record)
            fault = next(
                (f for f in self._faults if f.path is None or path.startswith(f.path)), None
            )
            if fault is not None:
                self._faults.remove(fault)
            down = self._quirks.down_503
        response = await self._respond(record, fault, down)
        record.status = response.status_code
        with self._lock:  # Binance reports the weight used in the current minute
            recent = sum(1 for r in self.requests if r.t > record.t - 60)
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(recent)
        return response

    async def _respond(self, rec: RecordedRequest, fault: _Fault | None, down: bool) -> Response:
        if down:
            return Response("Service Unavailable", status_code=503)
        if fault is not None and fault.kind == "rate_limit":
            headers = {}
            if fault.retry_after_s is not None:
                headers["Retry-After"] = f"{fault.retry_after_s:g}"
            msg = (
                "Way too many requests; IP banned." if fault.status == 418 else "Too many requests."
            )
            return _error(fault.status, -1003, msg, headers)
        if fault is not None and fault.kind == "fail":
            return _error(fault.status, -1001, "Internal error; unable to process your request.")
        if fault is not None and fault.kind == "slow":
            deadline = time.monotonic() + fault.delay_s
            while time.monotonic() < deadline and not self._stopping.is_set():
                await asyncio.sleep(0.01)
        return self._dispatch(rec.path, rec.params)

    # ------------------------------------------------------------------ endpoints

    def _dispatch(self, path: str, params: dict[str, str]) -> Response:
        handlers = {
            "/api/v3/klines": lambda: self._klines("spot", params),
            "/fapi/v1/klines": lambda: self._klines("um", params),
            "/fapi/v1/fundingRate": lambda: self._funding(params),
            "/fapi/v1/openInterest": lambda: self._open_interest(params),
            "/futures/data/openInterestHist": lambda: self._open_interest_hist(params),
            "/fapi/v1/premiumIndex": lambda: self._premium_index(params),
            "/api/v3/ticker/24hr": lambda: self._ticker_24h("spot", params),
            "/fapi/v1/ticker/24hr": lambda: self._ticker_24h("um", params),
            "/api/v3/ticker/bookTicker": lambda: self._book_ticker("spot", params),
            "/fapi/v1/ticker/bookTicker": lambda: self._book_ticker("um", params),
            "/api/v3/exchangeInfo": lambda: self._exchange_info("spot"),
            "/fapi/v1/exchangeInfo": lambda: self._exchange_info("um"),
            "/dapi/v1/exchangeInfo": lambda: self._exchange_info(None),
        }
        handler = handlers.get(path)
        if handler is None:
            return Response("Not Found", status_code=404)
        try:
            return JSONResponse(handler())
        except _BadRequestError as exc:
            return _error(400, exc.code, exc.msg)

    def _exchange_info(self, market: Market | None) -> dict[str, Any]:
        """The symbols of ``market`` (None: COIN-M, of which the fake has none) with the fields
        of the official payload a client needs to know a market: assets, status, contract."""
        now, _ = self._state()
        with self._lock:
            symbols = sorted(sym for (m, sym) in self._series if m == market)
        entries = []
        for symbol in symbols:
            quote = next((q for q in QUOTE_ASSETS if symbol.endswith(q)), symbol[-4:])
            entry: dict[str, Any] = {
                "symbol": symbol,
                "status": "TRADING",
                "baseAsset": symbol[: -len(quote)],
                "quoteAsset": quote,
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": "0.01",
                        "maxPrice": "1000000",
                        "tickSize": "0.01",
                    },
                    {
                        "filterType": "LOT_SIZE",
                        "minQty": "0.00001",
                        "maxQty": "9000",
                        "stepSize": "0.00001",
                    },
                ],
            }
            if market == "um":
                entry |= {
                    "pair": symbol,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4_133_404_800_000,
                    "onboardDate": SYNTHETIC_START_MS,
                    "marginAsset": quote,
                    "pricePrecision": 2,
                    "quantityPrecision": 3,
                }
            entries.append(entry)
        return {"timezone": "UTC", "serverTime": now, "rateLimits": [], "symbols": entries}

    def _state(self) -> tuple[int, _Quirks]:
        """``now`` and a copy of the quirks, read once per request."""
        now = self.now_ms
        with self._lock:
            return now, replace(self._quirks, outages=list(self._quirks.outages))

    def _symbol_series(self, market: Market, params: dict[str, str]) -> tuple[str, Series]:
        """The symbol and its finest series; 400 like Binance for a missing/unknown symbol."""
        symbol = params.get("symbol", "")
        if not symbol:
            raise _BadRequestError(
                -1102, "Mandatory parameter 'symbol' was not sent, was empty/null."
            )
        with self._lock:
            by_interval = self._series.get((market, symbol))
        if not by_interval:
            raise _BadRequestError(-1121, "Invalid symbol.")
        finest = min(by_interval.values(), key=lambda s: s.step_ms)
        return symbol, finest

    def _klines(self, market: Market, params: dict[str, str]) -> list[list[Any]]:
        symbol, _ = self._symbol_series(market, params)
        interval = params.get("interval", "")
        if interval not in INTERVAL_SECONDS:
            raise _BadRequestError(-1120, "Invalid interval.")
        default, most = KLINE_LIMITS[market]
        limit = _int_param(params, "limit", default)
        if not 1 <= limit <= most:
            raise _BadRequestError(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = _int_param(params, "startTime", None), _int_param(params, "endTime", None)
        now, quirks = self._state()
        with self._lock:
            s = self._series[(market, symbol)].get(interval)
        if s is None:
            return []
        ot = s.open_time
        present = ot <= now
        for a, b in quirks.outages:
            present &= (ot < a) | (ot >= b)
        chosen = present.copy()
        if start is not None:
            chosen &= ot >= start
            if quirks.windowed:
                chosen &= ot < start + limit * s.step_ms
        if end is not None:
            chosen &= ot <= end
        idx = np.flatnonzero(chosen)
        idx = idx[:limit] if start is not None else idx[-limit:]
        if start is not None and quirks.overlap_rows:
            before = np.flatnonzero(present & (ot < start))[-quirks.overlap_rows :]
            idx = np.concatenate([before, idx])[:limit]
        newest = int(np.flatnonzero(present)[-1]) if present.any() else -1
        rows = []
        for i in (int(j) for j in idx):
            live = min(1.0, (now - int(ot[i])) / s.step_ms)
            if quirks.partial_last and i == newest:
                frac = live if live < 1.0 else 0.5
                rows.append(s.kline(i, frac, close_time=int(ot[i]) + int(frac * s.step_ms)))
            else:
                rows.append(s.kline(i, live))
        return rows + rows if quirks.duplicate_pages else rows

    def _funding_rows(self, s: Series, now: int) -> list[tuple[int, str, str]]:
        """Every settlement (fundingTime ms, rate, mark price) from the data's start to now."""
        first = -(-int(s.open_time[0]) // FUNDING_EVERY_MS) * FUNDING_EVERY_MS
        last = min(now, int(s.open_time[-1]) + s.step_ms)
        out = []
        for t in range(first, last + 1, FUNDING_EVERY_MS):
            k = t // FUNDING_EVERY_MS
            rate = ((k * 7919) % 201 - 100) * 1e-6
            i = max(0, int(np.searchsorted(s.open_time, t, side="right")) - 1)
            # Real settlement stamps are sometimes a few ms late; keep that quirk.
            out.append((t + k % 3, f"{rate:.8f}", fmt(float(s.values[i, 3]))))
        return out

    def _funding(self, params: dict[str, str]) -> list[dict[str, Any]]:
        symbol, s = self._symbol_series("um", params)
        limit = _int_param(params, "limit", 100)
        if not 1 <= limit <= 1000:
            raise _BadRequestError(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = _int_param(params, "startTime", None), _int_param(params, "endTime", None)
        now, _ = self._state()
        rows = [
            r
            for r in self._funding_rows(s, now)
            if (start is None or r[0] >= start) and (end is None or r[0] <= end)
        ]
        rows = rows[:limit] if start is not None else rows[-limit:]
        return [
            {"symbol": symbol, "fundingTime": t, "fundingRate": rate, "markPrice": mark}
            for t, rate, mark in rows
        ]

    @staticmethod
    def _oi_at(t: int) -> float:
        return round(80_000 + 10_000 * float(np.sin(2 * np.pi * t / 86_400_000)), 3)

    def _open_interest(self, params: dict[str, str]) -> dict[str, Any]:
        symbol, _ = self._symbol_series("um", params)
        now, _ = self._state()
        return {"openInterest": fmt(self._oi_at(now)), "symbol": symbol, "time": now}

    def _open_interest_hist(self, params: dict[str, str]) -> list[dict[str, Any]]:
        symbol, s = self._symbol_series("um", params)
        period = params.get("period", "")
        if period not in OI_PERIODS:
            raise _BadRequestError(-1120, "Invalid period.")
        limit = _int_param(params, "limit", 30)
        if not 1 <= limit <= 500:
            raise _BadRequestError(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = _int_param(params, "startTime", None), _int_param(params, "endTime", None)
        now, _ = self._state()
        step = INTERVAL_SECONDS[period] * 1000
        first = -(-int(s.open_time[0]) // step) * step
        last = min(now, int(s.open_time[-1]) + s.step_ms)
        times = [
            t
            for t in range(first, last + 1, step)
            if (start is None or t >= start) and (end is None or t <= end)
        ]
        times = times[:limit] if start is not None else times[-limit:]
        out = []
        for t in times:
            i = max(0, int(np.searchsorted(s.open_time, t, side="right")) - 1)
            oi = self._oi_at(t)
            value = round(oi * float(s.values[i, 3]), 8)
            out.append(
                {
                    "symbol": symbol,
                    "sumOpenInterest": fmt(oi),
                    "sumOpenInterestValue": fmt(value),
                    "timestamp": t,
                }
            )
        return out

    def _window(self, s: Series, now: int) -> list[list[Any]]:
        """Klines (the live one partial) opened in the 24 hours up to now."""
        ot = s.open_time
        idx = np.flatnonzero((ot <= now) & (ot > now - 86_400_000))
        if idx.size == 0:
            idx = np.array([max(0, int(np.searchsorted(ot, now, side="right")) - 1)])
        return [s.kline(int(i), min(1.0, (now - int(ot[i])) / s.step_ms)) for i in idx]

    def _premium_index(self, params: dict[str, str]) -> dict[str, Any]:
        symbol, s = self._symbol_series("um", params)
        now, _ = self._state()
        mark = float(self._window(s, now)[-1][4])
        index = round(mark * 0.9998, 8)
        settled = [r for r in self._funding_rows(s, now) if r[0] <= now]
        return {
            "symbol": symbol,
            "markPrice": fmt(mark),
            "indexPrice": fmt(index),
            "estimatedSettlePrice": fmt(index),
            "lastFundingRate": settled[-1][1] if settled else "0.00010000",
            "interestRate": "0.00010000",
            "nextFundingTime": (now // FUNDING_EVERY_MS + 1) * FUNDING_EVERY_MS,
            "time": now,
        }

    def _ticker_24h(self, market: Market, params: dict[str, str]) -> dict[str, Any]:
        symbol, s = self._symbol_series(market, params)
        now, _ = self._state()
        bars = self._window(s, now)
        o, c = float(bars[0][1]), float(bars[-1][4])
        volume = round(sum(float(b[5]) for b in bars), 8)
        quote = round(sum(float(b[7]) for b in bars), 8)
        out: dict[str, Any] = {
            "symbol": symbol,
            "priceChange": fmt(round(c - o, 8)),
            "priceChangePercent": f"{(c - o) / o * 100:.3f}",
            "weightedAvgPrice": fmt(round(quote / volume, 8) if volume else c),
        }
        if market == "spot":
            out["prevClosePrice"] = fmt(o)
        out |= {"lastPrice": fmt(c), "lastQty": "0.01000000"}
        if market == "spot":
            bid, ask = _book(c)
            out |= {"bidPrice": bid, "bidQty": "1.50000000", "askPrice": ask, "askQty": "2.0"}
        return out | {
            "openPrice": fmt(o),
            "highPrice": fmt(max(float(b[2]) for b in bars)),
            "lowPrice": fmt(min(float(b[3]) for b in bars)),
            "volume": fmt(volume),
            "quoteVolume": fmt(quote),
            "openTime": now - 86_400_000,
            "closeTime": now,
            "firstId": 1,
            "lastId": 1 + sum(int(b[8]) for b in bars),
            "count": sum(int(b[8]) for b in bars),
        }

    def _book_ticker(self, market: Market, params: dict[str, str]) -> dict[str, Any]:
        symbol, s = self._symbol_series(market, params)
        now, _ = self._state()
        bid, ask = _book(float(self._window(s, now)[-1][4]))
        out: dict[str, Any] = {
            "symbol": symbol,
            "bidPrice": bid,
            "bidQty": "1.50000000",
            "askPrice": ask,
            "askQty": "2.00000000",
        }
        if market == "um":
            out |= {"time": now, "lastUpdateId": now // 1000}
        return out


class _BadRequestError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _int_param(params: dict[str, str], name: str, default: int | None) -> Any:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise _BadRequestError(-1100, f"Illegal characters found in parameter '{name}'.")
    return int(raw)


def _book(last: float) -> tuple[str, str]:
    """A one-tick spread around ``last``."""
    return fmt(round(last - 0.01, 8)), fmt(round(last + 0.01, 8))


@pytest.fixture
def fake_exchange() -> Iterator[FakeExchange]:
    """A started ``FakeExchange`` on a free loopback port, stopped after the test."""
    with FakeExchange() as fake:
        yield fake
