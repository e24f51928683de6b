"""``squall import`` of published ``.zip`` archives and ``squall download`` end to end.

The archive site is the loopback fake of ``tests/fakes/archive_site.py``, serving zips built at
test time from ``../shared/data``; references are the source files read with the csv module.
One test kills a real ``squall download`` process mid-archive and resumes it.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ingestion.archive import ArchiveName
from serve_app.cli import main
from serve_app.settings import Settings
from storage.candles import CandleRepository
from storage.engine import make_engine, session_factory
from storage.models import Candle
from tests.fakes import archive_site as fakes
from tests.fakes.archive_site import FakeArchiveSite, SourceBar, kline_csv, read_ohlcv6

archive_site = fakes.archive_site

pytestmark = pytest.mark.realdata

ROOT = Path(__file__).resolve().parents[2]
KLINE12_2022_01 = "binance_spot_BTCUSDT_1h_2022-01_kline12.csv"


def run(capsys: pytest.CaptureFixture[str], settings: Settings, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv), settings=settings)
    out, err = capsys.readouterr()
    return code, out, err


def candles(url: str, coin: str = "BTC", interval: str = "1h") -> list:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            return list(CandleRepository(s).frame(coin, interval).itertuples(index=False))
    finally:
        engine.dispose()


def count(url: str) -> int:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            return int(s.scalar(select(func.count()).select_from(Candle)) or 0)
    finally:
        engine.dispose()


def month_bars(bars: list[SourceBar], year: int, month: int) -> list[SourceBar]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return [b for b in bars if start.timestamp() * 1000 <= b.open_ms < end.timestamp() * 1000]


def published_zip(tmp_path: Path, shared_data: Path) -> tuple[Path, list[list[str]]]:
    """``BTCUSDT-1h-2022-01.zip`` as data.binance.vision publishes it (the kline12 file is that
    month's CSV with a header added: the header is dropped) and its ``.CHECKSUM`` beside it."""
    with open(shared_data / KLINE12_2022_01, newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    text = "".join(",".join(r) + "\n" for r in rows)
    data = fakes.make_zip("BTCUSDT-1h-2022-01.zip", text)
    path = tmp_path / "BTCUSDT-1h-2022-01.zip"
    path.write_bytes(data)
    (tmp_path / "BTCUSDT-1h-2022-01.zip.CHECKSUM").write_text(fakes.checksum_text(data, path.name))
    return path, rows


# -------------------------------------------------------------------------------- import
def test_import_accepts_the_published_zip(
    capsys: pytest.CaptureFixture[str], database_url: str, shared_data: Path, tmp_path: Path
) -> None:
    path, rows = published_zip(tmp_path, shared_data)
    settings = Settings(database_url=database_url)
    code, out, _ = run(capsys, settings, "import", str(path), "--json")
    assert code == 0
    (report,) = json.loads(out)
    assert (report["coin"], report["interval"], report["layout"]) == ("BTC", "1h", "kline12")
    assert (report["rows_read"], report["inserted"], report["rejected"]) == (744, 744, 0)
    stored = candles(database_url)
    assert len(stored) == len(rows) == 744  # SOURCES.md: 744 rows, no gaps or duplicates
    for c, r in zip(stored, rows, strict=True):
        assert c.ts * 1000 == int(r[0])
        assert (c.open, c.high, c.low, c.close, c.volume_base, c.volume_quote) == tuple(
            float(x) for x in (*r[1:6], r[7])
        )
        assert c.trade_count == int(r[8])
        assert c.source == "file:kline12"  # a zip outside the archive layout: the file source
    code, out, _ = run(capsys, settings, "import", str(path), "--json")
    (again,) = json.loads(out)
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 744)


def test_import_refuses_a_zip_whose_checksum_does_not_match(
    capsys: pytest.CaptureFixture[str], database_url: str, shared_data: Path, tmp_path: Path
) -> None:
    path, _ = published_zip(tmp_path, shared_data)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    good_csv = shared_data / "binance_spot_BTCUSDT_4h_2017-2026.csv"
    settings = Settings(database_url=database_url)
    code, out, err = run(capsys, settings, "import", str(good_csv), str(path))
    assert code == 1 and out == ""
    assert "BTCUSDT-1h-2022-01.zip" in err and "checksum mismatch" in err
    assert count(database_url) == 0  # not even the good file of the same command


# ------------------------------------------------------------------------------ download
def test_download_end_to_end_and_rerun(
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    archive_site: FakeArchiveSite,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    bars = read_ohlcv6(shared_data / "binance_spot_BTCUSDT_1h_2023-06_2024-03.csv")
    for m in (6, 7, 8):
        archive_site.publish(
            "spot",
            ArchiveName("BTCUSDT", "1h", 2023, m, None),
            kline_csv(month_bars(bars, 2023, m)),
        )
    settings = Settings(
        database_url=database_url,
        binance_archive_url=archive_site.url,
        download_dir=str(tmp_path / "downloads"),
    )
    argv = (
        "download",
        "--coin",
        "BTC",
        "--interval",
        "1h",
        "--start",
        "2023-05",
        "--end",
        "2023-08",
    )
    code, out, err = run(capsys, settings, *argv, "--json")
    assert code == 0, err
    (report,) = json.loads(out)
    expected = [b for m in (6, 7, 8) for b in month_bars(bars, 2023, m)]
    assert report["totals"]["inserted"] == len(expected) == (30 + 31 + 31) * 24
    assert (report["totals"]["imported"], report["totals"]["not_published"]) == (3, 1)
    assert report["gaps"]["missing"] == 31 * 24 and report["gaps"]["gaps"][0]["start_iso"] == (
        "2023-05-01T00:00:00Z"
    )
    # progress on stderr, one line per archive when it is not a terminal (the plan grew by
    # the two daily checksums asked for May, whose monthly archive is not published)
    assert "[6/6] BTC 1h spot BTCUSDT-1h-2023-08.zip imported (fetched" in err
    stored = candles(database_url)
    assert [c.ts * 1000 for c in stored] == [b.open_ms for b in expected]
    assert [c.close for c in stored] == [float(b.close) for b in expected]
    assert {c.source for c in stored} == {"binance-archive:spot"}

    zips_before = [r for r in archive_site.requests if r.path.endswith(".zip")]
    code, out, err = run(capsys, settings, *argv)
    assert code == 0
    assert [r for r in archive_site.requests if r.path.endswith(".zip")] == zips_before
    assert "3 imported (0 fetched" in out and "inserted 0, updated 0, unchanged 2208" in out
    assert "not published: BTCUSDT-1h-2023-05.zip" in out
    assert "missing 744 in 1 gap(s)" in out


def test_download_with_a_corrupted_archive_exits_1_naming_it(
    capsys: pytest.CaptureFixture[str],
    archive_site: FakeArchiveSite,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    bars = read_ohlcv6(shared_data / "binance_spot_BTCUSDT_1h_2023-06_2024-03.csv")
    name = ArchiveName("BTCUSDT", "1h", 2023, 6, None)
    archive_site.publish("spot", name, kline_csv(month_bars(bars, 2023, 6)))
    path = archive_site.path_of("spot", name)
    data = archive_site.files[path]
    archive_site.files[path] = data[:-1] + bytes([data[-1] ^ 0xFF])  # the zip's last byte
    url = f"sqlite:///{tmp_path / 'squall.db'}"
    settings = Settings(
        database_url=url, binance_archive_url=archive_site.url, download_dir=str(tmp_path / "d")
    )
    argv = (
        "download",
        "--coin",
        "BTC",
        "--interval",
        "1h",
        "--start",
        "2023-06",
        "--end",
        "2023-06",
    )
    code, out, _ = run(capsys, settings, *argv, "--quiet")
    assert code == 1
    assert "refused: BTCUSDT-1h-2023-06.zip:" in out and "checksum mismatch" in out
    assert count(url) == 0


def test_killed_download_resumes_without_fetching_twice(
    capsys: pytest.CaptureFixture[str],
    archive_site: FakeArchiveSite,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    """A real ``squall download`` process is killed (SIGKILL) halfway through its 3rd archive;
    the next run resumes that archive from its .part and asks for nothing it already has."""
    bars = read_ohlcv6(shared_data / "binance_spot_BTCUSDT_1h_2023-06_2024-03.csv")
    months = (6, 7, 8, 9)
    for m in months:
        archive_site.publish(
            "spot",
            ArchiveName("BTCUSDT", "1h", 2023, m, None),
            kline_csv(month_bars(bars, 2023, m)),
        )
    third = archive_site.path_of("spot", ArchiveName("BTCUSDT", "1h", 2023, 8, None))
    size = len(archive_site.files[third])
    archive_site.stall(third, after=size // 2)
    url = f"sqlite:///{tmp_path / 'squall.db'}"
    cache = tmp_path / "downloads"
    env = dict(
        os.environ,
        SQUALL_DATABASE_URL=url,
        SQUALL_BINANCE_ARCHIVE_URL=archive_site.url,
        SQUALL_DOWNLOAD_DIR=str(cache),
    )
    argv = [
        "download",
        "--coin",
        "BTC",
        "--interval",
        "1h",
        "--start",
        "2023-06",
        "--end",
        "2023-09",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve_app.cli", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert archive_site.stalled.wait(60), "the download never reached the 3rd archive"
        part = cache / (third.lstrip("/") + ".part")
        deadline = time.monotonic() + 20
        while not (part.exists() and part.stat().st_size == size // 2):
            assert time.monotonic() < deadline, "the .part never got the bytes sent"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(20)
        if proc.stderr is not None:
            proc.stderr.close()
        archive_site.release()
    assert proc.returncode == -signal.SIGKILL
    assert len(candles(url)) == sum(len(month_bars(bars, 2023, m)) for m in (6, 7))

    before = len(archive_site.requests)
    settings = Settings(
        database_url=url, binance_archive_url=archive_site.url, download_dir=str(cache)
    )
    code, out, _ = run(capsys, settings, *argv, "--json")
    assert code == 0
    new = archive_site.requests[before:]
    assert not [r for r in new if "2023-06" in r.path or "2023-07" in r.path]
    assert [(r.status, r.range) for r in new if r.path == third] == [(206, f"bytes={size // 2}-")]
    for path, data in archive_site.files.items():
        if path.endswith(".zip"):
            assert archive_site.bytes_sent(path) == len(data), path
    (report,) = json.loads(out)
    assert report["totals"]["inserted"] == sum(len(month_bars(bars, 2023, m)) for m in (8, 9))
    assert report["totals"]["unchanged"] == sum(len(month_bars(bars, 2023, m)) for m in (6, 7))
    expected = [b for m in months for b in month_bars(bars, 2023, m)]
    stored = candles(url)
    assert [c.ts * 1000 for c in stored] == [b.open_ms for b in expected]
    assert [c.volume_base for c in stored] == [float(b.volume) for b in expected]
