"""Binance's public kline archives (data.binance.vision): names, layout, checksums, contents.

An archive is a zip named ``{SYMBOL}-{interval}-{YYYY}-{MM}.zip`` (monthly) or
``{SYMBOL}-{interval}-{YYYY}-{MM}-{DD}.zip`` (daily) holding exactly one CSV of the same stem,
published beside ``<name>.zip.CHECKSUM`` whose text is ``<sha256 hex>  <name>.zip`` (the
``sha256sum`` format). The CSV is read by the one candle parser, ``ingestion.fileimport``, so an
archive's rows are validated exactly as any imported file's are.

The layout on the site (and in the download cache, which mirrors it):
``data/spot/{monthly|daily}/klines/{SYMBOL}/{interval}/<name>.zip`` and the same under
``data/futures/um/`` for USD-M futures.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from ingestion.fileimport import ParseResult, parse_candle_text
from storage.errors import DataIntegrityError

Market = Literal["spot", "um"]
Period = Literal["monthly", "daily"]
MARKETS: Final[tuple[Market, ...]] = ("spot", "um")

#: The ``source`` recorded on candles that came from a Binance archive, per market. Spot and
#: futures prices differ, so they are two sources (as the REST provider's ``binance:spot`` and
#: ``binance:um`` are). ``squall download`` and ``squall import`` of a cached archive use these.
ARCHIVE_SOURCES: Final[dict[Market, str]] = {
    "spot": "binance-archive:spot",
    "um": "binance-archive:um",
}

_MARKET_PATH: Final[dict[Market, str]] = {"spot": "data/spot", "um": "data/futures/um"}
_NAME = re.compile(
    r"(?P<symbol>[A-Z0-9]+)-(?P<interval>\w+)-(?P<year>\d{4})-(?P<month>\d{2})(?:-(?P<day>\d{2}))?"
    r"\.zip"
)
_CHECKSUM_LINE = re.compile(r"(?P<hex>[0-9a-fA-F]{64})\s+\*?(?P<name>\S+)")
_CHUNK: Final = 1 << 20
#: Largest CSV we unpack from one archive; a month of 1m klines is about 5 MB.
MAX_CSV_BYTES: Final = 1 << 30


class ChecksumMismatchError(DataIntegrityError):
    """An archive's bytes do not hash to its published sha256; nothing from it is used."""


@dataclass(frozen=True)
class ArchiveName:
    """What a Binance archive's file name says: pair, interval and the month or day covered."""

    symbol: str
    interval: str
    year: int
    month: int
    day: int | None  # None for a monthly archive

    @property
    def period(self) -> Period:
        return "monthly" if self.day is None else "daily"

    @property
    def filename(self) -> str:
        day = "" if self.day is None else f"-{self.day:02d}"
        return f"{self.symbol}-{self.interval}-{self.year:04d}-{self.month:02d}{day}.zip"


def parse_archive_name(name: str) -> ArchiveName | None:
    """The parts of an archive file name such as ``BTCUSDT-1h-2024-01.zip``; None otherwise."""
    found = _NAME.fullmatch(Path(name).name)
    if found is None:
        return None
    day = found["day"]
    return ArchiveName(
        found["symbol"],
        found["interval"],
        int(found["year"]),
        int(found["month"]),
        None if day is None else int(day),
    )


def archive_path(market: Market, name: ArchiveName) -> str:
    """The archive's path on the site and in the cache, e.g. ``data/spot/monthly/klines/…``."""
    folder = f"{_MARKET_PATH[market]}/{name.period}/klines/{name.symbol}/{name.interval}"
    return f"{folder}/{name.filename}"


def market_from_path(path: str | os.PathLike[str]) -> Market | None:
    """The market an archive belongs to when its path is in the site's layout, else None."""
    parts = Path(path).parts
    for i in range(len(parts) - 3):
        if parts[i] == "data" and parts[i + 1] == "spot" and parts[i + 3] == "klines":
            return "spot"
        if parts[i : i + 3] == ("data", "futures", "um") and parts[i + 4 : i + 5] == ("klines",):
            return "um"
    return None


def parse_checksum(text: str, filename: str) -> str:
    """The sha256 hex digest that a ``.CHECKSUM`` text gives for ``filename`` (lower case).

    Raises ``DataIntegrityError`` when the text is not in ``sha256sum`` format or names
    another file (a checksum for the wrong archive must not pass as valid).
    """
    found = _CHECKSUM_LINE.match(text.strip())
    if found is None:
        raise DataIntegrityError(
            f"{filename}.CHECKSUM is not '<sha256 hex>  <name>' (sha256sum format): {text[:120]!r}"
        )
    if Path(found["name"]).name != filename:
        raise DataIntegrityError(
            f"{filename}.CHECKSUM names another file, {found['name']!r}; expected {filename!r}"
        )
    return found["hex"].lower()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_archive(path: str | os.PathLike[str], expected_sha256: str, *, label: str) -> None:
    """Raise ``ChecksumMismatchError`` naming ``label`` unless the file hashes as published."""
    actual = sha256_file(path)
    if actual != expected_sha256.lower():
        raise ChecksumMismatchError(
            f"{label}: checksum mismatch, refused (nothing stored): sha256 is {actual}, "
            f"the published .CHECKSUM says {expected_sha256.lower()}"
        )


def verify_beside(path: Path) -> bool:
    """Verify ``path`` against ``<path>.CHECKSUM`` when that file exists; True if it did."""
    checksum = path.with_name(path.name + ".CHECKSUM")
    if not checksum.is_file():
        return False
    expected = parse_checksum(checksum.read_text(encoding="utf-8"), path.name)
    verify_archive(path, expected, label=str(path))
    return True


def read_archive_text(path: str | os.PathLike[str]) -> str:
    """The text of the one CSV inside a Binance archive (UTF-8, BOM tolerated).

    Raises ``DataIntegrityError`` when the file is not a zip, holds no CSV or more than one
    file, or the CSV unpacks to more than ``MAX_CSV_BYTES``.
    """
    label = Path(path).name
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1 or not members[0].filename.lower().endswith(".csv"):
                names = ", ".join(m.filename for m in members) or "nothing"
                raise DataIntegrityError(
                    f"{label}: a Binance archive holds exactly one CSV; this one holds {names}"
                )
            member = members[0]
            if member.file_size > MAX_CSV_BYTES:
                raise DataIntegrityError(
                    f"{label}: {member.filename} unpacks to {member.file_size} bytes, "
                    f"more than the {MAX_CSV_BYTES} one archive may hold"
                )
            data = archive.read(member)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DataIntegrityError(f"{label}: not a readable zip archive: {exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataIntegrityError(f"{label}: the CSV inside is not UTF-8 text: {exc}") from exc


def parse_archive(
    path: str | os.PathLike[str],
    *,
    coin: str,
    interval: str,
    source: str | None = None,
    now_s: int | None = None,
) -> ParseResult:
    """Parse the CSV inside an archive with the file importer; see ``parse_candle_text``."""
    text = read_archive_text(path)
    return parse_candle_text(text, coin=coin, interval=interval, now_s=now_s, source=source)
