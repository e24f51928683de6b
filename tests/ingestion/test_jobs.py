"""Candle jobs and gap repair on both databases, fed by the real BTC 4h file.

The file has real exchange outages (SOURCES.md: 16 missing bars in 8 runs, the longest
2018-02-08 04:00 → 2018-02-09 04:00). Jobs must store every bar the source has and invent
none. Only an exchange's "no data" is an outage worth remembering: served from the file, the
holes are reported but not recorded; served by the fake Binance (the same file on the wire),
they are recorded as known gaps.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.orm import Session, sessionmaker

from ingestion.backfill import backfill, fix_gaps
from ingestion.jobs import CandleJob
from ingestion.providers.file import FileProvider
from storage.candles import CandleRepository
from storage.derivatives import KnownGapRepository
from storage.engine import transaction
from storage.errors import TemporaryExchangeError

pytestmark = pytest.mark.realdata
H4 = 4 * 3600


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


@pytest.fixture
def provider(shared_data: Path) -> FileProvider:
    return FileProvider(
        files={("BTC", "4h"): shared_data / "binance_spot_BTCUSDT_4h_2017-2026.csv"}
    )


@pytest.fixture
def raw(shared_data: Path) -> pd.DataFrame:
    """The file read independently of squall's parser."""
    frame = pd.read_csv(shared_data / "binance_spot_BTCUSDT_4h_2017-2026.csv")
    opened = pd.to_datetime(frame["timestamp"], utc=True)
    frame["ts"] = (opened - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return frame


class Flaky:
    """Wraps a provider; fails the calls whose numbers are in ``fail_on``."""

    name = "flaky"
    source = "file"

    def __init__(self, inner: FileProvider, fail_on: set[int]) -> None:
        self.inner, self.fail_on, self.calls = inner, fail_on, 0

    def fetch_candles(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        self.calls += 1
        if self.calls in self.fail_on:
            raise TemporaryExchangeError(f"call {self.calls} failed")
        return self.inner.fetch_candles(*args, **kwargs)


def stored(sessions: sessionmaker[Session]) -> pd.DataFrame:
    with sessions() as s:
        return CandleRepository(s).frame("BTC", "4h")


def test_job_backfills_then_follows_the_clock(
    sessions: sessionmaker[Session], provider: FileProvider, raw: pd.DataFrame
) -> None:
    clock = [float(ts("2018-03-01 00:00:00"))]
    job = CandleJob(
        provider, sessions, "BTC", "4h", backfill_s=60 * 86400, page_bars=50, clock=lambda: clock[0]
    )
    job.run_once()
    frame = stored(sessions)
    expected = raw[(raw.ts >= clock[0] - 60 * 86400) & (raw.ts + H4 <= clock[0])]
    assert frame["ts"].tolist() == expected["ts"].tolist()  # outage bars absent, none invented
    assert frame["close"].tolist() == expected["close"].tolist()
    assert job.stats.written_last_run == len(expected)
    assert job.stats.latest_ts == ts("2018-02-28 20:00:00")
    assert job.stats.stalled_by_s == 0

    clock[0] += 3 * H4 + 30  # three more bars closed
    assert job.run_once() == 3
    assert stored(sessions)["ts"].iloc[-1] == ts("2018-03-01 08:00:00")
    assert job.run_once() == 0  # same page again: nothing changes


def test_killed_mid_backfill_resumes_from_the_database(
    sessions: sessionmaker[Session], provider: FileProvider, raw: pd.DataFrame
) -> None:
    now = float(ts("2018-01-01 00:00:00"))
    flaky = Flaky(provider, fail_on={3, 4})
    job = CandleJob(
        flaky,
        sessions,
        "BTC",
        "4h",
        backfill_s=90 * 86400,
        page_bars=40,  # type: ignore[arg-type]
        clock=lambda: now,
    )
    with pytest.raises(TemporaryExchangeError):
        job.run_once()  # pages 1-2 stored, page 3 failed
    partial = stored(sessions)
    assert len(partial) == 80 and job.stats.consecutive_failures == 1
    assert "call 3 failed" in (job.stats.last_error or "")
    # a brand-new job object (the restarted actor) knows nothing but the database
    fresh = CandleJob(
        flaky,
        sessions,
        "BTC",
        "4h",
        backfill_s=90 * 86400,
        page_bars=40,  # type: ignore[arg-type]
        clock=lambda: now,
    )
    with pytest.raises(TemporaryExchangeError):
        fresh.run_once()
    fresh.run_once()
    frame = stored(sessions)
    expected = raw[(raw.ts >= frame.ts.iloc[0]) & (raw.ts + H4 <= now)]
    assert frame["ts"].is_unique
    assert frame["ts"].tolist() == expected["ts"].tolist()


def test_stall_is_reported_while_the_source_fails(
    sessions: sessionmaker[Session], provider: FileProvider
) -> None:
    clock = [float(ts("2018-01-01 00:00:00"))]
    job = CandleJob(
        provider, sessions, "BTC", "4h", backfill_s=10 * 86400, grace_s=600, clock=lambda: clock[0]
    )
    job.run_once()
    job.provider = Flaky(provider, fail_on=set(range(1, 100)))  # type: ignore[assignment]
    clock[0] += 3 * H4  # the newest stored bar closed 3 bars ago
    with pytest.raises(TemporaryExchangeError):
        job.run_once()
    assert job.stats.consecutive_failures == 1
    assert job.stats.age_s == 3 * H4
    assert job.stats.allowed_age_s == H4 + 600
    assert job.stats.stalled_by_s == 3 * H4 - (H4 + 600)
    job.provider = provider  # type: ignore[assignment]
    job.run_once()
    assert job.stats.consecutive_failures == 0 and job.stats.stalled_by_s == 0


def test_gap_repair_fetches_holes_and_reports_but_never_records_file_holes(
    sessions: sessionmaker[Session], provider: FileProvider, raw: pd.DataFrame
) -> None:
    now = ts("2018-03-01 00:00:00")
    start, end = ts("2018-01-20 00:00:00"), ts("2018-02-20 00:00:00")
    full = provider.fetch_candles("BTC", "4h", start, end, now=now)
    with transaction(sessions) as s:  # store it with two holes of our own making
        CandleRepository(s).upsert(full.drop(index=[10, 11, 12, 100]))
    report = fix_gaps(provider, sessions, "BTC", "4h", now=now)
    # our two holes plus the real 2018-02-08 outage (7 bars) inside the range
    assert report.gaps_found == 3 and report.gaps_fixed == 2
    assert report.candles_added == 4
    assert [(g.start, g.end, g.missing) for g in report.remaining] == [
        (ts("2018-02-08 04:00:00"), ts("2018-02-09 04:00:00"), 7)
    ]
    assert stored(sessions)["ts"].tolist() == full["ts"].tolist()
    # a file is not an exchange: the hole it cannot fill is not remembered as an outage
    assert report.known_gaps_recorded == 0
    with sessions() as s:
        assert KnownGapRepository(s).list("BTC", "4h") == []

    again = fix_gaps(provider, sessions, "BTC", "4h", now=now)
    assert (again.gaps_found, again.known_gaps_skipped, again.candles_added) == (1, 0, 0)


def test_backfill_range(
    sessions: sessionmaker[Session], provider: FileProvider, raw: pd.DataFrame
) -> None:
    now = ts("2020-01-01 00:00:00")
    start, end = ts("2019-05-01 00:00:00"), ts("2019-06-01 00:00:00")
    report = backfill(provider, sessions, "BTC", "4h", start=start, end=end, now=now)
    expected = raw[(raw.ts >= start) & (raw.ts <= end)]
    assert report.candles_added == len(expected)
    # SOURCES.md: 2 bars missing on 2019-05-15, a real outage
    assert [g.missing for g in report.remaining] == [2]
    again = backfill(provider, sessions, "BTC", "4h", start=start, end=end, now=now)
    assert again.candles_added == 0 and again.known_gaps_recorded == 0
    assert [g.missing for g in again.remaining] == [2]
