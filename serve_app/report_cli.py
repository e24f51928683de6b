"""``squall report``: a run's HTML report, or one of its charts as PNG/SVG, written to a file.

    squall report RUN_ID -o report.html          the page GET /runs/{id}/report serves
    squall report RUN_ID --png equity -o eq.png  one chart (GET /runs/{id}/charts/equity.png)
    squall report RUN_ID --svg drawdown -o dd.svg
    squall report RUN_ID --list                  the run's chart names
    squall report --risk body.json -o risk.html  the risk report of a POST /risk/report body

No server is needed: it reads the database of ``SQUALL_DATABASE_URL`` through the same
service as the routes (:mod:`serve_app.services.reports`), so the file is the page the API
would serve. Kept apart from ``serve_app.cli``, which only registers the command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from serve_app.settings import Settings
from storage.errors import ConfigurationError


def add_report_parser(sub: Any) -> None:
    """Register ``report`` on the ``squall`` subparsers."""
    rep = sub.add_parser(
        "report",
        help="write a run's HTML report (or one chart as PNG/SVG) to a file; no server needed",
        description=__doc__.split("\n\n")[0],
    )
    rep.add_argument("run_id", nargs="?", metavar="RUN_ID", help="registry id (squall: /runs)")
    rep.add_argument(
        "-o",
        "--output",
        help="file to write ('-': stdout; default: a file name "
        "from the run, in the current folder)",
    )
    what = rep.add_mutually_exclusive_group()
    what.add_argument("--png", metavar="CHART", help="one chart as PNG instead of the page")
    what.add_argument("--svg", metavar="CHART", help="one chart as SVG instead of the page")
    what.add_argument("--list", action="store_true", help="print the report's chart names")
    rep.add_argument("--width", type=int, default=860, help="chart width in pixels (PNG/SVG)")
    rep.add_argument("--scale", type=float, default=2.0, help="PNG pixel ratio (default 2)")
    rep.add_argument(
        "--risk",
        metavar="BODY",
        help="a risk report instead of a run: the JSON body of POST /risk/report, inline or "
        'a .json file (e.g. \'{"coins": ["BTC", "ETH"], "window": 365}\')',
    )
    rep.set_defaults(func=run_report_command)


def _risk_body(text: str) -> Any:
    from pydantic import ValidationError

    from serve_app.services.requests.risk import RiskReportRequest

    path = Path(text)
    raw = path.read_text() if not text.lstrip().startswith("{") and path.is_file() else text
    try:
        return RiskReportRequest.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"--risk takes the JSON body of POST /risk/report (inline or a file): {exc}"
        ) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"--risk body: {problems}") from None


def _write(content: bytes, output: str | None, default: str) -> str:
    if output == "-":
        if default.endswith(".png"):
            sys.stdout.flush()
            sys.stdout.buffer.write(content)
        else:
            sys.stdout.write(content.decode("utf-8"))
        sys.stdout.flush()
        return "stdout"
    path = Path(output or default)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return str(path)


def run_report_command(args: argparse.Namespace, settings: Settings) -> int:
    """Render and write; the errors are the routes' (unknown run, not finished, ...)."""
    from serve_app.services import reports
    from storage.engine import make_engine, session_factory

    if (args.run_id is None) == (args.risk is None):
        raise ConfigurationError("give a RUN_ID or --risk BODY (one of them)")
    chart = args.png or args.svg
    fmt = "png" if args.png else "svg"
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            if args.risk is not None:
                report = reports.risk_report(session, settings, _risk_body(args.risk))
                label = "squall-risk"
            else:
                report = reports.run_report(session, args.run_id)
                label = f"squall-{report.kind}-{args.run_id}"
    finally:
        engine.dispose()
    if args.list:
        print("\n".join(report.charts))
        return 0
    if chart:
        out = reports.chart(report, chart, fmt, width=args.width, scale=args.scale, label=label)
    else:
        out = reports.Rendered(report.html().encode(), "text/html", f"{label}.html")
    where = _write(out.content, args.output, out.filename)
    if where != "stdout":
        what = f"chart {chart} ({fmt})" if chart else f"{report.kind} report"
        print(f"wrote {what} to {where} ({len(out.content) / 1e6:.2f} MB)", file=sys.stderr)
    return 0
