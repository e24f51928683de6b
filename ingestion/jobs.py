"""Ingestion jobs: one unit of work per (coin, interval) candle series or per coin's derivatives.

A job never trusts memory for where it is: every run reads the series' last stored candle
(the cursor) from the database, fetches from a little before it (overlap) up to now, and
upserts page by page, each page its own transaction. Killing a job anywhere leaves whole pages
only, and the idempotent upsert makes the overlap harmless: no duplicates, no holes.
A candle job writes only into a series its provider's source owns (``storage.series``): a
series of another source makes every run fail with ``SourceConflictError`` before anything is
fetched, which the job's stats (and so ``/health``) report as its ``last_error``.
Jobs are plain objects (no Ray, no asyncio) so they can be tested directly; the supervisor
actor schedules them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ingestion.providers.base import Provider
from storage.candles import CandleRepository
from storage.derivatives import FundingRepository, OpenInterestRepository
from storage.engine import transaction
from storage.intervals import interval_seconds
from storage.series import SeriesRepository
from storage.snapshots import SnapshotRepository

Clock = Callable[[], float]


@dataclass
class JobStats:
    """What a job has done and whether it is keeping up; served by ``/health``."""

    job: str
    kind: str
    coin: str
    interval: str | None
    last_run_ts: int | None = None
    last_success_ts: int | None = None
    last_error: str | None = None
    last_error_ts: int | None = None
    consecutive_failures: int = 0
    runs: int = 0
    written_total: int = 0
    written_last_run: int = 0
    latest_ts: int | None = None
    age_s: float | None = None
    allowed_age_s: float | None = None
    stalled_by_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stalled(self) -> bool:
        return self.stalled_by_s > 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stalled"] = self.stalled
        return data


class Job:
    """Base: run bookkeeping shared by every job kind."""

    kind = "job"

    def __init__(
        self,
        name: str,
        coin: str,
        interval: str | None,
        clock: Clock,
        write_guard: AbstractContextManager[Any] | None = None,
    ) -> None:
        self.clock = clock
        self.write_guard = write_guard if write_guard is not None else contextlib.nullcontext()
        self.started_at = int(clock())
        self.stats = JobStats(job=name, kind=self.kind, coin=coin, interval=interval)

    def period_s(self) -> float:
        """How often the job should run."""
        raise NotImplementedError

    def next_due(self, now: float, delay_s: float = 0.0) -> float:
        """Wall time of the next run after a successful one at ``now``."""
        return now + self.period_s() + delay_s

    def _work(self, now: int) -> int:
        raise NotImplementedError

    def refresh_lag(self, now: int) -> None:
        """Recompute the stall fields from the stored data (no provider call)."""

    def run_once(self) -> int:
        """Do one run; record success or failure in the stats. Returns rows written."""
        now = int(self.clock())
        self.stats.last_run_ts = now
        self.stats.runs += 1
        try:
            written = self._work(now)
        except Exception as exc:
            self.stats.consecutive_failures += 1
            self.stats.last_error = f"{exc.__class__.__name__}: {exc}"[:500]
            self.stats.last_error_ts = now
            self.stats.written_last_run = 0
            self.refresh_lag(int(self.clock()))
            raise
        self.stats.consecutive_failures = 0
        self.stats.last_success_ts = int(self.clock())
        self.stats.written_last_run = written
        self.stats.written_total += written
        self.refresh_lag(int(self.clock()))
        return written


class CandleJob(Job):
    """Keeps one (coin, interval) candle series up to date."""

    kind = "candles"

    def __init__(
        self,
        provider: Provider,
        sessions: sessionmaker[Session],
        coin: str,
        interval: str,
        *,
        backfill_s: int,
        overlap_bars: int = 2,
        page_bars: int = 1000,
        grace_s: float = 90.0,
        clock: Clock = time.time,
        write_guard: AbstractContextManager[Any] | None = None,
    ) -> None:
        super().__init__(f"candles:{coin}:{interval}", coin, interval, clock, write_guard)
        self.provider = provider
        self.sessions = sessions
        self.coin = coin
        self.interval = interval
        self.step = interval_seconds(interval)
        self.backfill_s = backfill_s
        self.overlap_bars = overlap_bars
        self.page_bars = page_bars
        self.grace_s = grace_s
        #: candles newly stored by the last run (kept apart from the stats ``/health`` serves:
        #: the supervisor's ``candles_inserted_total`` counter adds it up)
        self.inserted_last_run = 0

    def period_s(self) -> float:
        return float(self.step)

    def next_due(self, now: float, delay_s: float = 2.0) -> float:
        """Wall time of the next bar close plus a small delay for the exchange to publish."""
        return (now // self.step + 1) * self.step + delay_s

    def cursor(self) -> int | None:
        """The last stored bar's open time, read from the database."""
        with self.sessions() as session:
            return CandleRepository(session).latest_ts(self.coin, self.interval)

    def _work(self, now: int) -> int:
        self.inserted_last_run = 0  # pages commit one by one: a failed run may still add some
        with self.sessions() as session:  # refuse before fetching; the upsert checks again
            SeriesRepository(session).check(self.coin, self.interval, self.provider.source)
        latest = self.cursor()
        last_closed = (now // self.step - 1) * self.step  # open time of the newest closed bar
        if latest is None:
            start = (now - self.backfill_s) // self.step * self.step
        else:
            start = max(latest - self.overlap_bars * self.step, 0)
        written = 0
        while start <= last_closed:
            end = min(start + (self.page_bars - 1) * self.step, last_closed)
            frame = self.provider.fetch_candles(self.coin, self.interval, start, end, now=now)
            if not frame.empty:
                with self.write_guard, transaction(self.sessions) as session:
                    result = CandleRepository(session).upsert(frame, now=now)
                written += result.inserted + result.updated
                self.inserted_last_run += result.inserted
            start = end + self.step
        return written

    def refresh_lag(self, now: int) -> None:
        latest = self.cursor()
        self.stats.latest_ts = latest
        self.stats.allowed_age_s = self.step + self.grace_s
        if latest is None:
            self.stats.age_s = None
            self.stats.stalled_by_s = (
                0.0 if self.stats.consecutive_failures == 0 else float(self.step)
            )
            return
        # age since the newest stored bar closed; a healthy series is at most one bar behind
        self.stats.age_s = float(now - (latest + self.step))
        self.stats.stalled_by_s = max(0.0, self.stats.age_s - self.stats.allowed_age_s)


class DerivativesJob(Job):
    """Per coin: a market snapshot, funding settlements and open interest."""

    kind = "derivatives"

    def __init__(
        self,
        provider: Provider,
        sessions: sessionmaker[Session],
        coin: str,
        *,
        period_s: float = 60.0,
        backfill_s: int = 30 * 86400,
        grace_s: float = 120.0,
        funding_every_s: int = 8 * 3600,
        open_interest_every_s: int = 3600,
        clock: Clock = time.time,
        write_guard: AbstractContextManager[Any] | None = None,
    ) -> None:
        super().__init__(f"derivatives:{coin}", coin, None, clock, write_guard)
        self.funding_every_s = funding_every_s
        self.open_interest_every_s = open_interest_every_s
        self.provider = provider
        self.sessions = sessions
        self.coin = coin
        self._period = period_s
        self.backfill_s = backfill_s
        self.grace_s = grace_s

    def period_s(self) -> float:
        return self._period

    def _work(self, now: int) -> int:
        snapshot = self.provider.fetch_snapshot(self.coin, now=now)
        with self.sessions() as session:
            funding_from = FundingRepository(session).latest_ts(self.coin)
            oi_from = OpenInterestRepository(session).latest_ts(self.coin)
        default_start = now - self.backfill_s
        # history points arrive every 8 h (funding) / hour (open interest): ask only when a new
        # one can exist, from the last stored point (an overlap the upsert absorbs)
        funding = None
        if funding_from is None or now >= funding_from + self.funding_every_s:
            start = default_start if funding_from is None else funding_from
            funding = self.provider.fetch_funding(self.coin, start, now, now=now)
        oi = None
        if oi_from is None or now >= oi_from + self.open_interest_every_s:
            start = default_start if oi_from is None else oi_from
            oi = self.provider.fetch_open_interest(self.coin, start, now, now=now)
        with self.write_guard, transaction(self.sessions) as session:
            written = SnapshotRepository(session).upsert([snapshot], now=now)
            if funding is not None and not funding.empty:
                written += FundingRepository(session).upsert(funding, now=now)
            if oi is not None and not oi.empty:
                written += OpenInterestRepository(session).upsert(oi, now=now)
        self.stats.latest_ts = int(snapshot["ts"])
        return written

    def refresh_lag(self, now: int) -> None:
        self.stats.allowed_age_s = self._period + self.grace_s
        reference = self.stats.last_success_ts or self.started_at
        self.stats.age_s = float(now - reference)
        self.stats.stalled_by_s = max(0.0, self.stats.age_s - self.stats.allowed_age_s)
