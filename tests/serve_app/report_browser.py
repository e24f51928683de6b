"""Headless Chromium (Debian's ``chromium`` package) driven by Playwright over CDP, to open
report pages from a loopback HTTP server, record every request they make, wait until their
charts are drawn and take screenshots. No browser is downloaded: Playwright launches the
system binary (``executable_path``)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RENDER_TIMEOUT_MS = 30_000


def chromium_path() -> str | None:
    """The system Chromium, if installed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """A static HTTP server for ``folder`` on a free loopback port; yields its origin."""
    port = _free_port()
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class Opened:
    """A page after its charts rendered, with every request it made."""

    page: Any
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def eval(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    """A headless Chromium with a fresh, empty profile (closed on exit)."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="squall-chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile,
            executable_path=exe,
            headless=True,
            args=FLAGS,
            viewport={"width": 1200, "height": 900},
        )
        try:
            yield ctx
        finally:
            ctx.close()


def open_report(ctx: Any, url: str) -> Opened:
    """Open ``url`` in a new tab, wait for ``<html data-rendered>`` and return the page."""
    page = ctx.new_page()
    opened = Opened(page)
    page.on("request", lambda r: opened.requests.append(r.url))
    page.on("requestfailed", lambda r: opened.failed.append(r.url))
    page.on(
        "console", lambda m: opened.console_errors.append(m.text) if m.type == "error" else None
    )
    page.on("pageerror", lambda e: opened.console_errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("html[data-rendered]", state="attached", timeout=RENDER_TIMEOUT_MS)
    return opened


def screenshot(opened: Opened, path: Path) -> None:
    """A full-page PNG (8-bit palette would be smaller, but Playwright writes RGB)."""
    opened.page.screenshot(path=str(path), full_page=True)
