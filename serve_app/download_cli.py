"""``squall download``: the command-line face of :mod:`ingestion.download`.

Kept apart from ``serve_app.cli`` (which only registers the command) and light to import: the
parser is built on every ``squall`` call; the downloader and ``rich`` are imported when a
download runs. Progress goes to stderr: a live bar on a terminal, one line per archive
otherwise (logs, CI); stdout gets the summary, or with ``--json`` the machine-readable report.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from serve_app.settings import Settings

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from ingestion.download import ArchiveOutcome, DownloadReport

_MAX_LISTED = 20


def add_download_parser(sub: Any, handler: Callable[[argparse.Namespace, Settings], int]) -> None:
    """Register ``download`` on the ``squall`` subparsers."""
    down = sub.add_parser(
        "download",
        help="fetch Binance's public kline archives for a range, verify and import them",
    )
    down.add_argument("--coin", action="append", required=True, help="base asset; repeatable")
    down.add_argument("--interval", action="append", required=True, help="e.g. 1h; repeatable")
    down.add_argument("--start", required=True, help="first month or day: YYYY-MM or YYYY-MM-DD")
    down.add_argument(
        "--end", help="last month or day, inclusive (default: yesterday, the last finished day)"
    )
    down.add_argument("--market", choices=("spot", "um"), default="spot", help="um: USD-M futures")
    down.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    down.add_argument("--quiet", action="store_true", help="no progress on stderr")
    down.set_defaults(func=handler)


def _size(n: int) -> str:
    from rich.filesize import decimal

    return str(decimal(n))


class _LineProgress:
    """One stderr line per finished archive (for logs and pipes)."""

    def __init__(self, label: str) -> None:
        self.label, self.total, self.done = label, 0, 0

    def planned(self, more: int) -> None:
        self.total += more

    def started(self, name: str, total_bytes: int | None, offset: int) -> None:
        pass

    def received(self, n: int) -> None:
        pass

    def finished(self, outcome: ArchiveOutcome) -> None:
        self.done += 1
        if outcome.status == "imported":
            how = f"fetched {_size(outcome.bytes_fetched)}" if outcome.fetched else "cached"
            what = f"({how}) inserted {outcome.inserted}"
        else:
            what = outcome.message
        print(
            f"[{self.done}/{self.total}] {self.label} {outcome.name} {outcome.status} {what}",
            file=sys.stderr,
            flush=True,
        )


class _BarProgress:
    """A live rich bar: archives done of planned with bytes fetched, and the current file."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress = progress
        self.fetched = 0
        self.archives: TaskID = progress.add_task(label, total=0, info="")
        self.file: TaskID = progress.add_task("", total=None, info="", visible=False)

    def _info(self) -> None:
        task = self.progress.tasks[self.archives]
        info = f"{int(task.completed)}/{int(task.total or 0)} archives, {_size(self.fetched)}"
        self.progress.update(self.archives, info=info)

    def planned(self, more: int) -> None:
        task = self.progress.tasks[self.archives]
        self.progress.update(self.archives, total=(task.total or 0) + more)
        self._info()

    def started(self, name: str, total_bytes: int | None, offset: int) -> None:
        self.progress.reset(
            self.file, total=total_bytes, completed=offset, description=f"  {name}", visible=True
        )

    def received(self, n: int) -> None:
        self.fetched += n
        self.progress.advance(self.file, n)
        task = self.progress.tasks[self.file]
        of = f"/{_size(int(task.total))}" if task.total else ""
        self.progress.update(self.file, info=f"{_size(int(task.completed))}{of}")
        self._info()

    def finished(self, outcome: ArchiveOutcome) -> None:
        self.progress.advance(self.archives, 1)
        self._info()


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_json(r: DownloadReport) -> dict[str, Any]:
    out = r.as_dict()
    if out["gaps"] is not None:
        g = out["gaps"]
        g.update(start_iso=_iso(g["start"]), end_iso=_iso(g["end"]))
        for gap in g["gaps"]:
            gap.update(start_iso=_iso(gap["start"]), end_iso=_iso(gap["end"]))
    return out


def _print_summary(r: DownloadReport) -> None:
    t = r.as_dict()["totals"]
    cached = t["imported"] - sum(a.fetched and a.status == "imported" for a in r.archives)
    print(
        f"{r.coin} {r.interval} {r.market} ({r.symbol}) {r.first_day} .. {r.last_day}: "
        f"{len(r.archives)} archives: {t['imported']} imported ({t['fetched']} fetched, "
        f"{_size(t['bytes_fetched'])}; {cached} from the cache), {t['not_published']} not "
        f"published, {t['refused']} refused, {t['failed']} failed"
    )
    print(
        f"  rows read {t['rows_read']}, inserted {t['inserted']}, updated {t['updated']}, "
        f"unchanged {t['unchanged']}, rejected {t['rejected']}"
    )
    for a in r.archives:
        if a.status != "imported":
            print(f"  {a.status.replace('_', ' ')}: {a.name}: {a.message}")
    if r.stopped:
        print(f"  stopped: {r.stopped}")
    if not t["imported"]:
        print(
            f"  nothing published for {r.symbol} {r.interval} ({r.market}) in this range: "
            "check --coin, --interval and --market"
        )
    g = r.gaps
    if g is not None:
        print(
            f"  range {_iso(g.start)} .. {_iso(g.end)}: expected {g.expected}, present "
            f"{g.present}, missing {g.missing} in {len(g.gaps)} gap(s)"
        )
        for gap in g.gaps[:_MAX_LISTED]:
            print(f"    {_iso(gap.start)} .. {_iso(gap.end)}  missing {gap.missing}")
        if len(g.gaps) > _MAX_LISTED:
            print(f"    ... and {len(g.gaps) - _MAX_LISTED} more (--json lists all)")


def run_download_command(args: argparse.Namespace, settings: Settings) -> int:
    """Download every --coin x --interval; exit 1 unless every series came through whole."""
    from contextlib import nullcontext

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    from ingestion.archive_fetch import ArchiveHttp
    from ingestion.download import Downloader, DownloadObserver, parse_day
    from storage import migrate
    from storage.engine import make_engine, session_factory

    first = parse_day(args.start)
    last = parse_day(args.end, end=True) if args.end else None
    console = Console(stderr=True)
    live = not args.quiet and console.is_terminal
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
        disable=not live,
    )
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    reports: list[DownloadReport] = []
    try:
        with progress if live else nullcontext():
            for coin in args.coin:
                for interval in args.interval:
                    label = f"{coin.upper()} {interval} {args.market}"
                    observer: DownloadObserver | None = None
                    if live:
                        observer = _BarProgress(progress, label)
                    elif not args.quiet:
                        observer = _LineProgress(label)
                    loader = Downloader(
                        session_factory(engine),
                        base_url=settings.binance_archive_url,
                        cache_dir=settings.download_dir,
                        quote_asset=settings.quote_asset,
                        max_rows=settings.max_import_rows,
                        http=ArchiveHttp(timeout_s=settings.binance_timeout_s),
                        observer=observer,
                    )
                    try:
                        reports.append(
                            loader.run(coin, interval, first=first, last=last, market=args.market)
                        )
                    finally:
                        loader.close()
    finally:
        engine.dispose()
    if args.json:
        json.dump([_as_json(r) for r in reports], sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        for r in reports:
            _print_summary(r)
    return 0 if all(r.ok for r in reports) else 1
