"""One source per series through every writer: import, backfill, gap repair, the live loop.

The mixing case is the one reported: the synthetic market backfilled for BTC 1d from
2026-09-10 to 2026-12-01 (83 bars), then a real two-row file for 2026-10-01/02 imported into
the same series. Real files from ../shared/data give the real series (BTC 4h with its
2018-2020 outages; the same January 2022 BTC 1h bars in two layouts).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from ingestion.backfill import backfill, fix_gaps
from ingestion.fileimport import parse_candle_file, parse_candle_text
from ingestion.jobs import CandleJob
from ingestion.providers.binance import BinanceProvider
from ingestion.providers.synthetic import SyntheticProvider
from storage.candles import CandleRepository
from storage.derivatives import KnownGapRepository
from storage.engine import transaction
from storage.errors import SourceConflictError
from storage.series import SeriesRepository
from tests.fakes import exchange
from tests.fakes.exchange import FakeExchange

fake_exchange = exchange.fake_exchange
D, H4 = 86_400, 14_400
FAR_FUTURE = 4_102_444_800


def ts(text_: str) -> int:
    return int(datetime.fromisoformat(text_).replace(tzinfo=UTC).timestamp())


NOW = ts("2026-12-03 11:00:00")  # when the issue was reported
TWO_ROWS = (
    "timestamp,open,high,low,close,volume\n"
    "2026-10-01,114048.94,118649.1,113966.67,118594.99,20036.39516\n"
    "2026-10-02,118594.99,121022.07,118279.31,120529.35,19670.83503\n"
)


class Counting:
    """Wraps a provider and counts candle fetches (a refusal must come before any)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0
        self.name, self.source = inner.name, inner.source

    def fetch_candles(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        self.calls += 1
        return self.inner.fetch_candles(*args, **kwargs)


def synthetic() -> SyntheticProvider:
    return SyntheticProvider(seed=7, history_days=91)


def rows(engine: Engine, coin: str, interval: str) -> list[tuple[Any, ...]]:
    """Every stored row of a series, every column (the raw table)."""
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT ts, open, high, low, close, volume_base, volume_quote, trade_count, "
                    'source, ingested_at FROM candles WHERE coin = :c AND "interval" = :i '
                    "ORDER BY ts"
                ),
                {"c": coin, "i": interval},
            )
        ]


def owner(sessions: sessionmaker[Session], coin: str, interval: str) -> tuple[str, int] | None:
    with sessions() as s:
        info = SeriesRepository(s).get(coin, interval)
    return None if info is None else (info.source, info.foreign_rows)


def import_frame(sessions: sessionmaker[Session], frame: pd.DataFrame, **kw: Any) -> Any:
    with transaction(sessions) as s:
        return CandleRepository(s).upsert(frame, **kw)


@pytest.fixture
def issue_series(sessions: sessionmaker[Session]) -> None:
    """The reported state before the import: 83 synthetic BTC 1d bars."""
    report = backfill(
        synthetic(), sessions, "BTC", "1d", start=ts("2026-09-10"), end=ts("2026-12-01"), now=NOW
    )
    assert report.candles_added == 83


def two_rows() -> pd.DataFrame:
    frame = parse_candle_text(TWO_ROWS, coin="BTC", interval="1d", now_s=NOW).frame
    assert list(frame["source"]) == ["file:ohlcv6"] * 2
    return frame


# ------------------------------------------------------------------------ the issue's case


def test_import_of_a_real_file_into_the_synthetic_series_is_refused(
    issue_series: None, sessions: sessionmaker[Session], engine: Engine
) -> None:
    before = rows(engine, "BTC", "1d")
    assert [r[8] for r in before] == ["synthetic"] * 83
    with pytest.raises(SourceConflictError) as err:
        import_frame(sessions, two_rows())
    assert str(err.value).startswith(
        "BTC 1d belongs to source 'synthetic' (83 rows, 2026-09-10T00:00:00Z .. "
        "2026-12-01T00:00:00Z); refusing to write 2 rows of source 'file' (file:ohlcv6) into "
        "it: a series holds one source, and nothing was written. Remedies: use another "
        "database (SQUALL_DATABASE_URL); or keep the two apart under another coin name, e.g. "
        "SYN-BTC for the synthetic market (SQUALL_COINS) or `squall import --coin NAME`; or "
        "pass --replace-source"
    )
    assert rows(engine, "BTC", "1d") == before  # row for row, ingested_at included
    assert owner(sessions, "BTC", "1d") == ("synthetic", 0)


def test_replace_source_rewrites_exactly_the_two_overlapping_days(
    issue_series: None, sessions: sessionmaker[Session], engine: Engine
) -> None:
    before = {r[0]: r for r in rows(engine, "BTC", "1d")}
    result = import_frame(sessions, two_rows(), replace_source=True)
    assert (result.inserted, result.replaced, result.removed) == (0, 2, 0)
    after = {r[0]: r for r in rows(engine, "BTC", "1d")}
    oct1, oct2 = ts("2026-10-01"), ts("2026-10-02")
    assert after[oct1][1:6] == (114048.94, 118649.1, 113966.67, 118594.99, 20036.39516)
    assert after[oct2][1:6] == (118594.99, 121022.07, 118279.31, 120529.35, 19670.83503)
    assert after[oct1][8] == after[oct2][8] == "file:ohlcv6"
    untouched = {t: r for t, r in after.items() if t not in (oct1, oct2)}
    assert untouched == {t: r for t, r in before.items() if t not in (oct1, oct2)}
    assert len(untouched) == 81
    # the series is the file's now; the 81 synthetic bars left outside are counted, not hidden
    assert owner(sessions, "BTC", "1d") == ("file", 81)
    job = CandleJob(synthetic(), sessions, "BTC", "1d", backfill_s=90 * D, clock=lambda: NOW)
    with pytest.raises(SourceConflictError):
        job.run_once()


# ---------------------------------------------------------------- imports claim and repeat


@pytest.mark.realdata
def test_import_claims_an_empty_series_and_two_layouts_are_one_source(
    sessions: sessionmaker[Session], engine: Engine, shared_data: Path
) -> None:
    # SOURCES.md: file B (kline12, Jan 2022) equals file C (kline7) bar for bar
    kline12 = parse_candle_file(
        shared_data / "binance_spot_BTCUSDT_1h_2022-01_kline12.csv", coin="BTC", interval="1h"
    ).frame
    first = import_frame(sessions, kline12)
    assert first.inserted == 744 and owner(sessions, "BTC", "1h") == ("file", 0)
    stored = rows(engine, "BTC", "1h")
    again = import_frame(sessions, kline12)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 744)
    assert rows(engine, "BTC", "1h") == stored  # idempotent, ingested_at included
    kline7 = parse_candle_file(
        shared_data / "binance_spot_BTCUSDT_1h_2021-10_2022-11.csv", coin="BTC", interval="1h"
    ).frame
    other = import_frame(sessions, kline7)
    # the kline7 layout has no quote volume or trade count: its January bars update those
    assert (other.inserted, other.updated, other.unchanged) == (len(kline7) - 744, 744, 0)
    assert owner(sessions, "BTC", "1h") == ("file", 0)
    with pytest.raises(SourceConflictError, match="BTC 1h belongs to source 'file'"):
        backfill(synthetic(), sessions, "BTC", "1h", start=NOW - 5 * D, end=NOW, now=NOW)


# ------------------------------------------------------------------------- the live loop


def test_live_loop_refuses_a_series_of_another_source_before_fetching(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    import_frame(sessions, two_rows())
    before = rows(engine, "BTC", "1d")
    provider = Counting(synthetic())
    job = CandleJob(provider, sessions, "BTC", "1d", backfill_s=90 * D, clock=lambda: NOW)
    for _ in range(2):
        with pytest.raises(SourceConflictError):
            job.run_once()
    assert provider.calls == 0
    assert job.stats.consecutive_failures == 2 and job.stats.written_total == 0
    assert (job.stats.last_error or "").startswith(
        "SourceConflictError: BTC 1d belongs to source 'file' (2 rows, 2026-10-01T00:00:00Z .. "
        "2026-10-02T00:00:00Z); refusing to write rows of source 'synthetic'"
    )
    assert job.stats.latest_ts == ts("2026-10-02")  # the stall report still works
    assert rows(engine, "BTC", "1d") == before
    # the same market under its own name is fine
    syn = CandleJob(synthetic(), sessions, "SYN-BTC", "1d", backfill_s=10 * D, clock=lambda: NOW)
    assert syn.run_once() == 10
    assert owner(sessions, "SYN-BTC", "1d") == ("synthetic", 0)


# ------------------------------------------------------------------- gaps and outages


@pytest.fixture
def real_4h(sessions: sessionmaker[Session], shared_data: Path) -> pd.DataFrame:
    """The real BTC 4h file, imported (owner: file)."""
    frame = parse_candle_file(
        shared_data / "binance_spot_BTCUSDT_4h_2017-2026.csv", coin="BTC", interval="4h"
    ).frame
    import_frame(sessions, frame)
    return frame


@pytest.mark.realdata
def test_gap_repair_with_the_synthetic_source_on_a_real_series_is_refused(
    real_4h: pd.DataFrame, sessions: sessionmaker[Session], engine: Engine
) -> None:
    before = rows(engine, "BTC", "4h")
    provider = Counting(synthetic())
    with pytest.raises(SourceConflictError, match="BTC 4h belongs to source 'file'"):
        fix_gaps(provider, sessions, "BTC", "4h", now=NOW)
    assert provider.calls == 0
    with sessions() as s:
        assert KnownGapRepository(s).list() == []  # never asked of an exchange: no outage
    assert rows(engine, "BTC", "4h") == before


def test_holes_the_synthetic_market_cannot_serve_are_not_outages(
    sessions: sessionmaker[Session],
) -> None:
    """A synthetic series with holes older than the market's window: reported, not recorded."""
    wide = SyntheticProvider(seed=7, history_days=60)
    start = ts("2026-10-05")
    frame = wide.fetch_candles("BTC", "4h", start, start + 59 * H4, now=NOW)
    import_frame(sessions, frame.drop(index=[5, 6, 40]))
    narrow = SyntheticProvider(seed=7, history_days=30)  # its window starts after the holes
    report = fix_gaps(narrow, sessions, "BTC", "4h", now=NOW)
    assert (report.gaps_found, report.gaps_fixed, report.candles_added) == (2, 0, 0)
    assert [(g.start, g.missing) for g in report.remaining] == [
        (start + 5 * H4, 2),
        (start + 40 * H4, 1),
    ]
    assert report.known_gaps_recorded == 0
    with sessions() as s:
        assert KnownGapRepository(s).list() == []
    assert fix_gaps(wide, sessions, "BTC", "4h", now=NOW).gaps_fixed == 2  # it can serve them


def binance(fake: FakeExchange) -> BinanceProvider:
    return BinanceProvider(
        fake.base_url,
        fake.base_url,
        timeout_s=2.0,
        max_retries=1,
        backoff_base_s=0.01,
        requests_per_second=1000.0,
    )


@pytest.mark.realdata
def test_only_an_exchange_records_its_outages(
    fake_exchange: FakeExchange, sessions: sessionmaker[Session], shared_data: Path
) -> None:
    path = shared_data / "binance_spot_BTCUSDT_4h_2017-2026.csv"
    fake_exchange.load_file("spot", "BTCUSDT", "4h", path)
    with binance(fake_exchange) as provider:
        start, end = ts("2018-01-20 00:00:00"), ts("2018-02-20 00:00:00")
        report = backfill(provider, sessions, "BTC", "4h", start=start, end=end, now=NOW)
        # SOURCES.md: the exchange was down from 2018-02-08 04:00 to 2018-02-09 04:00
        assert [(g.start, g.missing) for g in report.remaining] == [(ts("2018-02-08 04:00:00"), 7)]
        assert report.known_gaps_recorded == 1
        with sessions() as s:
            (gap,) = KnownGapRepository(s).list("BTC", "4h")
        outage = (ts("2018-02-08 04:00:00"), 7, "binance:spot")
        assert (gap.start_ts, gap.missing, gap.source) == outage
        again = backfill(provider, sessions, "BTC", "4h", start=start, end=end, now=NOW)
        assert (again.candles_added, again.known_gaps_skipped) == (0, 1)
    assert owner(sessions, "BTC", "4h") == ("binance:spot", 0)


# ------------------------------------------------------------ backfill --replace-source


@pytest.mark.realdata
def test_backfill_replace_source_takes_the_fetched_span_only(
    fake_exchange: FakeExchange,
    real_4h: pd.DataFrame,
    sessions: sessionmaker[Session],
    engine: Engine,
    shared_data: Path,
) -> None:
    """Exchange bars replace the file's in the fetched range; outside it nothing changes."""
    path = shared_data / "binance_spot_BTCUSDT_4h_2017-2026.csv"
    fake_exchange.load_file("spot", "BTCUSDT", "4h", path)
    before = {r[0]: r for r in rows(engine, "BTC", "4h")}
    start, end = ts("2019-05-01 00:00:00"), ts("2019-06-01 00:00:00")
    with binance(fake_exchange) as provider:
        with pytest.raises(SourceConflictError):
            backfill(provider, sessions, "BTC", "4h", start=start, end=end, now=NOW)
        report = backfill(
            provider, sessions, "BTC", "4h", start=start, end=end, now=NOW, replace_source=True
        )
    span = [t for t in before if start <= t <= end]
    assert len(span) == 31 * 6 + 1 - 2  # SOURCES.md: two 4h bars missing on 2019-05-15
    assert (report.previous_source, report.source) == ("file", "binance:spot")
    assert (report.replaced, report.removed, report.candles_added) == (len(span), 0, 0)
    after = {r[0]: r for r in rows(engine, "BTC", "4h")}
    assert {t: r for t, r in after.items() if not start <= t <= end} == {
        t: r for t, r in before.items() if not start <= t <= end
    }
    assert {after[t][8] for t in span} == {"binance:spot"}
    assert [after[t][1:5] for t in span] == [before[t][1:5] for t in span]  # the same bars
    assert owner(sessions, "BTC", "4h") == ("binance:spot", len(before) - len(span))
