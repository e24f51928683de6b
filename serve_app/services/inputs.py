"""What every use case checks and reads first: the coin, the interval, the time window, the
row caps, and the candles (with funding) of one series.

Routes, the CLI and Ray jobs all pass through here, so a wrong coin or a window that is too
short gives the same error everywhere: a :mod:`storage.errors` error with a ``code`` and the
fields the API body carries (``parameter``, ``known_coins``, ``required_candles`` ...).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from serve_app.settings import Settings
from serve_app.timefmt import iso, parse_time
from storage.candle_reads import CandleColumns, read_candle_columns
from storage.candles import CandleRepository
from storage.derivatives import FundingRepository
from storage.errors import (
    ConfigurationError,
    InsufficientDataError,
    LimitExceededError,
    NotFoundError,
)
from storage.fingerprint import series_fingerprint
from storage.intervals import INTERVAL_SECONDS, interval_seconds
from storage.series import SeriesRepository
from storage.snapshots import SnapshotRepository

MAX_BACKTEST_BARS = 1_000_000  # candles one request may use (warm-up included)
CACHE_BARS = 4_000_000  # candles this process keeps from recent reads (~200 MB at most)


# ------------------------------------------------------------------------ coin, interval, time
def known_coins(session: Session, settings: Settings) -> list[str]:
    """Configured coins, then coins that are only stored (candles or snapshots)."""
    stored = CandleRepository(session).coins() | SnapshotRepository(session).coins()
    extra = sorted(stored - set(settings.coins))
    return [*settings.coins, *extra]


def resolve_coin(session: Session, settings: Settings, coin: str) -> str:
    """The coin upper-cased if configured or stored; NotFoundError listing the known coins."""
    name = coin.strip().upper()
    if name in settings.coins:
        return name
    if CandleRepository(session).has_coin(name) or SnapshotRepository(session).has_coin(name):
        return name
    known = known_coins(session, settings)
    raise NotFoundError(
        f"unknown coin {coin!r}; known coins: {', '.join(known)}",
        code="unknown_coin",
        parameter="coin",
        known_coins=known,
    )


def check_interval(interval: str) -> str:
    if interval in INTERVAL_SECONDS:
        return interval
    valid = list(INTERVAL_SECONDS)
    raise ConfigurationError(
        f"unknown interval {interval!r}; valid intervals: {', '.join(valid)}",
        code="unknown_interval",
        parameter="interval",
        valid_intervals=valid,
    )


def check_limit(limit: int | None, settings: Settings) -> int:
    """The rows a read may return: the default when omitted, the settings' cap enforced."""
    cap = settings.max_candles_per_request
    if limit is None:
        return min(settings.default_candle_limit, cap)
    if not 1 <= limit <= cap:
        raise ConfigurationError(
            f"limit must be between 1 and {cap} (the cap on candles per request), got {limit}; "
            "page with start= to read more",
            code="limit_out_of_range",
            parameter="limit",
            max_limit=cap,
        )
    return limit


def parse_range(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    """``start`` and ``end`` as unix seconds (either may be omitted); start > end is an error."""
    start_s = None if start is None else parse_time(start, "start")
    end_s = None if end is None else parse_time(end, "end")
    if start_s is not None and end_s is not None and start_s > end_s:
        raise ConfigurationError(
            f"start ({iso(start_s)}) is after end ({iso(end_s)}); swap them or drop one",
            code="invalid_range",
            parameter="start",
        )
    return start_s, end_s


# ------------------------------------------------------------------------------ the window
class SeriesRequest(Protocol):
    """What a single-series request names (the backtest, walk-forward and simulation bodies)."""

    coin: str
    interval: str
    start: str | int | None
    end: str | int | None


@dataclass(frozen=True)
class Window:
    """A request's series and time window, checked."""

    coin: str
    interval: str
    start: int | None
    end: int | None


def check_window(session: Session, settings: Settings, req: SeriesRequest) -> Window:
    """Interval, coin and times of a request, checked (NotFoundError for an unknown coin)."""
    interval = check_interval(req.interval)
    start, end = parse_range(
        None if req.start is None else str(req.start), None if req.end is None else str(req.end)
    )
    return Window(resolve_coin(session, settings, req.coin), interval, start, end)


# ------------------------------------------------------------------------- the read cache
@dataclass(frozen=True)
class _Read:
    version: int
    candles: CandleColumns
    fingerprint: str


class _ReadCache:
    """The candles of recent windows, valid while their series' version is unchanged.

    Every write that changes a series' candles bumps ``series.version`` in its own
    transaction (``storage.candles``), so a reader that finds the version it read under can
    use what it read: one primary-key lookup instead of the read, the conversion and the
    fingerprint. Keyed by database, coin, interval and window; least recently used entries go
    first once ``CACHE_BARS`` candles are held.
    """

    def __init__(self, max_bars: int) -> None:
        self.max_bars = max_bars
        self._items: OrderedDict[tuple[Any, ...], _Read] = OrderedDict()
        self._bars = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], version: int) -> _Read | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or hit.version != version:
                return None
            self._items.move_to_end(key)
            return hit

    def put(self, key: tuple[Any, ...], read: _Read) -> None:
        n = len(read.candles.ts)
        if n > self.max_bars // 4:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self._bars -= 0 if old is None else len(old.candles.ts)
            self._items[key] = read
            self._bars += n
            while self._bars > self.max_bars and self._items:
                _, dropped = self._items.popitem(last=False)
                self._bars -= len(dropped.candles.ts)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bars = 0


READS = _ReadCache(CACHE_BARS)


def _key(session: Session, w: Window) -> tuple[Any, ...]:
    return (str(session.get_bind().engine.url), w.coin, w.interval, w.start, w.end)


def _cached(session: Session, w: Window) -> tuple[int | None, _Read | None]:
    version = SeriesRepository(session).version(w.coin, w.interval)
    if version is None:
        return None, None
    return version, READS.get(_key(session, w), version)


def read_columns(
    session: Session,
    coin: str,
    interval: str,
    *,
    start: int | None = None,
    end: int | None = None,
    limit: int,
    latest: bool = False,
) -> CandleColumns:
    """``storage.candle_reads.read_candle_columns`` through the read cache (same answer)."""
    version = SeriesRepository(session).version(coin, interval)
    key = (str(session.get_bind().engine.url), coin, interval, start, end, limit, latest)
    if version is not None:
        hit = READS.get(key, version)
        if hit is not None:
            return hit.candles
    c = read_candle_columns(
        session, coin, interval, start=start, end=end, limit=limit, latest=latest
    )
    if version is not None:
        READS.put(key, _Read(version, c, ""))
    return c


def count_candles(session: Session, w: Window) -> int:
    _, hit = _cached(session, w)
    if hit is not None:
        return len(hit.candles.ts)
    return CandleRepository(session).count(w.coin, w.interval, start=w.start, end=w.end)


def insufficient(
    session: Session, w: Window, required: int, received: int, what: str
) -> InsufficientDataError:
    """``insufficient_data`` with counts, the look-back as time, the latest candle and a
    start that would hold ``required`` candles (if the series has no gaps there)."""
    step = interval_seconds(w.interval)
    repo = CandleRepository(session)
    latest = repo.latest_ts(w.coin, w.interval, end=w.end)
    first = repo.first_ts(w.coin, w.interval)
    suggested = None if latest is None else latest - (required - 1) * step
    lookback_s = required * step
    if latest is None:
        message = (
            f"{what} needs {required} {w.interval} candles but none are stored for {w.coin}"
            f"{'' if w.end is None else ' up to ' + iso(w.end)}; import or ingest them first "
            f"(squall import / squall backfill)"
        )
    else:
        assert suggested is not None
        message = (
            f"{what} needs {required} {w.interval} candles ({lookback_s} s of history) but "
            f"the requested window holds {received}; the latest stored candle is "
            f"{iso(latest)}: ask for start <= {iso(suggested)} (unix {suggested})"
        )
        if first is not None and suggested < first:
            message += (
                f", which is before the first stored candle ({iso(first)}): backfill "
                "earlier history or shorten the request"
            )
    return InsufficientDataError(
        message,
        parameter="start",
        required_candles=required,
        received_candles=received,
        required_lookback_s=lookback_s,
        latest_ts=None if latest is None else iso(latest),
        latest_ts_unix=latest,
        suggested_start=None if suggested is None else iso(max(suggested, 0)),
        suggested_start_unix=None if suggested is None else max(suggested, 0),
    )


def too_many_bars(w: Window, count: int, cap: int = MAX_BACKTEST_BARS) -> LimitExceededError:
    return LimitExceededError(
        f"the window holds {count} {w.interval} candles of {w.coin}; a request may use at most "
        f"{cap}: narrow start/end, use a longer interval, or run a sweep job (squall sweep)",
        code="too_many_bars",
        parameter="start",
        cap=cap,
    )


def checked_count(session: Session, w: Window, required: int, what: str) -> int:
    """The candles in the window, after the cap and the warm-up are checked against it."""
    n = count_candles(session, w)
    if n > MAX_BACKTEST_BARS:
        raise too_many_bars(w, n)
    if n < required:
        raise insufficient(session, w, required, n, what)
    return n


# --------------------------------------------------------------------------------- the data
@dataclass(frozen=True)
class SeriesData:
    """The candles (and per-bar funding) a run uses, ascending by ts."""

    coin: str
    interval: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    funding: np.ndarray | None  # rate settled during each bar, or None when not applied
    funding_rows: int
    fingerprint: str
    missing_bars: int
    source: str | None = None  # the series' source family (synthetic, file, binance:spot ...)

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def step(self) -> int:
        return interval_seconds(self.interval)

    def candles(self) -> dict[str, np.ndarray]:
        """The price arrays a kernel (or a Ray task) takes."""
        return {k: getattr(self, k) for k in ("ts", "open", "high", "low", "close")}

    def used(self) -> dict[str, Any]:
        first, last = int(self.ts[0]), int(self.ts[-1])
        return {
            "candles": len(self),
            "first_ts": iso(first),
            "first_ts_unix": first,
            "last_ts": iso(last),
            "last_ts_unix": last,
            "missing_bars": self.missing_bars,
            "fingerprint": self.fingerprint,
            "funding_rows": self.funding_rows,
            "source": self.source,
        }


def funding_per_bar(
    bar_ts: np.ndarray, step: int, settle_ts: np.ndarray, rates: np.ndarray
) -> np.ndarray:
    """The funding rate settled during each bar: a settlement at time T is paid by the
    position held just before T, i.e. by the bar with ``open < T <= open + step``."""
    out = np.zeros(len(bar_ts), dtype=np.float64)
    if not len(settle_ts):
        return out
    idx = np.searchsorted(bar_ts, settle_ts, side="left") - 1
    ok = (idx >= 0) & (settle_ts <= bar_ts[np.clip(idx, 0, None)] + step)
    np.add.at(out, idx[ok], rates[ok])
    return out


def _with_funding(fp: str, funding: pd.DataFrame | None) -> str:
    """The candles' fingerprint, extended by the funding applied (when any)."""
    if funding is None or funding.empty:
        return fp
    raw = funding["ts"].to_numpy(np.int64).tobytes()
    raw += funding["funding_rate"].to_numpy(np.float64).tobytes()
    return f"{fp}-f{hashlib.sha256(raw).hexdigest()[:16]}"


def _candles(session: Session, w: Window) -> _Read:
    """The candles of the window (from the read cache when the series is unchanged)."""
    version, hit = _cached(session, w)
    if hit is not None:
        return hit
    c = read_candle_columns(
        session, w.coin, w.interval, start=w.start, end=w.end, limit=MAX_BACKTEST_BARS + 1
    )
    frame = pd.DataFrame(
        {"ts": c.ts, "open": c.open, "high": c.high, "low": c.low, "close": c.close,
         "volume_base": c.volume_base}
    )  # fmt: skip
    read = _Read(-1 if version is None else version, c, series_fingerprint(frame))
    if version is not None:
        READS.put(_key(session, w), read)
    return read


def load_series(session: Session, w: Window, *, with_funding: bool) -> SeriesData:
    """Candles of the window (and the funding settled during them, always read fresh) as
    arrays."""
    read = _candles(session, w)
    c = read.candles
    step = interval_seconds(w.interval)
    funding = None
    per_bar = None
    if with_funding and len(c):
        funding = FundingRepository(session).frame(
            w.coin, start=int(c.ts[0]) + 1, end=int(c.ts[-1]) + step
        )
        per_bar = funding_per_bar(
            c.ts,
            step,
            funding["ts"].to_numpy(np.int64),
            funding["funding_rate"].to_numpy(np.float64),
        )
    missing = 0 if not len(c) else (int(c.ts[-1]) - int(c.ts[0])) // step + 1 - len(c)
    return SeriesData(
        coin=w.coin,
        interval=w.interval,
        ts=c.ts,
        open=c.open,
        high=c.high,
        low=c.low,
        close=c.close,
        volume=c.volume_base,
        funding=per_bar,
        funding_rows=0 if funding is None else len(funding),
        fingerprint=_with_funding(read.fingerprint, funding),
        missing_bars=missing,
        source=SeriesRepository(session).source_of(w.coin, w.interval),
    )
