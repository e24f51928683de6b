"""Progress of long CLI commands, in the house style of ``squall download``.

On a terminal, a live rich bar on stderr; otherwise (logs, CI, pipes) one stderr line per step,
at most one a second except the last; nothing with ``--quiet``. stdout keeps the summary (or
the ``--json`` report), so progress never mixes with what a script reads.

Used by ``squall import`` (files and rows), ``squall backfill`` / ``gaps --fix`` (pages and
bars: :class:`PagedProvider` counts the pages a provider serves), ``squall features build``
(blocks, through the service's ``on_progress``) and ``squall sweep status --follow`` (the
registry's progress).
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from ingestion.providers.base import Provider

LINE_EVERY_S = 1.0


def add_quiet(parser: Any) -> None:
    """``--quiet`` on a command's parser."""
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


class Steps:
    """``done`` of ``total`` ``unit`` with a short ``info`` text; a bar or lines (see above).

    ``total=None`` is an open-ended count (the bar pulses). ``lines=False`` keeps the bar but
    prints no lines off a terminal (a one-step command whose summary follows at once).
    ``console`` is for tests.
    """

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        unit: str = "",
        quiet: bool = False,
        lines: bool = True,
        console: Any = None,
    ) -> None:
        from rich.console import Console

        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self.info = ""
        self.console = console if console is not None else Console(stderr=True)
        self.live = not quiet and bool(self.console.is_terminal)
        self.quiet = quiet or (not self.live and not lines)
        self._progress: Any = None
        self._task: Any = None
        self._last_line = 0.0

    def start(self) -> Steps:
        """Show the bar (on a terminal); returns self."""
        if self.live and self._progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total, info="")
        return self

    def close(self) -> None:
        """Stop the bar, leaving its last state on the terminal."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> Steps:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def update(
        self, done: int, total: int | None = None, info: str | None = None, *, force: bool = False
    ) -> None:
        """Set the count (and the total, when it becomes known); ``force`` prints the line
        even within a second of the last one."""
        self.done = int(done)
        if total is not None:
            self.total = int(total)
        if info is not None:
            self.info = info
        if self.quiet:
            return
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, total=self.total, info=self.info)
            return
        finished = self.total is not None and self.done >= self.total
        now = time.monotonic()
        if force or finished or now - self._last_line >= LINE_EVERY_S:
            self._last_line = now
            of = f"/{self.total}" if self.total is not None else ""
            info = f" {self.info}" if self.info else ""
            print(f"[{self.done}{of} {self.unit}] {self.label}{info}", file=sys.stderr, flush=True)

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.update(self.done + n, info=info)

    def on_progress(self, done: int, total: int) -> None:
        """The ``on_progress(done, total)`` callback services take."""
        self.update(done, total)


class PagedProvider:
    """A provider that reports each page of candles it serves to ``steps``: the bar advances
    by the bars the page asked for (capped at the total), the info counts pages and bars."""

    def __init__(self, inner: Provider, steps: Steps, step_s: int) -> None:
        self.inner, self.steps, self.step_s = inner, steps, step_s
        self.name = inner.name
        self.pages = 0
        self.bars = 0

    @property
    def source(self) -> str:
        return self.inner.source

    def fetch_candles(
        self, coin: str, interval: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        frame = self.inner.fetch_candles(coin, interval, start, end, now=now)
        self.pages += 1
        self.bars += len(frame)
        asked = max(0, (end - start) // self.step_s + 1)
        total = self.steps.total
        done = self.steps.done + asked if total is None else min(total, self.steps.done + asked)
        self.steps.update(done, info=f"{coin} {interval}: {self.pages} pages, {self.bars} bars")
        return frame

    def fetch_snapshot(self, coin: str, *, now: int | None = None) -> dict[str, Any]:
        return self.inner.fetch_snapshot(coin, now=now)

    def fetch_funding(
        self, coin: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        return self.inner.fetch_funding(coin, start, end, now=now)

    def fetch_open_interest(
        self, coin: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        return self.inner.fetch_open_interest(coin, start, end, now=now)

    def close(self) -> None:
        self.inner.close()


def follow_run(
    poll: Any,
    label: str,
    *,
    unit: str = "",
    quiet: bool = False,
    every_s: float = 1.0,
    console: Any = None,
) -> dict[str, Any]:
    """Poll ``poll()`` (a dict with ``status`` and ``progress``: ``done``/``total``, maybe
    ``unit`` and ``eta_s``) until the run is no longer queued or running; shows its progress;
    returns the last dict."""
    state: dict[str, Any] = poll()
    p = state.get("progress") or {}
    with Steps(
        label,
        total=p.get("total") or None,
        unit=str(p.get("unit") or unit),
        quiet=quiet,
        console=console,
    ) as steps:
        while True:
            p = state.get("progress") or {}
            eta = p.get("eta_s")
            info = state["status"] + ("" if eta is None else f", ETA {eta:.0f}s")
            over = state["status"] not in ("queued", "running")
            steps.update(int(p.get("done") or 0), p.get("total") or None, info, force=over)
            if over:
                return state
            time.sleep(every_s)
            state = poll()
