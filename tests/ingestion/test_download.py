"""``ingestion.download`` against a fake archive site on loopback (no internet).

The archives are built at test time from the real files in ``../shared/data``: the BTCUSDT 1h
file (2023-06 .. 2024-03) cut into monthly and daily zips in the site's layout, the USD-M
futures AVAXUSDT 1m file (a data.binance.vision CSV, header included) zipped as published,
and SOLUSDT 1h bars written with the µs timestamps of 2025+ spot archives. The reference for
every stored value is the source file read with the csv module, never the importer.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from ingestion.archive import ARCHIVE_SOURCES, ArchiveName, market_from_path, parse_archive_name
from ingestion.archive_fetch import ArchiveHttp
from ingestion.download import ArchiveOutcome, Downloader, parse_day, plan_archives
from ingestion.gaps import range_gap_report
from storage.candles import CandleRepository, candles_to_frame
from storage.engine import make_engine, session_factory, transaction
from storage.errors import ConfigurationError
from storage.migrate import upgrade
from tests.fakes import archive_site as fakes
from tests.fakes.archive_site import FakeArchiveSite, SourceBar, kline_csv, read_ohlcv6

archive_site = fakes.archive_site

pytestmark = pytest.mark.realdata

SOURCE_1H = "binance_spot_BTCUSDT_1h_2023-06_2024-03.csv"
TODAY = date(2024, 3, 22)  # the source ends on 2024-03-22 10:00: that day is not over


def ts_of(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), UTC).timestamp())


def name(y: int, m: int, d: int | None = None, sym: str = "BTCUSDT", iv: str = "1h") -> ArchiveName:
    return ArchiveName(sym, iv, y, m, d)


@pytest.fixture
def sqlite_sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'squall.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def btc_bars(shared_data: Path) -> list[SourceBar]:
    bars = read_ohlcv6(shared_data / SOURCE_1H)
    assert len(bars) == 7091  # SOURCES.md: 7099 rows, 7091 unique
    return bars


def group(bars: list[SourceBar], *, daily: bool) -> dict[tuple[int, ...], list[SourceBar]]:
    out: dict[tuple[int, ...], list[SourceBar]] = defaultdict(list)
    for b in bars:
        t = datetime.fromtimestamp(b.open_ms / 1000, UTC)
        out[(t.year, t.month, t.day) if daily else (t.year, t.month)].append(b)
    return out


def publish_btc(
    site: FakeArchiveSite,
    bars: list[SourceBar],
    *,
    months: list[tuple[int, int]],
    daily_months: tuple[tuple[int, int], ...] = (),
    last_day: date = TODAY,
) -> None:
    """Monthly archives for ``months``; daily archives (days before ``last_day``) for
    ``daily_months``."""
    monthly = group(bars, daily=False)
    for y, m in months:
        site.publish("spot", name(y, m), kline_csv(monthly[(y, m)]))
    for (y, m, d), rows in group(bars, daily=True).items():
        if (y, m) in daily_months and date(y, m, d) < last_day:
            site.publish("spot", name(y, m, d), kline_csv(rows))


MONTHS = [(2023, m) for m in range(6, 13)] + [(2024, 1), (2024, 2)]


def loader(
    sessions: sessionmaker[Session], site: FakeArchiveSite, cache: Path, **http: int
) -> Downloader:
    client = ArchiveHttp(sleep=lambda s: None, timeout_s=10, **http)
    return Downloader(sessions, base_url=site.url, cache_dir=cache, http=client)


def stored(sessions: sessionmaker[Session], coin: str = "BTC", interval: str = "1h") -> list:
    with sessions() as s:
        frame = CandleRepository(s).frame(coin, interval)
    return list(frame.itertuples(index=False))


def assert_equals_source(rows: list, bars: list[SourceBar], source: str) -> None:
    assert [r.ts for r in rows] == [b.open_ms // 1000 for b in bars]
    for r, b in zip(rows, bars, strict=True):
        assert (r.open, r.high, r.low, r.close, r.volume_base) == tuple(
            float(x) for x in (b.open, b.high, b.low, b.close, b.volume)
        ), b
        assert r.volume_quote == float(fakes.quote_volume(b))
        assert r.trade_count == fakes.trade_count(b)
        assert r.source == source


def by_name(outcomes: list[ArchiveOutcome]) -> dict[str, ArchiveOutcome]:
    return {o.name: o for o in outcomes}


# ------------------------------------------------------------------------------ planning
def test_parse_day_months_and_days() -> None:
    assert parse_day("2024-01") == date(2024, 1, 1)
    assert parse_day("2024-02", end=True) == date(2024, 2, 29)  # leap year
    assert parse_day("2023-02", end=True) == date(2023, 2, 28)
    assert parse_day("2024-01-15", end=True) == date(2024, 1, 15)
    with pytest.raises(ConfigurationError, match="YYYY-MM"):
        parse_day("Jan 2024")


def test_plan_whole_months_monthly_edges_daily() -> None:
    plan = plan_archives("BTCUSDT", "1h", "spot", date(2023, 12, 30), date(2024, 3, 2))
    assert [r.name.filename for r in plan] == [
        "BTCUSDT-1h-2023-12-30.zip",
        "BTCUSDT-1h-2023-12-31.zip",
        "BTCUSDT-1h-2024-01.zip",
        "BTCUSDT-1h-2024-02.zip",
        "BTCUSDT-1h-2024-03-01.zip",
        "BTCUSDT-1h-2024-03-02.zip",
    ]
    assert plan[2].path == "data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01.zip"
    assert plan[4].path == "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-03-01.zip"
    um = plan_archives("AVAXUSDT", "1m", "um", date(2023, 2, 1), date(2023, 2, 28))
    assert [r.path for r in um] == [
        "data/futures/um/monthly/klines/AVAXUSDT/1m/AVAXUSDT-1m-2023-02.zip"
    ]


def test_archive_names_round_trip() -> None:
    assert parse_archive_name("BTCUSDT-1h-2024-01.zip") == name(2024, 1)
    assert parse_archive_name("/x/ETHUSDT-1m-2025-03-09.zip") == name(2025, 3, 9, "ETHUSDT", "1m")
    assert parse_archive_name("BTCUSDT-1h-2024-01.csv") is None


def test_market_from_the_cache_layout() -> None:
    spot = "/cache/data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01.zip"
    um = "/cache/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip"
    assert market_from_path(spot) == "spot" and market_from_path(um) == "um"
    assert market_from_path("/tmp/BTCUSDT-1h-2024-01.zip") is None


def test_range_gap_report_counts_the_range_ends(sqlite_sessions: sessionmaker[Session]) -> None:
    """Bars 02:00-03:00 and 06:00 of a day stored; asked for 00:00-08:00 (hand-counted)."""
    day = ts_of(date(2024, 1, 1))
    bars = [day + h * 3600 for h in (2, 3, 6)]
    frame = candles_to_frame(
        [
            dict(
                coin="BTC",
                interval="1h",
                ts=t,
                open=1.0,
                high=2.0,
                low=0.5,
                close=1.5,
                volume_base=1.0,
                source="test",
            )
            for t in bars
        ]
    )
    with transaction(sqlite_sessions) as s:
        CandleRepository(s).upsert(frame)
    with sqlite_sessions() as s:
        report = range_gap_report(s, "BTC", "1h", day, day + 8 * 3600 + 59)
    assert (report.expected, report.present, report.missing) == (9, 3, 6)
    assert [(g.start, g.end, g.missing) for g in report.gaps] == [
        (day, day + 3600, 2),
        (day + 4 * 3600, day + 5 * 3600, 2),
        (day + 7 * 3600, day + 8 * 3600, 2),
    ]
    with sqlite_sessions() as s:
        empty = range_gap_report(s, "ETH", "1h", day, day + 3600)
    assert (empty.expected, empty.missing, len(empty.gaps)) == (2, 2, 1)


def test_range_that_has_not_finished_is_refused(
    sqlite_sessions: sessionmaker[Session], archive_site: FakeArchiveSite, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="nothing to download"):
        loader(sqlite_sessions, archive_site, tmp_path).run("BTC", "1h", first=TODAY, today=TODAY)
    assert archive_site.requests == []


# --------------------------------------------------------------------------- end to end
def test_download_range_equals_source_and_rerun_changes_nothing(
    sessions: sessionmaker[Session],
    archive_site: FakeArchiveSite,
    btc_bars: list[SourceBar],
    tmp_path: Path,
) -> None:
    """2023-05 is not published at all, 2023-09 has no monthly archive (daily fallback), the
    current month (2024-03, today the 22nd) comes as daily archives up to yesterday."""
    months = [m for m in MONTHS if m != (2023, 9)]
    publish_btc(archive_site, btc_bars, months=months, daily_months=((2023, 9), (2024, 3)))
    dl = loader(sessions, archive_site, tmp_path / "dl")
    report = dl.run("btc", "1h", first=date(2023, 5, 1), today=TODAY)

    expected_bars = [b for b in btc_bars if b.open_ms < ts_of(TODAY) * 1000]
    assert_equals_source(stored(sessions), expected_bars, ARCHIVE_SOURCES["spot"])
    outcomes = by_name(report.archives)
    may = outcomes["BTCUSDT-1h-2023-05.zip"]
    assert may.status == "not_published" and "2023-05-01 or 2023-05-31" in may.message
    # the missing month cost three small requests: its monthly and first/last daily checksums
    may_requests = [r for r in archive_site.requests if "2023-05" in r.path]
    assert sorted(r.path.rsplit("/", 1)[1] for r in may_requests) == [
        "BTCUSDT-1h-2023-05-01.zip.CHECKSUM",
        "BTCUSDT-1h-2023-05-31.zip.CHECKSUM",
        "BTCUSDT-1h-2023-05.zip.CHECKSUM",
    ]
    assert all(r.status == 404 for r in may_requests)
    assert outcomes["BTCUSDT-1h-2023-09.zip"].status == "not_published"
    assert all(
        outcomes[f"BTCUSDT-1h-2023-09-{d:02d}.zip"].status == "imported" for d in range(1, 31)
    )
    assert [o.name for o in report.archives if o.status == "imported"][-1] == (
        "BTCUSDT-1h-2024-03-21.zip"
    )
    assert report.count("imported") == len(months) + 30 + 21
    assert report.count("refused") == report.count("failed") == 0 and report.ok
    assert sum(o.inserted for o in report.archives) == len(expected_bars)
    # every published zip was fetched exactly once, whole
    zips = [p for p in archive_site.files if p.endswith(".zip")]
    for path in zips:
        (once,) = archive_site.served(path)
        assert (once.status, once.range, once.sent) == (200, None, len(archive_site.files[path]))
    # gap report over the requested range: all of May, plus the holes of the real data
    gaps = report.gaps
    assert gaps is not None
    assert (gaps.start, gaps.end) == (ts_of(date(2023, 5, 1)), ts_of(TODAY) - 3600)
    assert gaps.expected == (ts_of(TODAY) - ts_of(date(2023, 5, 1))) // 3600
    assert gaps.present == len(expected_bars)
    # the real file has no holes from 2023-06-01 on, so the one gap is May, 31 x 24 bars
    may_gap = (ts_of(date(2023, 5, 1)), ts_of(date(2023, 6, 1)) - 3600, 31 * 24)
    assert [(g.start, g.end, g.missing) for g in gaps.gaps] == [may_gap]

    # a re-run fetches no archive and changes nothing; only the 404s are asked again
    before = len(archive_site.requests)
    again = dl.run("BTC", "1h", first=date(2023, 5, 1), today=TODAY)
    dl.close()
    new = archive_site.requests[before:]
    assert {r.status for r in new} == {404}
    assert len(new) == 4  # 2023-05 (three checksums) and the 2023-09 monthly checksum
    assert sum(o.inserted + o.updated for o in again.archives) == 0
    assert sum(o.unchanged for o in again.archives) == len(expected_bars)
    assert not any(o.fetched for o in again.archives)
    assert len(stored(sessions)) == len(expected_bars)


def test_corrupted_archive_is_refused_and_nothing_from_it_is_stored(
    sqlite_sessions: sessionmaker[Session],
    archive_site: FakeArchiveSite,
    btc_bars: list[SourceBar],
    tmp_path: Path,
) -> None:
    months = [(2023, 6), (2023, 7), (2023, 8)]
    publish_btc(archive_site, btc_bars, months=months)
    july = archive_site.path_of("spot", name(2023, 7))
    good = archive_site.files[july]
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # one flipped byte; the .CHECKSUM is still the original's
    archive_site.files[july] = bytes(bad)
    cache = tmp_path / "dl"
    dl = loader(sqlite_sessions, archive_site, cache)
    report = dl.run("BTC", "1h", first=date(2023, 6, 1), last=date(2023, 8, 31), today=TODAY)

    refused = by_name(report.archives)["BTCUSDT-1h-2023-07.zip"]
    assert refused.status == "refused" and not report.ok
    assert "BTCUSDT-1h-2023-07.zip" in refused.message and "checksum mismatch" in refused.message
    rows = stored(sqlite_sessions)
    july_start, aug_start = ts_of(date(2023, 7, 1)), ts_of(date(2023, 8, 1))
    assert not [r for r in rows if july_start <= r.ts < aug_start]
    groups = group(btc_bars, daily=False)
    assert len(rows) == len(groups[(2023, 6)]) + len(groups[(2023, 8)])
    assert list(cache.rglob("BTCUSDT-1h-2023-07.zip*")) == []  # no zip, no .part kept
    assert report.gaps is not None and report.gaps.missing == 31 * 24

    # once the site serves the right bytes, a re-run fetches that archive only
    archive_site.files[july] = good
    before = len(archive_site.requests)
    report = dl.run("BTC", "1h", first=date(2023, 6, 1), last=date(2023, 8, 31), today=TODAY)
    dl.close()
    assert {r.path for r in archive_site.requests[before:]} == {july + ".CHECKSUM", july}
    assert report.ok and report.gaps is not None and report.gaps.missing == 0
    assert_equals_source(
        stored(sqlite_sessions),
        [b for b in btc_bars if b.open_ms < aug_start * 1000 + 31 * 86_400_000],
        ARCHIVE_SOURCES["spot"],
    )


def test_connection_cut_mid_body_resumes_with_range_nothing_fetched_twice(
    sqlite_sessions: sessionmaker[Session],
    archive_site: FakeArchiveSite,
    btc_bars: list[SourceBar],
    tmp_path: Path,
) -> None:
    publish_btc(archive_site, btc_bars, months=[(2023, 6), (2023, 7)])
    july = archive_site.path_of("spot", name(2023, 7))
    size = len(archive_site.files[july])
    archive_site.cut(july, after=size // 2)
    dl = loader(sqlite_sessions, archive_site, tmp_path / "dl")
    report = dl.run("BTC", "1h", first=date(2023, 6, 1), last=date(2023, 7, 31), today=TODAY)
    dl.close()

    first, second = archive_site.served(july)
    assert (first.status, first.range, first.sent) == (200, None, size // 2)
    assert (second.status, second.range) == (206, f"bytes={size // 2}-")
    assert archive_site.bytes_sent(july) == size  # every byte exactly once
    outcome = by_name(report.archives)["BTCUSDT-1h-2023-07.zip"]
    assert outcome.status == "imported" and outcome.bytes_fetched == size
    groups = group(btc_bars, daily=False)
    assert_equals_source(
        stored(sqlite_sessions), groups[(2023, 6)] + groups[(2023, 7)], ARCHIVE_SOURCES["spot"]
    )


def test_interrupted_run_resumes_and_nothing_is_fetched_twice(
    sqlite_sessions: sessionmaker[Session],
    archive_site: FakeArchiveSite,
    btc_bars: list[SourceBar],
    tmp_path: Path,
) -> None:
    """The network goes away during the 4th archive (no retries left): the run stops there
    with a .part on disk; the next run skips the 3 verified archives and resumes the 4th."""
    months = [(2023, m) for m in range(6, 12)]
    publish_btc(archive_site, btc_bars, months=months)
    fourth = archive_site.path_of("spot", name(2023, 9))
    size = len(archive_site.files[fourth])
    archive_site.cut(fourth, after=size // 3)
    cache = tmp_path / "dl"
    first = loader(sqlite_sessions, archive_site, cache, max_retries=0)
    stopped = first.run("BTC", "1h", first=date(2023, 6, 1), last=date(2023, 11, 30), today=TODAY)
    first.close()
    assert stopped.stopped and "run the same command again" in stopped.stopped
    assert [o.status for o in stopped.archives] == ["imported"] * 3 + ["failed"]
    assert (cache / fourth.lstrip("/")).with_suffix(".zip.part").stat().st_size == size // 3
    groups = group(btc_bars, daily=False)
    assert len(stored(sqlite_sessions)) == sum(len(groups[m]) for m in months[:3])

    before = len(archive_site.requests)
    second = loader(sqlite_sessions, archive_site, cache)
    report = second.run("BTC", "1h", first=date(2023, 6, 1), last=date(2023, 11, 30), today=TODAY)
    second.close()
    new = archive_site.requests[before:]
    done = {archive_site.path_of("spot", name(*m)) for m in months[:3]}
    assert not [r for r in new if r.path in done or r.path.removesuffix(".CHECKSUM") in done]
    assert [r.range for r in new if r.path == fourth] == [f"bytes={size // 3}-"]
    for path in archive_site.files:
        if path.endswith(".zip"):
            assert archive_site.bytes_sent(path) == len(archive_site.files[path])
    assert by_name(report.archives)["BTCUSDT-1h-2023-09.zip"].resumed_from == size // 3
    assert report.ok and not report.stopped
    assert_equals_source(
        stored(sqlite_sessions),
        [b for m in months for b in groups[m]],
        ARCHIVE_SOURCES["spot"],
    )


def test_temporary_errors_are_retried_other_4xx_stop_the_run(
    sqlite_sessions: sessionmaker[Session],
    archive_site: FakeArchiveSite,
    btc_bars: list[SourceBar],
    tmp_path: Path,
) -> None:
    publish_btc(archive_site, btc_bars, months=[(2023, 6)])
    june = archive_site.path_of("spot", name(2023, 6))
    archive_site.fail(june, 503, times=2)
    dl = loader(sqlite_sessions, archive_site, tmp_path / "dl")
    report = dl.run("BTC", "1h", first=date(2023, 6, 1), last=date(2023, 6, 30), today=TODAY)
    assert report.ok
    assert [r.status for r in archive_site.served(june)] == [503, 503, 200]

    archive_site.fail(archive_site.path_of("spot", name(2023, 7)) + ".CHECKSUM", 403)
    with pytest.raises(ConfigurationError, match="HTTP 403"):
        dl.run("BTC", "1h", first=date(2023, 7, 1), last=date(2023, 7, 31), today=TODAY)
    dl.close()


def test_damaged_cached_archive_is_fetched_again(
    sqlite_sessions: sessionmaker[Session],
    archive_site: FakeArchiveSite,
    btc_bars: list[SourceBar],
    tmp_path: Path,
) -> None:
    publish_btc(archive_site, btc_bars, months=[(2023, 6)])
    cache = tmp_path / "dl"
    dl = loader(sqlite_sessions, archive_site, cache)
    dl.run("BTC", "1h", first=date(2023, 6, 1), last=date(2023, 6, 30), today=TODAY)
    (cached,) = cache.rglob("*.zip")
    cached.write_bytes(cached.read_bytes()[:-10])
    june = archive_site.path_of("spot", name(2023, 6))
    report = dl.run("BTC", "1h", first=date(2023, 6, 1), last=date(2023, 6, 30), today=TODAY)
    dl.close()
    assert len(archive_site.served(june)) == 2 and report.archives[0].fetched
    assert report.ok and cached.read_bytes() == archive_site.files[june]


def test_usdm_futures_use_the_futures_layout(
    sqlite_sessions: sessionmaker[Session],
    archive_site: FakeArchiveSite,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    """The AVAXUSDT 1m file *is* a data.binance.vision futures CSV (header included)."""
    source = shared_data / "binance_um_AVAXUSDT_1m_2023-02_kline12.csv"
    text = source.read_text()
    archive_site.publish("um", name(2023, 2, sym="AVAXUSDT", iv="1m"), text)
    dl = loader(sqlite_sessions, archive_site, tmp_path / "dl")
    report = dl.run(
        "AVAX", "1m", first=date(2023, 2, 1), last=date(2023, 2, 28), market="um", today=TODAY
    )
    dl.close()
    assert report.ok and report.gaps is not None and report.gaps.missing == 0
    assert {r.path.split("/klines/")[0] for r in archive_site.requests} == {
        "/data/futures/um/monthly"
    }
    with open(source, newline="") as handle:
        reference = list(csv.reader(handle))[1:]
    rows = stored(sqlite_sessions, "AVAX", "1m")
    assert len(rows) == len(reference) == 40320  # SOURCES.md: 28 days x 1440
    for r, ref in zip(rows, reference, strict=True):
        assert r.ts * 1000 == int(ref[0])
        assert (r.open, r.high, r.low, r.close, r.volume_base, r.volume_quote) == tuple(
            float(x) for x in (*ref[1:6], ref[7])
        )
        assert r.trade_count == int(ref[8]) and r.source == ARCHIVE_SOURCES["um"]


def test_spot_archives_with_microsecond_times(
    sqlite_sessions: sessionmaker[Session],
    archive_site: FakeArchiveSite,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    """Spot archives from 2025 on carry µs epochs; SOLUSDT 1h bars of 2025-01 written so."""
    bars = []
    with open(shared_data / "binance_spot_SOLUSDT_1h_2020-2026.csv", newline="") as handle:
        for ts, o, h, lo, c, v in list(csv.reader(handle))[1:]:
            t = datetime.fromisoformat(ts).replace(tzinfo=UTC)
            if (t.year, t.month) == (2025, 1):
                bars.append(SourceBar(int(t.timestamp()) * 1000, o, h, lo, c, v))
    assert len(bars) == 744
    archive_site.publish("spot", name(2025, 1, sym="SOLUSDT"), kline_csv(bars, micro=True))
    csv_text = kline_csv(bars[:1], micro=True)
    assert csv_text.startswith(f"{bars[0].open_ms * 1000},")  # 16 digits: µs
    dl = loader(sqlite_sessions, archive_site, tmp_path / "dl")
    report = dl.run("SOL", "1h", first=date(2025, 1, 1), last=date(2025, 1, 31))
    dl.close()
    assert report.ok
    assert_equals_source(stored(sqlite_sessions, "SOL", "1h"), bars, ARCHIVE_SOURCES["spot"])


def test_nothing_published_is_reported_not_raised(
    sqlite_sessions: sessionmaker[Session], archive_site: FakeArchiveSite, tmp_path: Path
) -> None:
    dl = loader(sqlite_sessions, archive_site, tmp_path / "dl")
    report = dl.run("NOPE", "1d", first=date(2023, 1, 1), last=date(2023, 2, 28), today=TODAY)
    dl.close()
    assert [o.status for o in report.archives] == ["not_published"] * 2
    assert not report.ok and report.gaps is not None and report.gaps.present == 0
    assert report.gaps.missing == 31 + 28
    assert len(archive_site.requests) == 6  # per month: monthly, first and last day checksums
