"""Real history in one command: fetch Binance's public kline archives, verify, import.

For a coin, interval, market and a range of days, ``plan_archives`` lists the archives that
cover it: a monthly archive for every finished month wholly inside the range, daily archives
for the edges of the range and for the current month (a month has a monthly archive only once
it is over). A month whose monthly archive is 404 falls back to its daily archives; when
neither its first nor its last day is published either, the month is reported as not
published without asking for the other days (pre-listing months would otherwise cost ~30
requests each).

Each archive goes through the same steps, so a re-run or a resumed run never fetches twice:

1. in the cache (``<cache>/data/spot/monthly/klines/BTCUSDT/1h/…zip`` with its ``.CHECKSUM``
   beside it) and still matching that checksum: used as is, no request;
2. otherwise the ``.CHECKSUM`` is fetched (404: not published), the zip is streamed into
   ``<name>.zip.part`` (a part left by an interrupted run is resumed with a Range request),
   its sha256 is checked, and only then is it renamed into place. A mismatch is refused: the
   part is deleted and nothing from it is stored (a resumed part is first retried whole once);
3. its CSV is parsed by ``ingestion.fileimport`` and upserted in one transaction, so an
   archive is imported entirely or not at all, and importing it again changes nothing.

At the end ``range_gap_report`` says which bars of the requested range are still missing.
"""

from __future__ import annotations

import calendar
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from sqlalchemy.orm import Session, sessionmaker

from ingestion.archive import (
    ARCHIVE_SOURCES,
    MARKETS,
    ArchiveName,
    ChecksumMismatchError,
    Market,
    archive_path,
    parse_archive,
    parse_checksum,
    sha256_file,
    verify_archive,
)
from ingestion.archive_fetch import ArchiveHttp
from ingestion.gaps import RangeGapReport, range_gap_report
from storage.candles import CandleRepository
from storage.engine import transaction
from storage.errors import ConfigurationError, DataIntegrityError, TemporaryExchangeError
from storage.intervals import INTERVAL_SECONDS

DEFAULT_ARCHIVE_URL: Final = "https://data.binance.vision"
DAY_S: Final = 86_400
Status = Literal["imported", "not_published", "refused", "failed"]


@dataclass(frozen=True)
class ArchiveRef:
    """One archive of the plan: which market, which file, and the days it covers."""

    market: Market
    name: ArchiveName

    @property
    def path(self) -> str:
        return archive_path(self.market, self.name)

    @property
    def first_day(self) -> date:
        return date(self.name.year, self.name.month, self.name.day or 1)

    @property
    def last_day(self) -> date:
        if self.name.day is not None:
            return self.first_day
        return date(self.name.year, self.name.month, _month_days(self.name.year, self.name.month))


@dataclass
class ArchiveOutcome:
    """What happened to one archive; counts are the importer's and the upsert's."""

    name: str
    url: str
    status: Status
    fetched: bool = False  # its bytes came over the network in this run (else: the cache)
    bytes_fetched: int = 0
    resumed_from: int = 0  # bytes a leftover .part already held when this run resumed it
    rows_read: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    message: str = ""


@dataclass
class DownloadReport:
    """One series' download: every archive's outcome and the gaps left in the range."""

    coin: str
    interval: str
    market: Market
    symbol: str
    first_day: str  # ISO dates, inclusive
    last_day: str
    archives: list[ArchiveOutcome] = field(default_factory=list)
    gaps: RangeGapReport | None = None
    stopped: str = ""  # why the run stopped before the end of the plan ('' if it did not)

    def count(self, status: Status) -> int:
        return sum(a.status == status for a in self.archives)

    @property
    def ok(self) -> bool:
        """Nothing refused or failed, the plan ran to the end, and something was published."""
        bad = self.count("refused") + self.count("failed")
        return not bad and not self.stopped and self.count("imported") > 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        totals = {k: sum(getattr(a, k) for a in self.archives) for k in _TOTALS}
        statuses = {s: self.count(s) for s in ("imported", "not_published", "refused", "failed")}
        out.update(totals=totals | statuses | {"fetched": sum(a.fetched for a in self.archives)})
        return out


_TOTALS = ("bytes_fetched", "rows_read", "inserted", "updated", "unchanged", "rejected")


class DownloadObserver(Protocol):
    """Progress hooks (the CLI draws a bar with them); every method may be a no-op."""

    def planned(self, more: int) -> None: ...  # archives added to the plan
    def started(self, name: str, total_bytes: int | None, offset: int) -> None: ...
    def received(self, n: int) -> None: ...  # bytes
    def finished(self, outcome: ArchiveOutcome) -> None: ...


class _StopError(Exception):
    """The run cannot go on (network or site down); carries the archive that failed."""

    def __init__(self, outcome: ArchiveOutcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


class _Quiet:
    def planned(self, more: int) -> None:
        pass

    def started(self, name: str, total_bytes: int | None, offset: int) -> None:
        pass

    def received(self, n: int) -> None:
        pass

    def finished(self, outcome: ArchiveOutcome) -> None:
        pass


# ---------------------------------------------------------------------------- planning
def _month_days(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def parse_day(text: str, *, end: bool = False) -> date:
    """``2024-01`` (the month's first day, or its last with ``end``) or ``2024-01-15``."""
    value = text.strip()
    try:
        if len(value) == 7:
            first = datetime.strptime(value, "%Y-%m").date()
            return first.replace(day=_month_days(first.year, first.month)) if end else first
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise ConfigurationError(
            f"cannot read {text!r} as a month or day: use YYYY-MM (e.g. 2024-01) or YYYY-MM-DD"
        ) from None


def plan_archives(
    symbol: str, interval: str, market: Market, first: date, last: date
) -> list[ArchiveRef]:
    """The archives covering the days ``first..last`` (inclusive), in time order.

    A month wholly inside the range is one monthly archive, the other days are daily
    archives. The caller clips ``last`` to the last finished day.
    """
    refs: list[ArchiveRef] = []
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        days = _month_days(year, month)
        lo = max(first, date(year, month, 1))
        hi = min(last, date(year, month, days))
        if lo.day == 1 and hi.day == days:
            refs.append(ArchiveRef(market, ArchiveName(symbol, interval, year, month, None)))
        else:
            refs.extend(
                ArchiveRef(market, ArchiveName(symbol, interval, year, month, d))
                for d in range(lo.day, hi.day + 1)
            )
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return refs


def _daily(ref: ArchiveRef) -> list[ArchiveRef]:
    n = ref.name
    days = _month_days(n.year, n.month)
    return [
        ArchiveRef(ref.market, ArchiveName(n.symbol, n.interval, n.year, n.month, d))
        for d in range(1, days + 1)
    ]


# ----------------------------------------------------------------------------- running
class Downloader:
    """Downloads, verifies and imports archive ranges into the candle store."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        base_url: str = DEFAULT_ARCHIVE_URL,
        cache_dir: str | os.PathLike[str] = "var/downloads",
        quote_asset: str = "USDT",
        max_rows: int = 20_000_000,
        http: ArchiveHttp | None = None,
        observer: DownloadObserver | None = None,
    ) -> None:
        self.sessions = sessions
        self.base_url = base_url.rstrip("/")
        self.cache_dir = Path(cache_dir)
        self.quote_asset = quote_asset.upper()
        self.max_rows = max_rows
        self._http = http or ArchiveHttp()
        self._observer: DownloadObserver = observer or _Quiet()

    def close(self) -> None:
        self._http.close()

    def run(
        self,
        coin: str,
        interval: str,
        *,
        first: date,
        last: date | None = None,
        market: Market = "spot",
        today: date | None = None,
    ) -> DownloadReport:
        """Download, verify and import the days ``first..last`` (default: up to yesterday)."""
        base = coin.strip().upper()
        if not base.isalnum():
            raise ConfigurationError(f"coin must be an alphanumeric base asset, got {coin!r}")
        if interval not in INTERVAL_SECONDS:
            raise ConfigurationError(
                f"unknown interval {interval!r}; valid: {', '.join(INTERVAL_SECONDS)}"
            )
        if market not in MARKETS:
            raise ConfigurationError(f"market must be one of {', '.join(MARKETS)}, got {market!r}")
        today = today or datetime.now(UTC).date()
        yesterday = today - timedelta(days=1)
        last = min(last or yesterday, yesterday)
        if first > last:
            raise ConfigurationError(
                f"nothing to download: the range starts {first.isoformat()} but its last "
                f"finished day is {last.isoformat()} (today, {today.isoformat()}, is not over)"
            )
        symbol = base + self.quote_asset
        report = DownloadReport(base, interval, market, symbol, first.isoformat(), last.isoformat())
        plan = plan_archives(symbol, interval, market, first, last)
        self._observer.planned(len(plan))
        for ref in plan:
            if ref.name.day is not None:
                outcomes = self._daily_one(ref, base)
            else:
                outcomes = self._monthly(ref, base, first, last)
            try:
                for outcome in outcomes:
                    report.archives.append(outcome)
            except _StopError as stop:
                report.archives.append(stop.outcome)
                report.stopped = f"{stop.outcome.message}; run the same command again to resume"
                break
        start_s = int(datetime.combine(first, datetime.min.time(), UTC).timestamp())
        end_s = int(datetime.combine(last, datetime.min.time(), UTC).timestamp()) + DAY_S - 1
        with self.sessions() as session:
            report.gaps = range_gap_report(session, base, interval, start_s, end_s)
        return report

    def _daily_one(self, ref: ArchiveRef, coin: str) -> Iterator[ArchiveOutcome]:
        yield self._one(ref, coin)

    def _monthly(
        self, month: ArchiveRef, coin: str, first: date, last: date
    ) -> Iterator[ArchiveOutcome]:
        """A monthly archive, or when it is 404 the month's daily archives (see the module doc)."""
        missing = self._one(month, coin)
        if missing.status != "not_published":
            yield missing
            return
        days = [d for d in _daily(month) if first <= d.first_day <= last]
        self._observer.planned(1)
        head = self._one(days[0], coin)
        tail = None
        if head.status == "not_published":
            self._observer.planned(1)
            tail = self._one(days[-1], coin)
        if tail is not None and tail.status == "not_published":
            missing.message = (
                f"not published: no monthly archive, and no daily archive for "
                f"{days[0].first_day} or {days[-1].first_day}"
            )
            yield missing
            return
        missing.message = "no monthly archive; used the daily archives"
        self._observer.planned(len(days) - (1 if tail is None else 2))
        yield missing
        yield head
        for ref in days[1:-1] if tail is not None else days[1:]:
            yield self._one(ref, coin)
        if tail is not None:
            yield tail

    def _one(self, ref: ArchiveRef, coin: str) -> ArchiveOutcome:
        """Obtain and import one archive. A temporary network failure (after the retries)
        raises ``_StopError``: the site or the network is down, so the rest would fail too."""
        url = f"{self.base_url}/{ref.path}"
        outcome = ArchiveOutcome(ref.name.filename, url, "imported")
        try:
            zip_path = self._obtain(ref, url, outcome)
            if zip_path is not None:
                self._import(zip_path, ref, coin, outcome)
        except ChecksumMismatchError as exc:
            outcome.status, outcome.message = "refused", str(exc)
        except DataIntegrityError as exc:
            outcome.status, outcome.message = "failed", f"{ref.name.filename}: {exc}"
        except TemporaryExchangeError as exc:
            outcome.status, outcome.message = "failed", str(exc)
            self._observer.finished(outcome)
            raise _StopError(outcome) from exc
        self._observer.finished(outcome)
        return outcome

    def _obtain(self, ref: ArchiveRef, url: str, outcome: ArchiveOutcome) -> Path | None:
        """The verified archive in the cache, fetching it if needed; None if not published."""
        target = self.cache_dir / ref.path
        checksum_file = target.with_name(target.name + ".CHECKSUM")
        part = target.with_name(target.name + ".part")
        name = ref.name.filename
        if target.is_file() and checksum_file.is_file():
            expected = parse_checksum(checksum_file.read_text(encoding="utf-8"), name)
            if sha256_file(target) == expected:
                self._observer.started(name, target.stat().st_size, target.stat().st_size)
                return target
            target.unlink()  # damaged in the cache: fetch it again
        checksum_text = self._http.get_text(url + ".CHECKSUM")
        if checksum_text is None:
            outcome.status, outcome.message = "not_published", f"not published: {url}"
            return None
        expected = parse_checksum(checksum_text, name)
        if not (part.is_file() and sha256_file(part) == expected):
            for whole_again in (False, True):
                if not self._fetch(url, part, outcome):
                    outcome.status = "not_published"
                    outcome.message = f"not published: {url} (its .CHECKSUM is)"
                    return None
                try:
                    verify_archive(part, expected, label=url)
                    break
                except ChecksumMismatchError:
                    resumed = outcome.resumed_from > 0
                    part.unlink(missing_ok=True)
                    if whole_again or not resumed:
                        raise
        tmp = checksum_file.with_name(checksum_file.name + ".tmp")
        tmp.write_text(checksum_text, encoding="utf-8")
        os.replace(tmp, checksum_file)
        os.replace(part, target)
        return target

    def _fetch(self, url: str, part: Path, outcome: ArchiveOutcome) -> bool:
        name = url.rsplit("/", 1)[-1]
        fetched = self._http.download(
            url,
            part,
            on_start=lambda total, offset: self._observer.started(name, total, offset),
            on_bytes=self._observer.received,
        )
        if fetched is None:
            return False
        outcome.fetched = True
        outcome.bytes_fetched += fetched.bytes_received
        if not outcome.resumed_from:
            outcome.resumed_from = fetched.resumed_from
        return True

    def _import(self, path: Path, ref: ArchiveRef, coin: str, outcome: ArchiveOutcome) -> None:
        parsed = parse_archive(
            path, coin=coin, interval=ref.name.interval, source=ARCHIVE_SOURCES[ref.market]
        )
        if parsed.rows_read > self.max_rows:
            raise DataIntegrityError(
                f"{parsed.rows_read} rows exceeds SQUALL_MAX_IMPORT_ROWS ({self.max_rows})"
            )
        with transaction(self.sessions) as session:
            result = CandleRepository(session).upsert(parsed.frame)
        outcome.rows_read, outcome.duplicates = parsed.rows_read, parsed.duplicates
        outcome.rejected, outcome.rejected_by_reason = (
            sum(parsed.rejected.values()),
            parsed.rejected,
        )
        outcome.inserted, outcome.updated, outcome.unchanged = (
            result.inserted,
            result.updated,
            result.unchanged,
        )
