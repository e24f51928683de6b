"""Backfill and gap repair: fetch exactly the missing ranges of a stored series.

A hole the provider also has no data for (a real exchange outage) is recorded in
``known_gaps`` so later runs do not ask for it again; it is reported, never filled.
"""

from __future__ import annotations

import contextlib
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ingestion.gaps import Gap, holes_to_gaps
from ingestion.providers.base import Provider
from storage.candles import CandleRepository
from storage.derivatives import KnownGapRepository
from storage.engine import transaction
from storage.intervals import interval_seconds

PAGE_BARS = 1000


@dataclass
class BackfillReport:
    """What a backfill or gap repair did."""

    coin: str
    interval: str
    gaps_found: int = 0
    gaps_fixed: int = 0
    candles_added: int = 0
    known_gaps_skipped: int = 0
    remaining: list[Gap] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fetch_range(
    provider: Provider,
    sessions: sessionmaker[Session],
    coin: str,
    interval: str,
    start: int,
    end: int,
    now: int,
    guard: AbstractContextManager[Any],
) -> int:
    """Fetch [start, end] page by page, each page upserted in its own transaction."""
    step = interval_seconds(interval)
    added = 0
    cursor = start
    while cursor <= end:
        page_end = min(cursor + (PAGE_BARS - 1) * step, end)
        frame = provider.fetch_candles(coin, interval, cursor, page_end, now=now)
        if not frame.empty:
            with guard, transaction(sessions) as session:
                added += CandleRepository(session).upsert(frame, now=now).inserted
        cursor = page_end + step
    return added


def _holes(
    sessions: sessionmaker[Session], coin: str, interval: str, start: int | None, end: int | None
) -> list[Gap]:
    with sessions() as session:
        holes = CandleRepository(session).holes(coin, interval, start=start, end=end)
    return holes_to_gaps(holes, interval_seconds(interval))


def fix_gaps(
    provider: Provider,
    sessions: sessionmaker[Session],
    coin: str,
    interval: str,
    *,
    start: int | None = None,
    end: int | None = None,
    now: int | None = None,
    retry_known: bool = False,
    write_guard: AbstractContextManager[Any] | None = None,
) -> BackfillReport:
    """Find holes in the stored series (optionally within [start, end]) and fetch them."""
    now = int(time.time()) if now is None else now
    guard = write_guard if write_guard is not None else contextlib.nullcontext()
    report = BackfillReport(coin, interval)
    gaps = _holes(sessions, coin, interval, start, end)
    report.gaps_found = len(gaps)
    for gap in gaps:
        if not retry_known:
            with sessions() as session:
                if KnownGapRepository(session).covers(coin, interval, gap.start, gap.end):
                    report.known_gaps_skipped += 1
                    report.remaining.append(gap)
                    continue
        report.candles_added += _fetch_range(
            provider, sessions, coin, interval, gap.start, gap.end, now, guard
        )
        still = _holes(
            sessions,
            coin,
            interval,
            gap.start - interval_seconds(interval),
            gap.end + interval_seconds(interval),
        )
        if not still:
            report.gaps_fixed += 1
            continue
        report.remaining.extend(still)
        with guard, transaction(sessions) as session:
            for hole in still:
                KnownGapRepository(session).record(
                    coin,
                    interval,
                    start=hole.start,
                    end=hole.end,
                    missing=hole.missing,
                    source=getattr(provider, "name", "unknown"),
                )
    return report


def backfill(
    provider: Provider,
    sessions: sessionmaker[Session],
    coin: str,
    interval: str,
    *,
    start: int,
    end: int,
    now: int | None = None,
    write_guard: AbstractContextManager[Any] | None = None,
) -> BackfillReport:
    """Fetch the whole range [start, end] (idempotent), then repair what is still missing."""
    now = int(time.time()) if now is None else now
    step = interval_seconds(interval)
    start = -(-start // step) * step
    end = min(end // step * step, (now // step - 1) * step)
    guard = write_guard if write_guard is not None else contextlib.nullcontext()
    added = (
        _fetch_range(provider, sessions, coin, interval, start, end, now, guard)
        if start <= end
        else 0
    )
    report = fix_gaps(
        provider, sessions, coin, interval, start=start, end=end, now=now, write_guard=guard
    )
    report.candles_added += added
    return report
