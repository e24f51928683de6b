"""``squall check``: verify the stored data's invariants (``storage.invariants``).

Exit status 0 when every rule holds, 1 naming the first violations (a few offending keys per
rule, at most ``--max`` rules), 2 on a usage or configuration error. The database must be
migrated (``squall db upgrade``); nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from serve_app.settings import Settings


def add_check_parser(sub: Any) -> None:
    """Register ``check`` on the ``squall`` subparsers."""
    from storage.invariants import TABLES

    chk = sub.add_parser(
        "check",
        help="verify the stored data's invariants; exit 1 naming the first violations",
        description=__doc__.split("\n\n")[0],
    )
    chk.add_argument(
        "--table",
        action="append",
        choices=TABLES,
        help="check only this table (repeatable; default: every table)",
    )
    chk.add_argument(
        "--examples", type=int, default=5, help="offending keys shown per rule (default 5)"
    )
    chk.add_argument(
        "--max", type=int, default=10, help="violated rules shown at most (default 10)"
    )
    chk.add_argument("--json", action="store_true", help="the whole report as JSON on stdout")
    chk.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from storage.engine import make_engine
    from storage.invariants import check_store, format_report

    if args.examples < 0 or args.max < 1:
        raise ValueError("--examples must be >= 0 and --max >= 1")
    engine = make_engine(settings.database_url)
    try:
        report = check_store(engine, tables=args.table, examples=args.examples)
    finally:
        engine.dispose()
    if args.json:
        payload = report.as_dict()
        payload["violations"] = payload["violations"][: args.max]
        json.dump(payload, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        out = sys.stdout if report.ok else sys.stderr
        print(f"database {settings.database_url_redacted}", file=out)
        print(format_report(report, max_violations=args.max), file=out)
    return 0 if report.ok else 1
