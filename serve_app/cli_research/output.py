"""What the research commands print: tables of the key metrics, the full JSON, progress.

House style (as ``squall download``): on a terminal a rich table and a live progress bar on
stderr; in a pipe or a log plain fixed-width text and one progress line per step, so output
can be read by people and by ``grep`` alike. ``--json`` prints the route's JSON answer.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from serve_app.execution.runs import RunContext

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

Fmt = Callable[[Any], str]


# ------------------------------------------------------------------------------ formats
def pct(x: Any) -> str:
    """A fraction as a signed percentage: 0.1234 -> +12.34%."""
    return "-" if not isinstance(x, int | float) else f"{x * 100:+.2f}%"


def share(x: Any) -> str:
    """A fraction of time or capital, unsigned: 0.5 -> 50.00%."""
    return "-" if not isinstance(x, int | float) else f"{x * 100:.2f}%"


def ratio(x: Any) -> str:
    return "-" if not isinstance(x, int | float) or isinstance(x, bool) else f"{x:.2f}"


def num(x: Any) -> str:
    return "-" if not isinstance(x, int | float) or isinstance(x, bool) else f"{x:.4f}"


def count(x: Any) -> str:
    return "-" if not isinstance(x, int | float) or isinstance(x, bool) else f"{int(x)}"


def text(x: Any) -> str:
    return "-" if x is None else str(x)


def params(p: dict[str, Any] | None) -> str:
    return " ".join(f"{k}={v}" for k, v in (p or {}).items()) or "-"


def day(iso_time: Any) -> str:
    """``2024-03-01T00:00:00Z`` -> ``2024-03-01`` (midnight), else the time without seconds."""
    s = str(iso_time or "-")
    return s[:10] if s.endswith("T00:00:00Z") else s.replace("T", " ")[:16]


# Backtest-family metrics in the order a reader scans them: (label, key, format).
BACKTEST_METRICS: tuple[tuple[str, str, Fmt], ...] = (
    ("total return", "total_return", pct),
    ("CAGR", "cagr", pct),
    ("annual volatility", "annual_volatility", share),
    ("Sharpe", "sharpe", ratio),
    ("Sortino", "sortino", ratio),
    ("Calmar", "calmar", ratio),
    ("max drawdown", "max_drawdown", pct),
    ("max drawdown bars", "max_drawdown_duration", count),
    ("time under water", "time_under_water", share),
    ("exposure", "exposure", share),
    ("turnover per year", "turnover_annual", ratio),
    ("trades", "trades", count),
    ("win rate", "win_rate", share),
    ("profit factor", "profit_factor", ratio),
    ("avg trade return", "avg_trade_return", pct),
    ("fees paid", "fees_paid", num),
    ("funding paid", "funding_paid", num),
    ("final equity", "final_equity", num),
)


def metric_rows(
    metrics: dict[str, Any], spec: Sequence[tuple[str, str, Fmt]] = BACKTEST_METRICS
) -> list[list[str]]:
    """``[label, value]`` for each metric of ``spec`` present in ``metrics``."""
    return [[label, fmt(metrics[key])] for label, key, fmt in spec if key in metrics]


# ------------------------------------------------------------------------------- output
def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def line(message: str = "") -> None:
    """One plain line on stdout (no markup, never wrapped)."""
    sys.stdout.write(message + "\n")


def table(title: str | None, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table on stdout: rich on a terminal, aligned plain text otherwise (first column left,
    the others right)."""
    out = console()
    if out.is_terminal:
        from rich.table import Table

        t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        for i, h in enumerate(headers):
            t.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for row in rows:
            t.add_row(*row)
        out.print(t)
        return
    if title:
        line(title)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    for row in (headers, *rows):
        cells = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        line("  ".join(cells).rstrip())


def print_json(payload: Any) -> None:
    """The answer as the route gives it, indented (floats printed exactly, NaN as null)."""
    json.dump(payload, sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def find_again(kind: str, run_id: str) -> None:
    """How to find this run again, from the CLI and over HTTP."""
    line(f"run {run_id} ({kind}) is recorded: squall backtest show {run_id}  |  GET /runs/{run_id}")


# ----------------------------------------------------------------------------- progress
class Display:
    """Progress of one long piece of work on stderr: a rich bar on a terminal, else a line
    per tenth of the work (and at the end), so logs stay short."""

    def __init__(self, label: str, unit: str, *, quiet: bool = False) -> None:
        self.label, self.unit, self.quiet = label, unit, quiet
        self.err = console(stderr=True)
        self.live = not quiet and self.err.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._last_tenth = -1
        self._t0 = time.monotonic()

    def __enter__(self) -> Display:
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.err,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None)
        return self

    def update(self, done: int, total: int | None) -> None:
        if self.quiet:
            return
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=total)
            return
        tenth = 10 * done // total if total else 0
        if tenth > self._last_tenth:
            self._last_tenth = tenth
            of = f"/{total}" if total else ""
            elapsed = time.monotonic() - self._t0
            print(
                f"{self.label}: {done}{of} {self.unit} ({elapsed:.1f}s)",
                file=sys.stderr,
                flush=True,
            )

    def __exit__(self, *_exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


class ShownRun(RunContext):
    """The service's :class:`RunContext` (heartbeat, progress in the registry, cancel via
    ``DELETE /runs/{id}``) that also shows the progress it is given."""

    def __init__(self, display: Display, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.display = display

    def progress(self, done: int, total: int | None = None) -> None:
        super().progress(done, total)
        current = self.current
        self.display.update(done, None if current is None else int(current["total"]))
