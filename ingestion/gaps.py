"""Gap reports: for each stored series, its span, expected vs present candles, and each hole.

Exchange outages are real: a gap is reported, never filled with invented candles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from storage.candles import CandleRepository
from storage.intervals import interval_seconds


@dataclass(frozen=True)
class Gap:
    """Missing candles from ``start`` to ``end`` inclusive (bar open times, unix seconds)."""

    start: int
    end: int
    missing: int


@dataclass(frozen=True)
class SeriesGapReport:
    coin: str
    interval: str
    first_ts: int
    last_ts: int
    expected: int
    present: int
    missing: int
    gaps: list[Gap] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def holes_to_gaps(holes: list[tuple[int, int]], step: int) -> list[Gap]:
    """Turn (last present, next present) pairs into inclusive missing ranges."""
    return [Gap(a + step, b - step, (b - a) // step - 1) for a, b in holes]


def gap_report(
    session: Session, coin: str | None = None, interval: str | None = None
) -> list[SeriesGapReport]:
    """The gap report of every stored series matching the optional filters."""
    repo = CandleRepository(session)
    reports = []
    for cov in repo.coverage(coin, interval):
        step = interval_seconds(cov.interval)
        gaps = holes_to_gaps(repo.holes(cov.coin, cov.interval), step)
        expected = (cov.last_ts - cov.first_ts) // step + 1
        reports.append(
            SeriesGapReport(
                coin=cov.coin,
                interval=cov.interval,
                first_ts=cov.first_ts,
                last_ts=cov.last_ts,
                expected=expected,
                present=cov.count,
                missing=expected - cov.count,
                gaps=gaps,
            )
        )
    return reports


@dataclass(frozen=True)
class RangeGapReport:
    """Expected vs present candles of one series over a requested range, and every hole.

    Unlike ``SeriesGapReport`` (the stored span), the range's own ends count: bars missing
    before the first stored bar or after the last are gaps too.
    """

    coin: str
    interval: str
    start: int  # first expected bar open time (unix seconds)
    end: int  # last expected bar open time
    expected: int
    present: int
    missing: int
    gaps: list[Gap] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def range_gap_report(
    session: Session, coin: str, interval: str, start: int, end: int
) -> RangeGapReport:
    """Which bars with open time in ``[start, end]`` (aligned to the interval) are missing."""
    step = interval_seconds(interval)
    first_bar = -(-start // step) * step
    last_bar = end // step * step
    expected = max(0, (last_bar - first_bar) // step + 1)
    repo = CandleRepository(session)
    oldest = repo.frame(coin, interval, start=first_bar, end=last_bar, limit=1)
    newest = repo.frame(coin, interval, start=first_bar, end=last_bar, limit=1, newest_first=True)
    if oldest.empty or expected == 0:
        gaps = [Gap(first_bar, last_bar, expected)] if expected else []
    else:
        lo, hi = int(oldest["ts"].iloc[0]), int(newest["ts"].iloc[0])
        inner = holes_to_gaps(repo.holes(coin, interval, start=lo, end=hi), step)
        gaps = [
            *([Gap(first_bar, lo - step, (lo - first_bar) // step)] if lo > first_bar else []),
            *inner,
            *([Gap(hi + step, last_bar, (last_bar - hi) // step)] if hi < last_bar else []),
        ]
    missing = sum(g.missing for g in gaps)
    return RangeGapReport(
        coin, interval, first_bar, last_bar, expected, expected - missing, missing, gaps
    )
