"""BinanceProvider against the fake exchange over real HTTP on 127.0.0.1.

Expected values come from outside the provider: the kline file read directly with pandas, or
the fake's raw JSON fetched with a plain ``httpx.get`` and its strings parsed with ``float``.
Timing assertions read the fake's request log (``time.monotonic()`` at arrival, the same clock
as this process). Backoff bases are tiny so that the whole module runs in seconds.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from ingestion.providers import binance_wire as wire
from ingestion.providers.base import FUNDING_COLUMNS, OPEN_INTEREST_COLUMNS, Provider
from ingestion.providers.binance import BinanceProvider, closed_klines
from ingestion.providers.http import backoff_delay
from storage.columns import CANDLE_COLUMNS
from storage.errors import (
    ConfigurationError,
    DataIntegrityError,
    RateLimitedError,
    TemporaryExchangeError,
)
from storage.snapshots import SNAPSHOT_FIELDS
from storage.validation import prepare_candles
from tests.fakes import exchange
from tests.fakes.exchange import DEFAULT_FILE, FakeExchange

fake_exchange = exchange.fake_exchange  # the fixture: a started fake on a loopback port

T0 = 1_640_995_200  # 2022-01-01 00:00 UTC, the first bar of the fake's BTCUSDT 1h data
H = 3_600
N_BARS = 744  # January 2022 in hours
END = T0 + (N_BARS - 1) * H
FAR_FUTURE = 4_102_444_800  # 2100-01-01


def make_provider(fake: FakeExchange, **overrides: Any) -> BinanceProvider:
    """A provider pointed at the fake, with short timeouts and tiny backoff."""
    options: dict[str, Any] = {
        "timeout_s": 2.0,
        "max_retries": 3,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "requests_per_second": 1000.0,
        "klines_page_limit": 100,
    }
    options.update(overrides)
    return BinanceProvider(fake.base_url, fake.base_url, **options)


@pytest.fixture
def provider(fake_exchange: FakeExchange) -> Any:
    p = make_provider(fake_exchange)
    yield p
    p.close()


def kline_requests(fake: FakeExchange) -> list[Any]:
    return [r for r in fake.requests if r.path.endswith("/klines")]


def read_kline_file(path: Path) -> pd.DataFrame:
    """The raw 12-column file, independently of squall's importer."""
    raw = pd.read_csv(path)
    return pd.DataFrame(
        {
            "ts": raw["Opentime"].to_numpy(np.int64) // 1000,
            "open": raw["Open"],
            "high": raw["High"],
            "low": raw["Low"],
            "close": raw["Close"],
            "volume_base": raw["Volume"],
            "volume_quote": raw["Quote asset volume"],
            "trade_count": raw["Number of trades"].astype(np.float64),
        }
    )


def assert_contiguous(frame: pd.DataFrame, first: int, last: int) -> None:
    ts = frame["ts"].to_numpy()
    assert ts[0] == first and ts[-1] == last
    assert (np.diff(ts) == H).all()


# --------------------------------------------------------------------------- candles


@pytest.mark.realdata
def test_multi_page_range_equals_the_file(
    fake_exchange: FakeExchange, provider: BinanceProvider, shared_data: Path
) -> None:
    frame = provider.fetch_candles("BTC", "1h", T0, END, now=FAR_FUTURE)
    expected = read_kline_file(shared_data / DEFAULT_FILE)
    assert list(frame.columns) == list(CANDLE_COLUMNS)
    assert len(frame) == len(expected) == N_BARS
    for col in expected.columns:
        np.testing.assert_array_equal(frame[col].to_numpy(), expected[col].to_numpy(), col)
    assert set(frame["coin"]) == {"BTC"} and set(frame["interval"]) == {"1h"}
    assert set(frame["source"]) == {"binance:spot"}
    assert_contiguous(frame, T0, END)
    # 100 rows a page with one bar of overlap: ceil(743 / 99) = 8 pages.
    assert len(kline_requests(fake_exchange)) == 8
    starts = [int(r.params["startTime"]) // 1000 for r in kline_requests(fake_exchange)]
    assert starts == [T0 + k * 99 * H for k in range(8)]
    pd.testing.assert_frame_equal(prepare_candles(frame), frame)


def test_subrange_bounds_are_inclusive_and_page_limit_default(
    fake_exchange: FakeExchange,
) -> None:
    with make_provider(fake_exchange, klines_page_limit=None) as p:
        frame = p.fetch_candles("btc", "1h", T0 + 10 * H + 1, T0 + 20 * H, now=FAR_FUTURE)
        whole = p.fetch_candles("BTC", "1h", T0, END, now=FAR_FUTURE)
    assert_contiguous(frame, T0 + 11 * H, T0 + 20 * H)
    assert len(whole) == N_BARS
    assert [r.params["limit"] for r in kline_requests(fake_exchange)] == ["1000", "1000"]
    assert isinstance(p, Provider)


@pytest.mark.parametrize("quirk", ["duplicate", "overlap"])
def test_duplicated_or_overlapping_pages_still_exact(
    fake_exchange: FakeExchange, provider: BinanceProvider, quirk: str
) -> None:
    clean = provider.fetch_candles("BTC", "1h", T0 + 5 * H, END, now=FAR_FUTURE)
    if quirk == "duplicate":
        fake_exchange.duplicate_pages()
    else:
        fake_exchange.overlap_pages(7)
    messy = provider.fetch_candles("BTC", "1h", T0 + 5 * H, END, now=FAR_FUTURE)
    pd.testing.assert_frame_equal(messy, clean)
    assert_contiguous(messy, T0 + 5 * H, END)
    # The quirk really happened: some page held rows the client had to drop.
    raw = httpx.get(
        fake_exchange.base_url + "/api/v3/klines",
        params={"symbol": "BTCUSDT", "interval": "1h", "startTime": (T0 + 50 * H) * 1000},
    ).json()
    opens = [row[0] // 1000 for row in raw]
    assert len(opens) != len(set(opens)) or min(opens) < T0 + 50 * H


def test_outage_window_is_skipped_and_the_call_terminates(
    fake_exchange: FakeExchange, provider: BinanceProvider
) -> None:
    a, b = T0 + 150 * H, T0 + 160 * H
    fake_exchange.outage(a * 1000, b * 1000)
    frame = provider.fetch_candles("BTC", "1h", T0, END, now=FAR_FUTURE)
    ts = frame["ts"].to_numpy()
    assert len(frame) == N_BARS - 10
    assert not ((ts >= a) & (ts < b)).any()
    expected = np.concatenate([np.arange(T0, a, H), np.arange(b, END + 1, H)])
    np.testing.assert_array_equal(ts, expected)
    # Starting inside the outage: Binance skips ahead to the next bars.
    after = provider.fetch_candles("BTC", "1h", a + 2 * H, END, now=FAR_FUTURE)
    assert_contiguous(after, b, END)


def test_empty_and_short_pages_move_forward_instead_of_stopping(
    fake_exchange: FakeExchange, provider: BinanceProvider
) -> None:
    # A venue answering only [startTime, startTime + 100 bars): the outage gives a short
    # page, then empty pages; the walk must step over them and find the bars after.
    fake_exchange.windowed_pages()
    fake_exchange.outage((T0 + 150 * H) * 1000, (T0 + 420 * H) * 1000)
    frame = provider.fetch_candles("BTC", "1h", T0, END, now=FAR_FUTURE)
    expected = np.concatenate([np.arange(T0, T0 + 150 * H, H), np.arange(T0 + 420 * H, END + 1, H)])
    np.testing.assert_array_equal(frame["ts"], expected)
    starts = [(int(r.params["startTime"]) // 1000 - T0) // H for r in kline_requests(fake_exchange)]
    assert starts == [0, 99, 150, 250, 350, 450, 549, 648]
    # An outage running past the end of the data: empty, and still terminates.
    fake_exchange.reset()
    fake_exchange.windowed_pages()
    fake_exchange.outage((T0 + 600 * H) * 1000, (END + 10 * H) * 1000)
    tail = provider.fetch_candles("BTC", "1h", T0 + 650 * H, END, now=FAR_FUTURE)
    assert tail.empty and list(tail.columns) == list(CANDLE_COLUMNS)
    assert len(kline_requests(fake_exchange)) == 1


def test_still_open_candle_is_never_returned(
    fake_exchange: FakeExchange, provider: BinanceProvider
) -> None:
    now_ms = (T0 + 500 * H + H // 2) * 1000  # half-way through the bar opening at 500h
    fake_exchange.set_now(now_ms)
    # The venue itself does serve the live bar, with a closeTime in the future ...
    live = provider.query_klines("BTCUSDT", "1h", limit=3)
    assert live[-1].open_time == (T0 + 500 * H) * 1000 and live[-1].close_time >= now_ms
    # ... but fetch_candles never returns it.
    frame = provider.fetch_candles("BTC", "1h", T0, END, now=now_ms // 1000)
    assert_contiguous(frame, T0, T0 + 499 * H)
    assert closed_klines(live, H * 1000, now_ms) == live[:-1]


def test_partial_last_candle_is_dropped_even_with_a_late_clock(
    fake_exchange: FakeExchange, provider: BinanceProvider
) -> None:
    fake_exchange.partial_last_candle()
    raw = provider.query_klines("BTCUSDT", "1h", limit=2)
    assert raw[-1].close_time != raw[-1].open_time + H * 1000 - 1  # served as partial
    frame = provider.fetch_candles("BTC", "1h", T0, END, now=FAR_FUTURE)
    assert_contiguous(frame, T0, END - H)
    # Live bar with a truncated closeTime, and a client clock far ahead of the venue's.
    fake_exchange.set_now((T0 + 300 * H + 600) * 1000)
    frame = provider.fetch_candles("BTC", "1h", T0, END, now=FAR_FUTURE)
    assert_contiguous(frame, T0, T0 + 299 * H)


@pytest.mark.realdata
def test_usdt_futures_1m_from_the_real_file(fake_exchange: FakeExchange, shared_data: Path) -> None:
    path = shared_data / "binance_um_AVAXUSDT_1m_2023-02_kline12.csv"
    fake_exchange.load_file("um", "AVAXUSDT", "1m", path)
    start = 1_675_209_600 + 86_400  # 2023-02-02
    with make_provider(fake_exchange, market="um", klines_page_limit=None) as p:
        frame = p.fetch_candles("AVAX", "1m", start, start + 2 * 86_400 - 60, now=FAR_FUTURE)
    raw = pd.read_csv(path)
    raw = raw[(raw["open_time"] >= start * 1000) & (raw["open_time"] < (start + 2 * 86_400) * 1000)]
    assert len(frame) == 2 * 1440
    np.testing.assert_array_equal(frame["ts"], raw["open_time"] // 1000)
    for ours, theirs in [("close", "close"), ("volume_base", "volume"), ("trade_count", "count")]:
        np.testing.assert_array_equal(frame[ours], raw[theirs].astype(np.float64))
    assert set(frame["source"]) == {"binance:um"}
    reqs = kline_requests(fake_exchange)
    assert [r.path for r in reqs] == ["/fapi/v1/klines"] * 2
    assert reqs[0].params["limit"] == "1500"


# --------------------------------------------------------------------------- errors, retries


def test_invalid_symbol_is_a_configuration_error_without_retry(
    fake_exchange: FakeExchange, provider: BinanceProvider
) -> None:
    with pytest.raises(ConfigurationError, match=r"code -1121: Invalid symbol"):
        provider.fetch_candles("NOPE", "1h", T0, END, now=FAR_FUTURE)
    assert len(fake_exchange.requests) == 1
    with pytest.raises(ConfigurationError, match="unknown interval"):
        provider.fetch_candles("BTC", "7m", T0, END)
    with pytest.raises(ConfigurationError, match="alphanumeric"):
        provider.fetch_candles("BTC/USDT", "1h", T0, END)
    assert len(fake_exchange.requests) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(
    fake_exchange: FakeExchange, provider: BinanceProvider, status: int
) -> None:
    fake_exchange.fail(3, status)
    frame = provider.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)
    assert len(frame) == 10
    assert [r.status for r in fake_exchange.requests] == [status] * 3 + [200]


def test_retry_after_is_honoured(fake_exchange: FakeExchange) -> None:
    fake_exchange.rate_limit(1, retry_after_s=0.5)
    with make_provider(fake_exchange, backoff_max_s=2.0) as p:  # waits up to 2 s for a window
        frame = p.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)
    assert len(frame) == 10
    first, second = fake_exchange.requests
    assert (first.status, second.status) == (429, 200)
    assert second.t - first.t >= 0.5


def test_retry_after_blocks_every_caller_of_the_host(fake_exchange: FakeExchange) -> None:
    fake_exchange.rate_limit(1, retry_after_s=0.6)
    provider = make_provider(fake_exchange, backoff_max_s=2.0)
    results: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: results.update(
            frame=provider.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)
        )
    )
    worker.start()
    deadline = time.monotonic() + 5
    while not (fake_exchange.requests and fake_exchange.requests[0].status == 429):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(0.05)  # the client has seen the 429 by now
    ticker = provider.query_ticker_24h("BTCUSDT")  # another caller, another endpoint
    worker.join(5)
    provider.close()
    assert len(results["frame"]) == 10 and ticker.symbol == "BTCUSDT"
    banned, *later = fake_exchange.requests
    assert banned.status == 429 and len(later) == 2
    assert all(r.t - banned.t >= 0.6 for r in later)


@pytest.mark.parametrize(("status", "retry_after"), [(429, 0.05), (418, 0.05), (429, None)])
def test_rate_limit_storm_gives_up_after_bounded_retries(
    fake_exchange: FakeExchange, status: int, retry_after: float | None
) -> None:
    fake_exchange.rate_limit(100, retry_after_s=retry_after, status=status)
    started = time.monotonic()
    with make_provider(fake_exchange, max_retries=3) as p, pytest.raises(RateLimitedError) as err:
        p.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)
    assert time.monotonic() - started < 3
    assert "failed after 4 attempts" in str(err.value)
    assert err.value.retry_after_s == retry_after
    log = fake_exchange.requests
    assert [r.status for r in log] == [status] * 4
    if retry_after is not None:
        assert all(b.t - a.t >= retry_after for a, b in itertools.pairwise(log))


def test_a_long_ban_fails_fast_and_closes_the_host(
    fake_exchange: FakeExchange, provider: BinanceProvider
) -> None:
    fake_exchange.rate_limit(1, retry_after_s=120, status=418)
    started = time.monotonic()
    for _ in range(2):
        with pytest.raises(RateLimitedError) as err:
            provider.query_ticker_24h("BTCUSDT")
        assert err.value.retry_after_s is not None and err.value.retry_after_s > 100
    assert time.monotonic() - started < 1
    assert len(fake_exchange.requests) == 1  # nothing sent inside the ban window


def test_slow_response_is_retried(fake_exchange: FakeExchange) -> None:
    fake_exchange.slow(1, delay_s=2.0)
    with make_provider(fake_exchange, timeout_s=0.3) as p:
        frame = p.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)
    assert len(frame) == 10 and len(fake_exchange.requests) == 2


def test_persistently_slow_venue_raises_within_bounded_time(fake_exchange: FakeExchange) -> None:
    fake_exchange.slow(10, delay_s=3.0)
    started = time.monotonic()
    with (
        make_provider(fake_exchange, timeout_s=0.2, max_retries=2) as p,
        pytest.raises(TemporaryExchangeError, match="timed out") as err,
    ):
        p.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)
    assert not isinstance(err.value, RateLimitedError)
    assert time.monotonic() - started < 1.5
    assert len(fake_exchange.requests) == 3


def test_venue_down_then_up(fake_exchange: FakeExchange) -> None:
    fake_exchange.down("refuse")
    with (
        make_provider(fake_exchange, max_retries=1) as p,
        pytest.raises(TemporaryExchangeError, match="connection failed"),
    ):
        p.query_ticker_24h("BTCUSDT")
    timer = threading.Timer(0.3, fake_exchange.up)
    timer.start()
    with make_provider(fake_exchange, max_retries=10, backoff_base_s=0.05, backoff_max_s=0.2) as p:
        assert p.query_ticker_24h("BTCUSDT").symbol == "BTCUSDT"
    timer.join()
    fake_exchange.down("503")
    with (
        make_provider(fake_exchange, max_retries=2) as p,
        pytest.raises(TemporaryExchangeError, match="HTTP 503"),
    ):
        p.query_ticker_24h("BTCUSDT")
    assert [r.status for r in fake_exchange.requests][-3:] == [503] * 3


def test_backoff_has_full_jitter_and_a_cap(fake_exchange: FakeExchange) -> None:
    delays: list[float] = []
    fake_exchange.fail(6, 503)
    with make_provider(
        fake_exchange,
        max_retries=6,
        backoff_base_s=0.01,
        backoff_max_s=0.04,
        sleep=delays.append,
        rng=random.Random(7),
    ) as p:
        assert p.query_ticker_24h("BTCUSDT").symbol == "BTCUSDT"
    assert len(delays) == 6
    assert all(0 <= d <= min(0.04, 0.01 * 2**k) for k, d in enumerate(delays))
    assert len(set(delays)) == 6
    rng = random.Random(1)
    draws = [backoff_delay(30, 0.5, 30.0, rng) for _ in range(200)]
    assert max(draws) <= 30.0 and min(draws) >= 0 and np.std(draws) > 5


# --------------------------------------------------------------------------- derivatives, snapshot


def raw_json(fake: FakeExchange, path: str, **params: Any) -> Any:
    response = httpx.get(fake.base_url + path, params=params, timeout=5)
    response.raise_for_status()
    return response.json()


def test_funding_rates_parse_the_venue_strings(
    fake_exchange: FakeExchange, provider: BinanceProvider
) -> None:
    frame = provider.fetch_funding("BTC", T0, END + H, now=FAR_FUTURE)
    raw = raw_json(fake_exchange, "/fapi/v1/fundingRate", symbol="BTCUSDT", startTime=0, limit=1000)
    assert list(frame.columns) == list(FUNDING_COLUMNS)
    assert len(frame) == len(raw) == 31 * 3 + 1  # every 8h, Jan 1 00:00 to Feb 1 00:00
    np.testing.assert_array_equal(frame["ts"], [r["fundingTime"] // 1000 for r in raw])
    np.testing.assert_array_equal(frame["funding_rate"], [float(r["fundingRate"]) for r in raw])
    np.testing.assert_array_equal(frame["mark_price"], [float(r["markPrice"]) for r in raw])
    assert (frame["ts"] % (8 * H) == 0).all()  # settlement stamps a few ms late are floored
    inner = provider.fetch_funding("BTC", T0 + 1, T0 + 24 * H, now=FAR_FUTURE)
    assert list(inner["ts"]) == [T0 + 8 * H, T0 + 16 * H, T0 + 24 * H]


def test_open_interest_history_parses_the_venue_strings(
    fake_exchange: FakeExchange, provider: BinanceProvider
) -> None:
    now = END + H
    frame = provider.fetch_open_interest("BTC", T0, now, now=now)
    assert list(frame.columns) == list(OPEN_INTEREST_COLUMNS)
    # 30 days of hourly points (the venue keeps no more), two windows of <= 500 points.
    assert len(frame) == 30 * 24 + 1 and frame["ts"].iloc[0] == now - 30 * 86_400
    assert len(fake_exchange.requests_to("/futures/data/openInterestHist")) == 2
    raw = raw_json(
        fake_exchange,
        "/futures/data/openInterestHist",
        symbol="BTCUSDT",
        period="1h",
        startTime=(now - 10 * H) * 1000,
        limit=500,
    )
    tail = frame.tail(len(raw))
    np.testing.assert_array_equal(tail["ts"], [r["timestamp"] // 1000 for r in raw])
    np.testing.assert_array_equal(tail["open_interest"], [float(r["sumOpenInterest"]) for r in raw])
    np.testing.assert_array_equal(
        tail["open_interest_quote"], [float(r["sumOpenInterestValue"]) for r in raw]
    )
    with pytest.raises(ConfigurationError, match="Invalid symbol"):
        provider.fetch_open_interest("ETH", T0, now, now=now)  # spot-only in the fake


def test_snapshot_combines_ticker_premium_index_and_open_interest(
    fake_exchange: FakeExchange, provider: BinanceProvider
) -> None:
    fake_exchange.set_now((T0 + 400 * H + 1234) * 1000)
    row = provider.fetch_snapshot("BTC", now=T0 + 400 * H + 1)
    ticker = raw_json(fake_exchange, "/api/v3/ticker/24hr", symbol="BTCUSDT")
    premium = raw_json(fake_exchange, "/fapi/v1/premiumIndex", symbol="BTCUSDT")
    oi = raw_json(fake_exchange, "/fapi/v1/openInterest", symbol="BTCUSDT")
    assert set(row) == set(SNAPSHOT_FIELDS)
    assert row["coin"] == "BTC" and row["ts"] == T0 + 400 * H + 1
    assert row["last_price"] == float(ticker["lastPrice"])
    assert (row["bid"], row["ask"]) == (float(ticker["bidPrice"]), float(ticker["askPrice"]))
    assert row["volume_base_24h"] == float(ticker["volume"])
    assert row["volume_quote_24h"] == float(ticker["quoteVolume"])
    assert row["mark_price"] == float(premium["markPrice"])
    assert row["index_price"] == float(premium["indexPrice"])
    assert row["funding_rate"] == float(premium["lastFundingRate"])
    assert row["open_interest"] == float(oi["openInterest"])
    assert row["source"] == "binance:spot"


def test_snapshot_of_a_coin_without_perpetual_has_no_futures_fields(
    fake_exchange: FakeExchange, provider: BinanceProvider
) -> None:
    row = provider.fetch_snapshot("ETH")
    assert len(fake_exchange.requests) == 2  # ticker, premiumIndex (one 400, not retried)
    ticker = raw_json(fake_exchange, "/api/v3/ticker/24hr", symbol="ETHUSDT")
    assert row["last_price"] == float(ticker["lastPrice"]) and row["bid"] < row["ask"]
    assert row["mark_price"] is row["index_price"] is row["funding_rate"] is None
    assert row["open_interest"] is None


def test_futures_snapshot_takes_bid_ask_from_the_book_ticker(fake_exchange: FakeExchange) -> None:
    with make_provider(fake_exchange, market="um") as p:
        row = p.fetch_snapshot("BTC")
    book = raw_json(fake_exchange, "/fapi/v1/ticker/bookTicker", symbol="BTCUSDT")
    assert (row["bid"], row["ask"]) == (float(book["bidPrice"]), float(book["askPrice"]))
    assert row["source"] == "binance:um"
    paths = [r.path for r in fake_exchange.requests]
    assert "/fapi/v1/ticker/24hr" in paths and "/api/v3/ticker/24hr" not in paths


# --------------------------------------------------------------------------- wire parsing


def test_wire_objects_parse_strings_once_and_reject_bad_shapes() -> None:
    row = [1, "1.5", "2.5", "1.0", "2.0", "10", 3_600_000, "20", 7, "5", "10", "0"]
    (kline,) = wire.parse_klines([row])
    assert (kline.open, kline.high, kline.trades, kline.close_time) == (1.5, 2.5, 7, 3_600_000)
    with pytest.raises(DataIntegrityError, match="klines"):
        wire.parse_klines([row[:5]])
    with pytest.raises(DataIntegrityError, match="not a number"):
        wire.parse_klines([[1, "x", *row[2:]]])
    with pytest.raises(DataIntegrityError, match="markPrice"):
        wire.parse_premium_index({"symbol": "BTCUSDT", "indexPrice": "1"})
    funding = wire.parse_funding_rates(
        [{"symbol": "BTCUSDT", "fundingTime": 1, "fundingRate": "0.0001", "markPrice": ""}]
    )
    assert funding[0].mark_price is None and funding[0].funding_rate == 0.0001
