"""A fake data.binance.vision: a real HTTP server on 127.0.0.1 serving kline archives.

It serves whatever bytes a test publishes at the site's real paths
(``/data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01.zip`` and its ``.CHECKSUM``),
honours ``Range: bytes=N-`` like the real site (206 with ``Content-Range``, 416 past the end),
and answers 404 for anything not published. Archives are built at test time from the real
files in ``../shared/data`` with the helpers below (one CSV per zip, the Binance name, the
``sha256sum``-format checksum), so the downloader sees the published format byte for byte.

Misbehaviour on command: ``cut(path, after)`` sends the headers of the whole file, then only
``after`` bytes, then closes the connection; ``stall(path, after)`` sends ``after`` bytes and
then hangs until ``release()`` (so a test can kill the client mid-body); ``fail(path,
status)`` answers an error status. Every request is recorded in ``requests`` (path, Range
header, status, body bytes sent).
"""

from __future__ import annotations

import csv
import hashlib
import io
import threading
import zipfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ingestion.archive import ArchiveName, Market, archive_path

H_MS = 3_600_000


@dataclass(frozen=True)
class Served:
    path: str
    range: str | None
    status: int
    sent: int  # body bytes written


@dataclass
class _Fault:
    kind: str  # "cut" | "stall" | "fail"
    after: int = 0
    status: int = 500


class FakeArchiveSite:
    """The HTTP server; use as a context manager or through the ``archive_site`` fixture."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[Served] = []
        self._faults: dict[str, deque[_Fault]] = {}
        self._lock = threading.Lock()
        self.stalled = threading.Event()  # set when a stalled response has sent its bytes
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeArchiveSite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # ------------------------------------------------------------------ publishing
    def publish(self, market: Market, name: ArchiveName, csv_text: str) -> bytes:
        """Publish ``csv_text`` as ``name``'s zip with its checksum; returns the zip bytes."""
        data = make_zip(name.filename, csv_text)
        path = "/" + archive_path(market, name)
        self.files[path] = data
        self.files[path + ".CHECKSUM"] = checksum_text(data, name.filename).encode()
        return data

    def path_of(self, market: Market, name: ArchiveName) -> str:
        return "/" + archive_path(market, name)

    # --------------------------------------------------------------------- faults
    def cut(self, path: str, after: int, times: int = 1) -> None:
        self._add(path, _Fault("cut", after), times)

    def stall(self, path: str, after: int) -> None:
        self._add(path, _Fault("stall", after), 1)

    def fail(self, path: str, status: int = 503, times: int = 1) -> None:
        self._add(path, _Fault("fail", status=status), times)

    def release(self) -> None:
        self._release.set()

    def _add(self, path: str, fault: _Fault, times: int) -> None:
        with self._lock:
            self._faults.setdefault(path, deque()).extend([fault] * times)

    def _take(self, path: str) -> _Fault | None:
        with self._lock:
            queue = self._faults.get(path)
            return queue.popleft() if queue else None

    # ------------------------------------------------------------------ inspecting
    def served(self, path: str) -> list[Served]:
        return [r for r in self.requests if r.path == path]

    def bytes_sent(self, path: str) -> int:
        return sum(r.sent for r in self.served(path))

    # --------------------------------------------------------------------- server
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _record(self, status: int, sent: int) -> None:
                with site._lock:
                    site.requests.append(Served(self.path, self.headers.get("Range"), status, sent))

            def _empty(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._record(status, 0)

            def do_GET(self) -> None:
                fault = site._take(self.path)
                if fault is not None and fault.kind == "fail":
                    return self._empty(fault.status)
                data = site.files.get(self.path)
                if data is None:
                    return self._empty(404)
                start, status = 0, 200
                wanted = self.headers.get("Range")
                if wanted:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        return self._empty(416)
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if fault is None:
                    self.wfile.write(body)
                    return self._record(status, len(body))
                self.wfile.write(body[: fault.after])
                self.wfile.flush()
                self._record(status, min(fault.after, len(body)))
                if fault.kind == "stall":
                    site.stalled.set()
                    site._release.wait(60)
                self.close_connection = True

        return Handler


@pytest.fixture
def archive_site() -> Iterator[FakeArchiveSite]:
    with FakeArchiveSite() as site:
        yield site


# ------------------------------------------------------------------------ archive building
def make_zip(filename: str, csv_text: str) -> bytes:
    """A zip like Binance's: one deflated ``<stem>.csv``, with a fixed timestamp (stable hash)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(
            filename.removesuffix(".zip") + ".csv", date_time=(2024, 1, 1, 0, 0, 0)
        )
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, csv_text)
    return buffer.getvalue()


def checksum_text(data: bytes, filename: str) -> str:
    """The ``.CHECKSUM`` content: ``<sha256 hex>  <name>.zip`` (sha256sum format)."""
    return f"{hashlib.sha256(data).hexdigest()}  {filename}\n"


@dataclass(frozen=True)
class SourceBar:
    """One bar of a 6-column source file, its fields kept as the file's text."""

    open_ms: int
    open: str
    high: str
    low: str
    close: str
    volume: str


def read_ohlcv6(path: Path) -> list[SourceBar]:
    """A ``timestamp,open,high,low,close,volume`` file (epoch ms), read with the csv module,
    one bar per timestamp (the last row wins, as SOURCES.md says to dedup), ascending."""
    bars: dict[int, SourceBar] = {}
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for ts, o, h, lo, c, v in reader:
            bars[int(ts)] = SourceBar(int(ts), o, h, lo, c, v)
    return [bars[k] for k in sorted(bars)]


def quote_volume(bar: SourceBar) -> str:
    """The quote volume written into built archives (the 6-column source has none)."""
    return f"{float(bar.volume) * float(bar.close):.8f}"


def trade_count(bar: SourceBar) -> int:
    """The trade count written into built archives (the 6-column source has none)."""
    return int(float(bar.volume)) + 1


def kline_csv(bars: list[SourceBar], step_ms: int = H_MS, *, micro: bool = False) -> str:
    """Binance spot kline rows (12 columns, no header) for ``bars``; µs times with ``micro``
    (spot archives from 2025 on), otherwise ms."""
    unit = 1000 if micro else 1
    lines = []
    for b in bars:
        open_t = b.open_ms * unit
        close_t = open_t + step_ms * unit - 1
        lines.append(
            f"{open_t},{b.open},{b.high},{b.low},{b.close},{b.volume},{close_t},"
            f"{quote_volume(b)},{trade_count(b)},0,0,0"
        )
    return "\n".join(lines) + "\n"
