"""Backfill and gap repair: fetch exactly the missing ranges of a stored series.

A series belongs to one source (``storage.series``): a provider of another source than the
series' owner is refused with ``SourceConflictError`` before anything is fetched or written,
unless a backfill is asked to ``replace_source``. A hole an exchange also has no data for (a
real outage) is recorded in ``known_gaps`` so later runs do not ask for it again; it is
reported, never filled. A source that is not an exchange (the synthetic market, a file)
cannot serve every range, so its empty answers are reported but never recorded as outages.
"""

from __future__ import annotations

import contextlib
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from ingestion.gaps import Gap, holes_to_gaps
from ingestion.providers.base import Provider
from storage.candles import CandleRepository
from storage.derivatives import KnownGapRepository
from storage.engine import transaction
from storage.intervals import interval_seconds
from storage.series import SeriesRepository, is_exchange, source_family

PAGE_BARS = 1000


@dataclass
class BackfillReport:
    """What a backfill or gap repair did."""

    coin: str
    interval: str
    source: str  # the provider's source family
    gaps_found: int = 0
    gaps_fixed: int = 0
    candles_added: int = 0
    known_gaps_skipped: int = 0
    #: holes recorded as exchange outages (only an exchange's "no data" is one)
    known_gaps_recorded: int = 0
    remaining: list[Gap] = field(default_factory=list)
    #: ``replace_source`` only: the owner before, rows rewritten and removed in the range
    previous_source: str | None = None
    replaced: int = 0
    removed: int = 0

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


def _fetch_all(
    provider: Provider, coin: str, interval: str, start: int, end: int, now: int
) -> pd.DataFrame:
    """Every page of [start, end] in memory (a replacement is written in one transaction)."""
    step = interval_seconds(interval)
    frames = []
    cursor = start
    while cursor <= end:
        page_end = min(cursor + (PAGE_BARS - 1) * step, end)
        frame = provider.fetch_candles(coin, interval, cursor, page_end, now=now)
        if not frame.empty:
            frames.append(frame)
        cursor = page_end + step
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def check_source(
    provider: Provider, sessions: sessionmaker[Session], coin: str, interval: str
) -> None:
    """Raise ``SourceConflictError`` when the series belongs to another source than the
    provider's (an early check, before fetching; the write transaction checks again)."""
    with sessions() as session:
        SeriesRepository(session).check(coin, interval, provider.source)


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
    check_source(provider, sessions, coin, interval)
    family = source_family(provider.source)
    report = BackfillReport(coin, interval, family)
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
        if not is_exchange(family):
            continue  # the synthetic market or a file lacks the range: no outage to remember
        with guard, transaction(sessions) as session:
            for hole in still:
                KnownGapRepository(session).record(
                    coin,
                    interval,
                    start=hole.start,
                    end=hole.end,
                    missing=hole.missing,
                    source=family,
                )
                report.known_gaps_recorded += 1
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
    replace_source: bool = False,
) -> BackfillReport:
    """Fetch the whole range [start, end] (idempotent), then repair what is still missing.

    A series of another source is refused before anything is fetched, unless
    ``replace_source``: then the fetched rows are written in one transaction that makes the
    provider's source the series' owner and leaves, between the first and the last fetched
    bar, exactly the fetched rows (``replaced`` / ``removed`` say how many stored rows that
    changed); rows outside that span are untouched. Nothing fetched: nothing changes.
    """
    now = int(time.time()) if now is None else now
    step = interval_seconds(interval)
    start = -(-start // step) * step
    end = min(end // step * step, (now // step - 1) * step)
    guard = write_guard if write_guard is not None else contextlib.nullcontext()
    family = source_family(provider.source)
    previous = None
    replaced = removed = 0
    if not replace_source:
        check_source(provider, sessions, coin, interval)
        added = (
            _fetch_range(provider, sessions, coin, interval, start, end, now, guard)
            if start <= end
            else 0
        )
    else:
        with sessions() as session:
            previous = SeriesRepository(session).source_of(coin, interval)
        fetched = _fetch_all(provider, coin, interval, start, end, now) if start <= end else None
        added = 0
        if fetched is not None and not fetched.empty:
            with guard, transaction(sessions) as session:
                result = CandleRepository(session).upsert(fetched, now=now, replace_source=True)
            added, replaced, removed = result.inserted, result.replaced, result.removed
        elif previous is not None and previous != family:  # nothing to replace it with
            return BackfillReport(coin, interval, family, previous_source=previous)
    report = fix_gaps(
        provider, sessions, coin, interval, start=start, end=end, now=now, write_guard=guard
    )
    report.candles_added += added
    report.previous_source, report.replaced, report.removed = previous, replaced, removed
    return report
