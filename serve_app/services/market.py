"""Market use cases beyond plain reads: the derivatives microstructure of one coin (funding,
open interest, basis, realized vol) from stored data. A piece that is not stored is ``None``
with a ``reason``, never an error.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from compute.indicators.registry import parse_indicator_spec
from serve_app.services.analytics import evaluate
from serve_app.services.inputs import resolve_coin
from serve_app.settings import Settings
from serve_app.timefmt import iso, parse_time
from storage.candle_reads import read_candle_columns
from storage.derivatives import FundingRepository, OpenInterestRepository
from storage.errors import ConfigurationError
from storage.intervals import interval_seconds, periods_per_year
from storage.snapshots import SnapshotRepository

NO_LIQUIDATIONS = "no provider in use reports liquidations"
YEAR_S = 365 * 86_400
ASSUMED_FUNDING_INTERVAL_S = 8 * 3_600
MIN_WINDOW_S, MAX_WINDOW_S = 3_600, 365 * 86_400
VOL_INTERVAL, VOL_DAY_BARS = "1h", 24
_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def parse_window(text: str) -> int:
    """Seconds of a duration like ``8h``, ``1d``, ``7d`` or ``3600``; 422 outside 1h..365d."""
    match = _DURATION.match(text)
    seconds = int(match[1]) * _UNIT_S[match[2].lower()] if match else None
    if seconds is None or not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        why = "it is not a duration" if seconds is None else f"it is {seconds} s"
        raise ConfigurationError(
            f"could not use window={text!r}: {why}. Give a number with a unit s, m, h, d or w "
            f"(e.g. 8h, 1d, 7d) or seconds, between 1h and 365d",
            code="invalid_window",
            parameter="window",
        )
    return seconds


def _before(end: int | None) -> str:
    return "" if end is None else f" at or before {iso(end)}"


def _funding(session: Session, coin: str, window_s: int, end: int | None) -> dict[str, Any]:
    repo = FundingRepository(session)
    latest = repo.latest(coin, end=end)
    if latest is None:
        return dict(
            available=False,
            reason=f"no funding rates stored for {coin}{_before(end)}",
            rate=None,
            ts=None,
            ts_unix=None,
            interval_s=None,
            interval_source=None,
            settlements_per_year=None,
            annualized=None,
            window_mean_rate=None,
            window_mean_annualized=None,
            window_observations=0,
        )
    recent = repo.recent_ts(coin, up_to=latest.ts, limit=11)
    inferred = len(recent) >= 2
    step = int(np.median(-np.diff(np.asarray(recent)))) if inferred else ASSUMED_FUNDING_INTERVAL_S
    per_year = YEAR_S / step
    frame = repo.frame(coin, start=latest.ts - window_s + 1, end=latest.ts)
    mean = float(frame["funding_rate"].mean())
    return dict(
        available=True,
        reason=None,
        rate=latest.funding_rate,
        ts=iso(latest.ts),
        ts_unix=latest.ts,
        interval_s=step,
        interval_source="inferred" if inferred else "assumed",
        settlements_per_year=per_year,
        annualized=latest.funding_rate * per_year,
        window_mean_rate=mean,
        window_mean_annualized=mean * per_year,
        window_observations=len(frame),
    )


def _open_interest(session: Session, coin: str, window_s: int, end: int | None) -> dict[str, Any]:
    oi = OpenInterestRepository(session)
    latest = oi.latest(coin, end=end)
    empty: dict[str, Any] = dict.fromkeys(
        (
            "open_interest",
            "open_interest_quote",
            "ts",
            "ts_unix",
            "past_open_interest",
            "past_ts",
            "past_ts_unix",
            "change",
            "change_pct",
        )
    )
    if latest is None:
        missing = f"no open interest stored for {coin}{_before(end)}"
        return dict(available=False, reason=missing, **empty)
    out = empty | {
        "open_interest": latest.open_interest,
        "ts": iso(latest.ts),
        "ts_unix": latest.ts,
        "open_interest_quote": latest.open_interest_quote,
    }
    since = latest.ts - window_s
    past = oi.latest(coin, end=since)
    reason: str | None = None
    if past is None:
        first = oi.first_ts(coin)
        reason = (
            f"no open-interest observation at or before {iso(since)} (latest - window) to "
            f"compare with; stored history starts at {iso(int(first or latest.ts))}"
        )
    else:
        out |= {
            "past_open_interest": past.open_interest,
            "past_ts": iso(past.ts),
            "past_ts_unix": past.ts,
            "change": latest.open_interest - past.open_interest,
        }
        if past.open_interest > 0:
            out["change_pct"] = out["change"] / past.open_interest * 100.0
        else:
            reason = "the past open interest is 0: no percentage change"
    return dict(available=True, reason=reason, **out)


def _basis(session: Session, coin: str, end: int | None, per_year: float) -> dict[str, Any]:
    snap = SnapshotRepository(session).latest(coin, end=end)
    reason = None
    if snap is None:
        reason = f"no market snapshot stored for {coin}{_before(end)}"
    elif snap.mark_price is None or snap.index_price is None:
        reason = f"the latest snapshot ({iso(snap.ts)}) has no mark or index price"
    if snap is None or reason is not None:
        return dict(
            available=False,
            reason=reason,
            mark_price=None if snap is None else snap.mark_price,
            index_price=None if snap is None else snap.index_price,
            ts=None if snap is None else iso(snap.ts),
            ts_unix=None if snap is None else snap.ts,
            basis_bps=None,
            annualized=None,
        )
    assert snap.mark_price is not None and snap.index_price is not None
    basis = snap.mark_price / snap.index_price - 1.0
    return dict(
        available=True,
        reason=None,
        mark_price=snap.mark_price,
        index_price=snap.index_price,
        ts=iso(snap.ts),
        ts_unix=snap.ts,
        basis_bps=basis * 1e4,
        annualized=basis * per_year,
    )


def _volatility(session: Session, coin: str, window_s: int, end: int | None) -> dict[str, Any]:
    bars = window_s // interval_seconds(VOL_INTERVAL)
    candles = read_candle_columns(
        session, coin, VOL_INTERVAL, end=end, limit=bars + VOL_DAY_BARS, latest=True
    )
    out: dict[str, Any] = {
        "bars": bars,
        "candles_used": len(candles),
        "realized_vol": None,
        "vol_of_vol": None,
        "last_ts": None,
        "last_ts_unix": None,
    }
    if bars < 2 or not len(candles):
        why = "the window holds fewer than two 1h bars" if bars < 2 else "no 1h candles stored"
        return dict(available=False, reason=f"{why} for {coin}{_before(end)}", **out)
    ppy = f"{periods_per_year(VOL_INTERVAL):g}"
    requests = parse_indicator_spec(f"rvol:{bars}:{ppy},vov:{VOL_DAY_BARS}:{bars}:{ppy}")
    computed = evaluate(requests, candles)
    values = [computed[c][-1] for r in requests for c in r.columns.values()]
    last = int(candles.ts[-1])
    out |= {"last_ts": iso(last), "last_ts_unix": last}
    reasons = []
    for key, value, need in zip(
        ("realized_vol", "vol_of_vol"), values, (bars + 1, bars + VOL_DAY_BARS), strict=True
    ):
        if np.isnan(value):
            reasons.append(f"{key} needs {need} 1h candles, {len(candles)} stored")
        else:
            out[key] = float(value)
    reason = "; ".join(reasons) or None
    return dict(available=out["realized_vol"] is not None, reason=reason, **out)


def microstructure(
    sessions: sessionmaker[Session],
    settings: Settings,
    coin: str,
    window: str = "1d",
    end: str | None = None,
) -> dict[str, Any]:
    """Funding (latest, annualised, window mean), open interest and its change over the window,
    the mark-vs-index basis of the latest snapshot, realized vol and vol of vol (1h candles)."""
    window_s = parse_window(window)
    end_s = None if end is None else parse_time(end, "end")
    with sessions() as session:
        name = resolve_coin(session, settings, coin)
        funding = _funding(session, name, window_s, end_s)
        per_year = funding["settlements_per_year"] or YEAR_S / ASSUMED_FUNDING_INTERVAL_S
        return {
            "coin": name,
            "window": window,
            "window_s": window_s,
            "end": None if end_s is None else iso(end_s),
            "end_unix": end_s,
            "funding": funding,
            "open_interest": _open_interest(session, name, window_s, end_s),
            "basis": _basis(session, name, end_s, per_year),
            "volatility": _volatility(session, name, window_s, end_s),
            "liquidations": {"available": False, "value": None, "reason": NO_LIQUIDATIONS},
        }
