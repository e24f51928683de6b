"""Bar intervals: the names squall accepts and their length in seconds.

Every interval here divides a UTC day evenly, so a bar's open time ``ts`` is aligned
exactly when ``ts % seconds == 0`` (unix time has no leap seconds). Weekly and monthly
bars are not epoch-aligned and are deliberately not offered.
"""

from __future__ import annotations

INTERVAL_SECONDS: dict[str, int] = {
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1_800,
    "1h": 3_600,
    "2h": 7_200,
    "4h": 14_400,
    "6h": 21_600,
    "8h": 28_800,
    "12h": 43_200,
    "1d": 86_400,
}


def interval_seconds(interval: str) -> int:
    """Length of ``interval`` in seconds; ``ValueError`` naming the valid ones otherwise."""
    try:
        return INTERVAL_SECONDS[interval]
    except KeyError:
        valid = ", ".join(INTERVAL_SECONDS)
        raise ValueError(f"unknown interval {interval!r}; valid intervals: {valid}") from None


def periods_per_year(interval: str) -> float:
    """Bars in a 365-day year (crypto trades 24/7)."""
    return 365 * 86_400 / interval_seconds(interval)
