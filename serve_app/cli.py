"""The ``squall`` command line: run the platform, manage the schema, import files, report gaps."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serve_app.settings import Settings, get_settings
from storage.errors import SourceConflictError, SquallError

if TYPE_CHECKING:
    from ingestion.fileimport import ParseResult


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _print_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


# ------------------------------------------------------------------------------------ db
def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from storage import migrate
    from storage.engine import make_engine

    if args.action == "upgrade":
        migrate.upgrade(settings.database_url, args.revision)
    elif args.action == "downgrade":
        migrate.downgrade(settings.database_url, args.revision)
    engine = make_engine(settings.database_url)
    try:
        current = migrate.current_revision(engine)
    finally:
        engine.dispose()
    head = migrate.head_revision()
    state = "at head" if current == head else f"head is {head}"
    print(f"database {settings.database_url_redacted}: revision {current or 'none'} ({state})")
    return 0


# -------------------------------------------------------------------------------- import
def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from ingestion.fileimport import infer_coin_interval, parse_candle_file
    from serve_app.progress_cli import Steps
    from storage import migrate
    from storage.engine import make_engine, session_factory

    _verify_zips([Path(name) for name in args.files])  # before anything is written
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    reports: list[dict[str, Any]] = []
    failed = False
    many = len(args.files) > 1  # off a terminal, one file needs no line beside its summary
    steps = Steps("import", total=len(args.files), unit="files", quiet=args.quiet, lines=many)
    steps.start()
    try:
        for name in args.files:
            path = Path(name)
            guessed_coin, guessed_interval = infer_coin_interval(path)
            coin = (args.coin or guessed_coin or "").upper()
            interval = args.interval or guessed_interval
            if not coin or not interval:
                raise SystemExit(
                    f"{path}: cannot tell the coin/interval from the file name; "
                    "pass --coin and --interval"
                )
            if not path.is_file():
                raise SystemExit(f"{path}: no such file")
            if path.suffix.lower() == ".zip":
                parsed = _parse_zip(path, coin, interval)
            else:
                parsed = parse_candle_file(path, coin=coin, interval=interval)
            if parsed.rows_read > settings.max_import_rows:
                raise SystemExit(
                    f"{path}: {parsed.rows_read} rows exceeds SQUALL_MAX_IMPORT_ROWS "
                    f"({settings.max_import_rows})"
                )
            report: dict[str, Any] = {
                "file": str(path),
                "coin": coin,
                "interval": interval,
                "layout": parsed.layout,
                "rows_read": parsed.rows_read,
                "duplicates": parsed.duplicates,
                "rejected": sum(parsed.rejected.values()),
                "rejected_by_reason": parsed.rejected,
                "rejected_examples": [
                    {"line": r.line, "reason": r.reason, "detail": r.detail}
                    for r in parsed.rejected_examples[:5]
                ],
            }
            if args.strict and parsed.rejected:
                report["status"] = "aborted: rows rejected and --strict given; nothing written"
                failed = True
            else:
                try:
                    report.update(_write_import(sessions, parsed.frame, args.replace_source))
                except SourceConflictError as exc:  # refused: this file wrote nothing
                    print(f"squall: {path}: {exc}", file=sys.stderr)
                    report.update(status="refused: nothing written", error=str(exc))
                    failed = True
            reports.append(report)
            rows = f"{path.name}: {parsed.rows_read} rows, {report.get('inserted', 0)} inserted"
            steps.advance(1, info=rows)
    finally:
        engine.dispose()
        steps.close()
    if args.json:
        _print_json(reports)
    else:
        for r in reports:
            print(
                f"{r['file']}: {r['coin']} {r['interval']} ({r['layout']}) "
                f"read {r['rows_read']}, inserted {r.get('inserted', 0)}, "
                f"updated {r.get('updated', 0)}, unchanged {r.get('unchanged', 0)}, "
                f"duplicates {r['duplicates']}, rejected {r['rejected']} {r['status']}"
            )
            if r.get("replaced_source") is not None:
                print(f"  {_replacement_line(r)}")
            for reason, n in sorted(r["rejected_by_reason"].items()):
                print(f"  rejected {reason}: {n}")
            for ex in r["rejected_examples"]:
                print(f"    line {ex['line']}: {ex['reason']}: {ex['detail']}")
    return 1 if failed else 0


def _write_import(sessions: Any, frame: Any, replace_source: bool) -> dict[str, Any]:
    """Upsert one parsed file in one transaction; with ``replace_source`` it takes the series."""
    from storage.candles import CandleRepository
    from storage.engine import transaction
    from storage.series import SeriesRepository

    out: dict[str, Any] = {}
    with transaction(sessions) as session:
        owners = SeriesRepository(session)
        if frame.empty:
            result = CandleRepository(session).upsert(frame)
        else:
            coin, interval = str(frame["coin"].iloc[0]), str(frame["interval"].iloc[0])
            previous = owners.source_of(coin, interval)
            result = CandleRepository(session).upsert(frame, replace_source=replace_source)
            info = owners.get(coin, interval)
            assert info is not None
            out.update(source=info.source, foreign_rows=info.foreign_rows)
            if replace_source:
                out.update(
                    replaced_source=previous or "none",
                    replaced_range=[iso(int(frame["ts"].min())), iso(int(frame["ts"].max()))],
                    replaced=result.replaced,
                    removed=result.removed,
                )
    out.update(
        inserted=result.inserted, updated=result.updated, unchanged=result.unchanged, status="ok"
    )
    return out


def _replacement_line(r: dict[str, Any]) -> str:
    """One line saying what --replace-source changed."""
    first, last = r["replaced_range"]
    left = r["foreign_rows"]
    rest = f"; {left} rows of other sources remain outside that range" if left else ""
    return (
        f"--replace-source: series source {r['replaced_source']} -> {r['source']}; "
        f"{first} .. {last}: {r['replaced']} rows rewritten, {r['removed']} removed "
        f"({r['replaced'] + r['removed']} changed){rest}"
    )


def _verify_zips(paths: list[Path]) -> None:
    """Check every ``.zip`` against the ``.CHECKSUM`` beside it, if any; a mismatch stops the
    whole import (``ChecksumMismatchError`` names the file) before anything is written."""
    from ingestion.archive import verify_beside

    for path in paths:
        if path.suffix.lower() == ".zip" and path.is_file():
            verify_beside(path)


def _parse_zip(path: Path, coin: str, interval: str) -> ParseResult:
    """A Binance archive as published: the one CSV inside, parsed by the file importer. In the
    archive site's layout (the ``squall download`` cache) it gets that market's source."""
    from ingestion.archive import ARCHIVE_SOURCES, market_from_path, parse_archive

    market = market_from_path(path.resolve())
    source = ARCHIVE_SOURCES[market] if market else None
    return parse_archive(path, coin=coin, interval=interval, source=source)


# ------------------------------------------------------------------------------ download
def cmd_download(args: argparse.Namespace, settings: Settings) -> int:
    from serve_app.download_cli import run_download_command

    return run_download_command(args, settings)


# ---------------------------------------------------------------------------------- gaps
def cmd_gaps(args: argparse.Namespace, settings: Settings) -> int:
    from ingestion.gaps import gap_report
    from storage.engine import make_engine, session_factory

    if args.fix:
        engine = make_engine(settings.database_url)
        try:
            with session_factory(engine)() as session:
                found = gap_report(session, args.coin.upper() if args.coin else None, args.interval)
        finally:
            engine.dispose()
        return _repair(args, settings, [(r.coin, r.interval) for r in found])

    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            coin = args.coin.upper() if args.coin else None
            reports = gap_report(session, coin, args.interval)
    finally:
        engine.dispose()
    if args.json:
        _print_json(
            [
                {
                    **r.as_dict(),
                    "first": iso(r.first_ts),
                    "last": iso(r.last_ts),
                    "gaps": [
                        {**vars(g), "start_iso": iso(g.start), "end_iso": iso(g.end)}
                        for g in r.gaps
                    ],
                }
                for r in reports
            ]
        )
        return 0
    if not reports:
        print("no stored candles match")
    for r in reports:
        print(
            f"{r.coin} {r.interval}: {iso(r.first_ts)} .. {iso(r.last_ts)}, expected "
            f"{r.expected}, present {r.present}, missing {r.missing} in {len(r.gaps)} gap(s)"
        )
        for g in r.gaps:
            print(f"  {iso(g.start)} .. {iso(g.end)}  missing {g.missing}")
    return 0


# ------------------------------------------------------------------------- backfill / fix
def parse_time(text: str) -> int:
    """Unix seconds from ``1704067200`` or an ISO date/datetime (naive means UTC)."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: use unix seconds or ISO-8601 like 2024-01-31T00:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def _range_bars(args: argparse.Namespace, series: list[tuple[str, str]]) -> int | None:
    """Bars a backfill asks for (the bar's total); None for gap repair (counted as it goes)."""
    from storage.intervals import interval_seconds

    if getattr(args, "start", None) is None or len(series) != 1:
        return None
    import time

    span = min(parse_time(args.end), int(time.time())) - parse_time(args.start)
    return max(0, span // interval_seconds(series[0][1]) + 1)


def _repair(args: argparse.Namespace, settings: Settings, series: list[tuple[str, str]]) -> int:
    from ingestion.backfill import backfill, fix_gaps
    from ingestion.config import build_provider
    from serve_app.progress_cli import PagedProvider, Steps
    from serve_app.settings import ingest_config
    from storage import migrate
    from storage.engine import make_engine, session_factory
    from storage.intervals import interval_seconds
    from storage.series import is_exchange

    migrate.upgrade(settings.database_url)
    provider = build_provider(ingest_config(settings))
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    reports = []
    refused: list[dict[str, str]] = []
    label = "backfill" if getattr(args, "start", None) else "gaps --fix"
    steps = Steps(label, unit="bars", total=_range_bars(args, series), quiet=args.quiet)
    steps.start()
    try:
        for coin, interval in series:
            paged = PagedProvider(provider, steps, interval_seconds(interval))
            try:
                if getattr(args, "start", None) is not None:
                    report = backfill(
                        paged,
                        sessions,
                        coin,
                        interval,
                        start=parse_time(args.start),
                        end=parse_time(args.end),
                        replace_source=args.replace_source,
                    )
                else:
                    report = fix_gaps(paged, sessions, coin, interval)
            except SourceConflictError as exc:  # refused before anything was written
                print(f"squall: {exc}", file=sys.stderr)
                refused.append({"coin": coin, "interval": interval, "error": str(exc)})
                continue
            reports.append(report)
    finally:
        steps.close()
        provider.close()
        engine.dispose()
    status = 1 if refused else 0
    if args.json:
        _print_json([r.as_dict() for r in reports] + refused)
        return status
    for r in reports:
        print(
            f"{r.coin} {r.interval}: gaps_found {r.gaps_found}, gaps_fixed {r.gaps_fixed}, "
            f"candles_added {r.candles_added}, remaining {len(r.remaining)} "
            f"(known exchange outages skipped: {r.known_gaps_skipped}, "
            f"recorded: {r.known_gaps_recorded})"
        )
        if r.previous_source is not None and r.previous_source != r.source:
            changed = r.replaced + r.removed
            print(
                f"  --replace-source: series source {r.previous_source} -> {r.source}: "
                f"{r.replaced} rows rewritten, {r.removed} removed ({changed} changed)"
                if changed or r.candles_added
                else f"  --replace-source: {r.source} has no data in the range; the series "
                f"stays {r.previous_source}'s, nothing changed"
            )
        outage = is_exchange(r.source)
        for g in r.remaining:
            what = (
                "no data at the source (exchange outage)"
                if outage
                else f"not served by {r.source} (not an exchange: not recorded as an outage)"
            )
            print(f"  {what}: {iso(g.start)} .. {iso(g.end)} ({g.missing} bars)")
    return status


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    if parse_time(args.start) > parse_time(args.end):
        raise ValueError("--start is after --end")
    return _repair(args, settings, [(args.coin.upper(), args.interval)])


# ------------------------------------------------------------------------------------ up
def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from serve_app.runner import run_platform

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["api_host"] = args.host
    if args.port:
        overrides["api_port"] = args.port
    run_platform(settings.model_copy(update=overrides) if overrides else settings)
    return 0


def cmd_features(args: argparse.Namespace, settings: Settings) -> int:
    from serve_app.progress_cli import Steps
    from serve_app.services.feature_build import build

    coins = [c.upper() for c in args.coin] if args.coin else None
    with Steps("features build", unit="blocks", quiet=args.quiet) as steps:
        summary = build(
            settings, coins, args.interval, full=args.full, on_progress=steps.on_progress
        )
    if args.json:
        _print_json(summary)
    else:
        print(
            f"feature rows written: {summary['rows_written']} in {summary['seconds']}s "
            f"({summary['tasks']} tasks)"
        )
        for key, n in summary["series"].items():
            print(f"  {key}: {n}")
    return 0


def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from serve_app.sweep_cli import run_sweep_command

    return run_sweep_command(args, settings)


_REPLACE_HELP = (
    "the series may belong to another source: make it this one's, rewriting the range from "
    "the first to the last new bar so that it holds exactly the new rows (rows outside it "
    "are untouched); prints how many rows it changed"
)


def cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    from serve_app.settings import settings_table

    if args.markdown:
        sys.stdout.write(settings_table())
        return 0
    for name, value in settings.model_dump(mode="json").items():
        shown = settings.database_url_redacted if name == "database_url" else value
        print(f"SQUALL_{name.upper()}={shown}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from serve_app.progress_cli import add_quiet

    parser = argparse.ArgumentParser(prog="squall", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start or join Ray, migrate, serve the API until Ctrl-C")
    up.add_argument("--host", help="bind address (default SQUALL_API_HOST)")
    up.add_argument("--port", type=int, help="port (default SQUALL_API_PORT)")
    up.set_defaults(func=cmd_up)

    db = sub.add_parser("db", help="schema migrations (Alembic)")
    db_sub = db.add_subparsers(dest="action", required=True)
    db_up = db_sub.add_parser("upgrade", help="migrate to a revision (default head)")
    db_up.add_argument("revision", nargs="?", default="head")
    db_down = db_sub.add_parser("downgrade", help="migrate down to a revision ('base': empty)")
    db_down.add_argument("revision")
    db_sub.add_parser("current", help="show the database's revision")
    db.set_defaults(func=cmd_db)

    imp = sub.add_parser(
        "import", help="import candle CSVs (Binance klines, OHLCV, CDD) or Binance .zip archives"
    )
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.add_argument("--coin", help="base asset, e.g. BTC (default: from the file name)")
    imp.add_argument("--interval", help="bar interval, e.g. 4h (default: from the file name)")
    imp.add_argument("--strict", action="store_true", help="write nothing if any row is rejected")
    imp.add_argument("--replace-source", action="store_true", help=_REPLACE_HELP)
    imp.add_argument("--json", action="store_true", help="machine-readable summary")
    add_quiet(imp)
    imp.set_defaults(func=cmd_import)

    gaps = sub.add_parser("gaps", help="report missing candles per stored series")
    gaps.add_argument("--coin")
    gaps.add_argument("--interval")
    gaps.add_argument("--json", action="store_true")
    gaps.add_argument(
        "--fix", action="store_true", help="fetch the missing ranges from the data source"
    )
    add_quiet(gaps)
    gaps.set_defaults(func=cmd_gaps)

    fill = sub.add_parser("backfill", help="fetch a time range of one series from the source")
    fill.add_argument("--coin", required=True)
    fill.add_argument("--interval", required=True)
    fill.add_argument("--start", required=True, help="unix seconds or ISO-8601 (UTC)")
    fill.add_argument("--end", required=True, help="unix seconds or ISO-8601 (UTC)")
    fill.add_argument("--replace-source", action="store_true", help=_REPLACE_HELP)
    fill.add_argument("--json", action="store_true")
    add_quiet(fill)
    fill.set_defaults(func=cmd_backfill)

    feats = sub.add_parser("features", help="the feature store")
    feats_sub = feats.add_subparsers(dest="action", required=True)
    fbuild = feats_sub.add_parser("build", help="materialise features on Ray Data")
    fbuild.add_argument("--coin", action="append", help="repeatable (default: all configured)")
    fbuild.add_argument("--interval", action="append", help="repeatable")
    fbuild.add_argument("--full", action="store_true", help="recompute everything")
    fbuild.add_argument("--json", action="store_true")
    add_quiet(fbuild)
    feats.set_defaults(func=cmd_features)

    conf = sub.add_parser("settings", help="every SQUALL_* setting and its value")
    conf.add_argument(
        "--markdown", action="store_true", help="the README's table of settings and defaults"
    )
    conf.set_defaults(func=cmd_settings)

    from serve_app.download_cli import add_download_parser

    add_download_parser(sub, cmd_download)

    from serve_app.sweep_cli import add_sweep_parser

    add_sweep_parser(sub, cmd_sweep)

    from serve_app.cli_research import add_research_parsers

    add_research_parsers(sub)

    from serve_app.report_cli import add_report_parser

    add_report_parser(sub)

    from serve_app.check_cli import add_check_parser

    add_check_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Run one command; ``settings`` overrides the environment (tests, embedding)."""
    args = build_parser().parse_args(argv)
    if settings is None:
        try:
            settings = get_settings()
        except Exception as exc:
            print(f"squall: invalid configuration: {exc}", file=sys.stderr)
            return 2
    try:
        return int(args.func(args, settings))
    except SquallError as exc:
        print(f"squall: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"squall: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
