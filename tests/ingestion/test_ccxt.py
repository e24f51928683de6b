"""CcxtProvider: a real ccxt ``binance`` exchange object, its ``urls['api']`` pointed at the fake
exchange on 127.0.0.1 (every entry, same paths), over real HTTP.

ccxt loads the venue's markets first (``load_markets``: ``exchangeInfo`` of spot, USDT-M and
COIN-M), which the fake serves from the symbols it has; fixtures load them before a test's
faults are queued (``fake.reset()`` after), so faults hit the calls under test. Expected values
come from outside the provider: the kline file read with pandas, or the fake's raw JSON fetched
with a plain ``httpx.get`` and parsed with ``float``. Timing assertions read the fake's request
log (``time.monotonic()`` at arrival, the same clock as the provider's block window).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ccxt
import httpx
import numpy as np
import pandas as pd
import pytest

from ingestion.providers.base import FUNDING_COLUMNS, OPEN_INTEREST_COLUMNS, Provider
from ingestion.providers.ccxt_provider import CcxtProvider
from storage.columns import CANDLE_COLUMNS
from storage.errors import ConfigurationError, RateLimitedError, TemporaryExchangeError
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


def fake_urls(fake: FakeExchange) -> dict[str, str]:
    """Every ``urls['api']`` entry of ccxt's binance, on the fake's host with the same path."""
    return {k: fake.base_url + urlsplit(v).path for k, v in ccxt.binance().urls["api"].items()}


def make_provider(fake: FakeExchange, **overrides: Any) -> CcxtProvider:
    """A provider on the fake: short timeouts, tiny backoff, ccxt's limiter at 1 ms a unit."""
    options: dict[str, Any] = {
        "urls": fake_urls(fake),
        "timeout_s": 2.0,
        "max_retries": 3,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "rate_limit_ms": 1,
        "ohlcv_page_limit": 100,
    }
    options.update(overrides)
    return CcxtProvider("binance", **options)


def loaded(fake: FakeExchange, **overrides: Any) -> CcxtProvider:
    """A provider whose markets are loaded, with the fake's log and faults cleared after."""
    provider = make_provider(fake, **overrides)
    assert "BTC/USDT" in provider.markets()
    fake.reset()
    return provider


@pytest.fixture
def provider(fake_exchange: FakeExchange) -> Iterator[CcxtProvider]:
    p = loaded(fake_exchange)
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
        }
    )


def assert_contiguous(frame: pd.DataFrame, first: int, last: int) -> None:
    ts = frame["ts"].to_numpy()
    assert ts[0] == first and ts[-1] == last
    assert (np.diff(ts) == H).all()


def raw_json(fake: FakeExchange, path: str, **params: Any) -> Any:
    response = httpx.get(fake.base_url + path, params=params, timeout=5)
    response.raise_for_status()
    return response.json()


# --------------------------------------------------------------------------- candles


@pytest.mark.realdata
def test_multi_page_range_equals_the_file(fake_exchange: FakeExchange, shared_data: Path) -> None:
    with make_provider(fake_exchange) as p:  # markets load on the first call
        frame = p.fetch_candles("BTC", "1h", T0, END, now=FAR_FUTURE)
        again = p.fetch_candles("BTC", "1h", T0, T0 + H, now=FAR_FUTURE)
    expected = read_kline_file(shared_data / DEFAULT_FILE)
    assert list(frame.columns) == list(CANDLE_COLUMNS)
    assert len(frame) == len(expected) == N_BARS and len(again) == 2
    for col in expected.columns:
        np.testing.assert_array_equal(frame[col].to_numpy(), expected[col].to_numpy(), col)
    # ccxt's OHLCV has no quote volume and no trade count: unknown, never estimated
    assert frame["volume_quote"].isna().all() and frame["trade_count"].isna().all()
    assert set(frame["source"]) == {"ccxt:binance:spot"}
    assert_contiguous(frame, T0, END)
    # markets loaded once (spot, USDT-M, COIN-M exchangeInfo), then 100-bar pages with one
    # bar of overlap: ceil(743 / 99) = 8 pages
    info = [r.path for r in fake_exchange.requests if r.path.endswith("/exchangeInfo")]
    assert sorted(info) == [
        "/api/v3/exchangeInfo",
        "/dapi/v1/exchangeInfo",
        "/fapi/v1/exchangeInfo",
    ]
    starts = [int(r.params["startTime"]) // 1000 for r in kline_requests(fake_exchange)][:8]
    assert starts == [T0 + k * 99 * H for k in range(8)]
    assert all(r.path == "/api/v3/klines" for r in kline_requests(fake_exchange))
    pd.testing.assert_frame_equal(prepare_candles(frame), frame)


def test_subrange_bounds_are_inclusive_and_page_limit_from_ccxt_features(
    fake_exchange: FakeExchange,
) -> None:
    with make_provider(fake_exchange, ohlcv_page_limit=None) as p:
        assert p.ohlcv_page_limit == 1000  # ccxt: binance spot fetchOHLCV limit
        frame = p.fetch_candles("btc", "1h", T0 + 10 * H + 1, T0 + 20 * H, now=FAR_FUTURE)
        whole = p.fetch_candles("BTC", "1h", T0, END, now=FAR_FUTURE)
    assert_contiguous(frame, T0 + 11 * H, T0 + 20 * H)
    assert len(whole) == N_BARS and set(frame["coin"]) == {"BTC"}
    assert [r.params["limit"] for r in kline_requests(fake_exchange)] == ["1000", "1000"]
    assert isinstance(p, Provider)


@pytest.mark.parametrize("quirk", ["duplicate", "overlap"])
def test_duplicated_or_overlapping_pages_still_exact(
    fake_exchange: FakeExchange, provider: CcxtProvider, quirk: str
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
    raw = raw_json(
        fake_exchange,
        "/api/v3/klines",
        symbol="BTCUSDT",
        interval="1h",
        startTime=(T0 + 50 * H) * 1000,
    )
    opens = [row[0] // 1000 for row in raw]
    assert len(opens) != len(set(opens)) or min(opens) < T0 + 50 * H


def test_outage_is_skipped_and_no_bar_is_invented(
    fake_exchange: FakeExchange, provider: CcxtProvider
) -> None:
    a, b = T0 + 150 * H, T0 + 160 * H
    fake_exchange.outage(a * 1000, b * 1000)
    frame = provider.fetch_candles("BTC", "1h", T0, END, now=FAR_FUTURE)
    expected = np.concatenate([np.arange(T0, a, H), np.arange(b, END + 1, H)])
    np.testing.assert_array_equal(frame["ts"], expected)
    after = provider.fetch_candles("BTC", "1h", a + 2 * H, END, now=FAR_FUTURE)
    assert_contiguous(after, b, END)


def test_empty_and_short_pages_move_forward_instead_of_stopping(
    fake_exchange: FakeExchange, provider: CcxtProvider
) -> None:
    fake_exchange.windowed_pages()
    fake_exchange.outage((T0 + 150 * H) * 1000, (T0 + 420 * H) * 1000)
    frame = provider.fetch_candles("BTC", "1h", T0, END, now=FAR_FUTURE)
    expected = np.concatenate([np.arange(T0, T0 + 150 * H, H), np.arange(T0 + 420 * H, END + 1, H)])
    np.testing.assert_array_equal(frame["ts"], expected)
    starts = [(int(r.params["startTime"]) // 1000 - T0) // H for r in kline_requests(fake_exchange)]
    assert starts == [0, 99, 150, 250, 350, 450, 549, 648]


def test_still_open_candle_is_never_returned(
    fake_exchange: FakeExchange, provider: CcxtProvider
) -> None:
    now_ms = (T0 + 500 * H + H // 2) * 1000  # half-way through the bar opening at 500h
    fake_exchange.set_now(now_ms)
    live = provider.exchange.fetch_ohlcv("BTC/USDT", "1h", (T0 + 498 * H) * 1000, 5)
    assert [row[0] for row in live][-1] == (T0 + 500 * H) * 1000  # ccxt itself returns it
    frame = provider.fetch_candles("BTC", "1h", T0, END, now=now_ms // 1000)
    assert_contiguous(frame, T0, T0 + 499 * H)
    at_close = provider.fetch_candles("BTC", "1h", T0 + 490 * H, END, now=T0 + 500 * H)
    assert_contiguous(at_close, T0 + 490 * H, T0 + 499 * H)  # the bar closing at now is in


@pytest.mark.realdata
def test_perpetual_1m_from_the_real_file(fake_exchange: FakeExchange, shared_data: Path) -> None:
    path = shared_data / "binance_um_AVAXUSDT_1m_2023-02_kline12.csv"
    fake_exchange.load_file("um", "AVAXUSDT", "1m", path)
    start = 1_675_209_600 + 86_400  # 2023-02-02
    with make_provider(fake_exchange, market="swap", ohlcv_page_limit=None) as p:
        frame = p.fetch_candles("AVAX", "1m", start, start + 2 * 86_400 - 60, now=FAR_FUTURE)
    raw = pd.read_csv(path)
    raw = raw[(raw["open_time"] >= start * 1000) & (raw["open_time"] < (start + 2 * 86_400) * 1000)]
    assert len(frame) == 2 * 1440
    np.testing.assert_array_equal(frame["ts"], raw["open_time"] // 1000)
    for ours, theirs in [("open", "open"), ("close", "close"), ("volume_base", "volume")]:
        np.testing.assert_array_equal(frame[ours], raw[theirs].astype(np.float64))
    assert set(frame["source"]) == {"ccxt:binance:swap"}
    reqs = kline_requests(fake_exchange)
    assert {r.path for r in reqs} == {"/fapi/v1/klines"}
    assert reqs[0].params["limit"] == "500" and reqs[0].params["symbol"] == "AVAXUSDT"


# --------------------------------------------------------------------------- errors, retries


def test_bad_symbol_interval_and_settings_are_clear_errors_without_requests(
    fake_exchange: FakeExchange, provider: CcxtProvider
) -> None:
    with pytest.raises(ConfigurationError, match=r"lists no spot market NOPE/USDT.*SQUALL_COINS"):
        provider.fetch_candles("NOPE", "1h", T0, END, now=FAR_FUTURE)
    with pytest.raises(ConfigurationError, match="unknown interval"):
        provider.fetch_candles("BTC", "7m", T0, END)
    with pytest.raises(ConfigurationError, match="alphanumeric"):
        provider.fetch_candles("BTC/USDT", "1h", T0, END)
    with pytest.raises(ConfigurationError, match="lists no swap market ETH/USDT:USDT"):
        loaded(fake_exchange, market="swap").fetch_candles("ETH", "1h", T0, END)
    assert fake_exchange.requests == []  # all decided from the loaded markets
    with pytest.raises(ConfigurationError, match="ccxt has no exchange 'nopex'"):
        CcxtProvider("nopex")
    with pytest.raises(ConfigurationError, match=r"no api url spot.*its keys: .*fapiPublic"):
        CcxtProvider("binance", urls={"spot": "http://127.0.0.1:1"})
    with pytest.raises(ConfigurationError, match="http"):
        CcxtProvider("binance", urls={"public": "127.0.0.1:1/api/v3"})


def test_a_symbol_the_venue_rejects_is_not_retried(fake_exchange: FakeExchange) -> None:
    # Listed in the markets but unknown to the klines endpoint: the venue's 400 -1121
    # ("Invalid symbol.") is ccxt's BadSymbol, a configuration error, sent once.
    p = loaded(fake_exchange)
    p.exchange.markets["ETH/USDT"]["id"] = "ETHXUSDT"
    with pytest.raises(ConfigurationError, match="Invalid symbol"):
        p.fetch_candles("ETH", "1h", T0, END, now=FAR_FUTURE)
    assert [r.status for r in fake_exchange.requests] == [400]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(
    fake_exchange: FakeExchange, provider: CcxtProvider, status: int
) -> None:
    fake_exchange.fail(3, status)
    frame = provider.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)
    assert len(frame) == 10
    assert [r.status for r in fake_exchange.requests] == [status] * 3 + [200]


def test_market_loading_is_retried_too(fake_exchange: FakeExchange) -> None:
    fake_exchange.fail(2, 503, path="/api/v3/exchangeInfo")
    with make_provider(fake_exchange) as p:
        assert len(p.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)) == 10
    statuses = [r.status for r in fake_exchange.requests if r.path == "/api/v3/exchangeInfo"]
    assert statuses == [503, 503, 200]


def test_retry_after_is_honoured(fake_exchange: FakeExchange) -> None:
    p = loaded(fake_exchange, backoff_max_s=2.0)  # waits up to 2 s for a window
    fake_exchange.rate_limit(1, retry_after_s=0.5)
    frame = p.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)
    p.close()
    assert len(frame) == 10
    first, second = fake_exchange.requests
    assert (first.status, second.status) == (429, 200)
    assert second.t - first.t >= 0.5


def test_retry_after_blocks_every_caller(fake_exchange: FakeExchange) -> None:
    provider = loaded(fake_exchange, backoff_max_s=2.0)
    fake_exchange.rate_limit(1, retry_after_s=0.6)
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
    other = provider.fetch_candles("ETH", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)  # another caller
    worker.join(5)
    provider.close()
    assert len(results["frame"]) == 10 and len(other) == 10
    banned, *later = fake_exchange.requests
    assert banned.status == 429 and len(later) == 2
    assert all(r.t - banned.t >= 0.6 for r in later)


@pytest.mark.parametrize(("status", "retry_after"), [(429, 0.05), (418, 0.05), (429, None)])
def test_rate_limit_storm_gives_up_after_bounded_retries(
    fake_exchange: FakeExchange, status: int, retry_after: float | None
) -> None:
    p = loaded(fake_exchange, max_retries=3)
    fake_exchange.rate_limit(100, retry_after_s=retry_after, status=status)
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as err:
        p.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)
    assert time.monotonic() - started < 3
    assert "failed after 4 attempts" in str(err.value)
    assert err.value.retry_after_s == retry_after
    log = fake_exchange.requests
    assert [r.status for r in log] == [status] * 4
    if retry_after is not None:
        assert all(b.t - a.t >= retry_after for a, b in itertools.pairwise(log))


def test_a_long_ban_fails_fast_and_closes_the_exchange(
    fake_exchange: FakeExchange, provider: CcxtProvider
) -> None:
    fake_exchange.rate_limit(1, retry_after_s=120, status=418)
    started = time.monotonic()
    for _ in range(2):
        with pytest.raises(RateLimitedError) as err:
            provider.fetch_snapshot("BTC")
        assert err.value.retry_after_s is not None and err.value.retry_after_s > 100
    assert time.monotonic() - started < 1
    assert len(fake_exchange.requests) == 1  # nothing sent inside the ban window


def test_slow_response_is_retried(fake_exchange: FakeExchange) -> None:
    p = loaded(fake_exchange, timeout_s=0.3)
    fake_exchange.slow(1, delay_s=2.0)
    frame = p.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)
    p.close()
    assert len(frame) == 10 and len(fake_exchange.requests) == 2


def test_venue_down_then_up(fake_exchange: FakeExchange) -> None:
    p = loaded(fake_exchange, max_retries=1)
    fake_exchange.down("refuse")
    with pytest.raises(TemporaryExchangeError, match="NetworkError") as err:
        p.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)
    assert not isinstance(err.value, RateLimitedError)
    timer = threading.Timer(0.3, fake_exchange.up)
    timer.start()
    patient = loaded(fake_exchange, max_retries=10, backoff_base_s=0.05, backoff_max_s=0.2)
    assert len(patient.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)) == 10
    timer.join()
    fake_exchange.down("503")
    with pytest.raises(TemporaryExchangeError, match="HTTP 503"):
        p.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)
    assert [r.status for r in fake_exchange.requests][-2:] == [503] * 2


def test_backoff_has_full_jitter_and_a_cap(fake_exchange: FakeExchange) -> None:
    delays: list[float] = []
    p = loaded(
        fake_exchange,
        max_retries=6,
        backoff_base_s=0.01,
        backoff_max_s=0.04,
        sleep=delays.append,
        rng=random.Random(7),
    )
    fake_exchange.fail(6, 503)
    assert len(p.fetch_candles("BTC", "1h", T0, T0 + 9 * H, now=FAR_FUTURE)) == 10
    assert len(delays) == 6
    assert all(0 <= d <= min(0.04, 0.01 * 2**k) for k, d in enumerate(delays))
    assert len(set(delays)) == 6


def test_ccxt_limiter_spaces_requests_across_threads(fake_exchange: FakeExchange) -> None:
    # ccxt rates a binance spot klines request at 0.4 units (weight 2 of 6,000 a minute); at
    # 100 ms a unit that is >= 40 ms between requests, whichever of the eight threads sends.
    p = loaded(fake_exchange, rate_limit_ms=100, ohlcv_page_limit=100)
    threads = [
        threading.Thread(
            target=p.fetch_candles, args=("BTC", "1h", T0 + k * 100 * H, T0 + k * 100 * H + 9 * H)
        )
        for k in range(4)
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    times = sorted(r.t for r in fake_exchange.requests)
    assert len(times) == 8
    # arrival times at the fake jitter by some ms around the 40 ms the client keeps
    assert times[-1] - times[0] >= 7 * 0.040 - 0.02, np.diff(times)


# --------------------------------------------------------------------------- derivatives, snapshot


def test_funding_history_pages_and_parses_the_venue_strings(
    fake_exchange: FakeExchange,
) -> None:
    p = loaded(fake_exchange, history_page_limit=10)
    frame = p.fetch_funding("BTC", T0, END + H, now=FAR_FUTURE)
    assert len(fake_exchange.requests_to("/fapi/v1/fundingRate")) == 10  # 94 rows, 10 a page
    raw = raw_json(fake_exchange, "/fapi/v1/fundingRate", symbol="BTCUSDT", startTime=0, limit=1000)
    assert list(frame.columns) == list(FUNDING_COLUMNS)
    assert len(frame) == len(raw) == 31 * 3 + 1  # every 8h, Jan 1 00:00 to Feb 1 00:00
    np.testing.assert_array_equal(frame["ts"], [r["fundingTime"] // 1000 for r in raw])
    np.testing.assert_array_equal(frame["funding_rate"], [float(r["fundingRate"]) for r in raw])
    assert frame["mark_price"].isna().all()  # not in ccxt's unified funding history
    assert (frame["ts"] % (8 * H) == 0).all()  # settlement stamps a few ms late are floored
    assert set(frame["source"]) == {"ccxt:binance:spot"} and set(frame["coin"]) == {"BTC"}
    inner = p.fetch_funding("BTC", T0 + 1, T0 + 24 * H, now=FAR_FUTURE)
    assert list(inner["ts"]) == [T0 + 8 * H, T0 + 16 * H, T0 + 24 * H]


def test_open_interest_history_parses_the_venue_strings(
    fake_exchange: FakeExchange, provider: CcxtProvider
) -> None:
    now = END + H
    frame = provider.fetch_open_interest("BTC", T0, now, now=now)
    reqs = fake_exchange.requests_to("/futures/data/openInterestHist")
    assert len(reqs) == 8 and {r.params["period"] for r in reqs} == {"1h"}
    assert list(frame.columns) == list(OPEN_INTEREST_COLUMNS)
    # 30 days of hourly points (Binance keeps no more), in windows of <= 100 points
    assert len(frame) == 30 * 24 + 1 and frame["ts"].iloc[0] == now - 30 * 86_400
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


def test_a_coin_without_perpetual_gives_empty_history_and_a_reason(
    fake_exchange: FakeExchange, provider: CcxtProvider
) -> None:
    funding = provider.fetch_funding("ETH", T0, END, now=FAR_FUTURE)
    oi = provider.fetch_open_interest("ETH", T0, END, now=END)
    assert funding.empty and list(funding.columns) == list(FUNDING_COLUMNS)
    assert oi.empty and list(oi.columns) == list(OPEN_INTEREST_COLUMNS)
    assert provider.unsupported["funding:ETH"] == "binance lists no perpetual ETH/USDT:USDT"
    assert "open_interest:ETH" in provider.unsupported
    row = provider.fetch_snapshot("ETH")
    assert [r.path for r in fake_exchange.requests] == ["/api/v3/ticker/24hr"]
    ticker = raw_json(fake_exchange, "/api/v3/ticker/24hr", symbol="ETHUSDT")
    assert row["last_price"] == float(ticker["lastPrice"]) and row["bid"] < row["ask"]
    assert row["mark_price"] is row["index_price"] is row["funding_rate"] is None
    assert row["open_interest"] is None


def test_exchange_without_the_capability_gives_empty_history_and_a_reason(
    fake_exchange: FakeExchange, provider: CcxtProvider
) -> None:
    provider.exchange.has = {**provider.exchange.has, "fetchFundingRateHistory": False}
    assert provider.fetch_funding("BTC", T0, END, now=FAR_FUTURE).empty
    assert "no fetchFundingRateHistory" in provider.unsupported["funding:BTC"]
    assert fake_exchange.requests == []


def test_snapshot_combines_ticker_funding_rate_and_open_interest(
    fake_exchange: FakeExchange, provider: CcxtProvider
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
    assert row["source"] == "ccxt:binance:spot"


def test_swap_snapshot_takes_bid_ask_from_the_book_ticker(fake_exchange: FakeExchange) -> None:
    p = loaded(fake_exchange, market="swap")
    row = p.fetch_snapshot("BTC")
    book = raw_json(fake_exchange, "/fapi/v1/ticker/bookTicker", symbol="BTCUSDT")
    assert (row["bid"], row["ask"]) == (float(book["bidPrice"]), float(book["askPrice"]))
    assert row["source"] == "ccxt:binance:swap"
    paths = [r.path for r in fake_exchange.requests]
    assert "/fapi/v1/ticker/24hr" in paths and "/api/v3/ticker/24hr" not in paths
