"""``squall sweep submit|status|logs|results``: the command line of :mod:`serve_app.services.sweep`.

Kept apart from ``serve_app.cli`` (which only registers the group) and light to import: the
parser is built on every ``squall`` call, the sweep machinery is imported when a sweep command
runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serve_app.settings import Settings

_TERMINAL = ("succeeded", "failed")


def add_sweep_parser(sub: Any, handler: Callable[[argparse.Namespace, Settings], int]) -> None:
    """Register ``sweep`` and its actions on the ``squall`` subparsers."""
    sweep = sub.add_parser("sweep", help="parameter sweeps as Ray jobs (see docs/operations.md)")
    actions = sweep.add_subparsers(dest="action", required=True)
    address = {"help": "Ray job server (default SQUALL_RAY_JOBS_ADDRESS, else local dashboard)"}

    submit = actions.add_parser("submit", help="validate SPEC.yaml and submit it as a Ray job")
    submit.add_argument("spec", metavar="SPEC.yaml")
    submit.add_argument("--address", **address)
    submit.add_argument(
        "--upload",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ship the project as the job's working dir (default: only for remote clusters)",
    )
    submit.add_argument("--wait", action="store_true", help="follow it until it finishes")
    submit.add_argument("--json", action="store_true")

    status = actions.add_parser("status", help="progress (done/total, ETA) and job state")
    status.add_argument("job", metavar="JOB", help="Ray submission id or registry run id")
    status.add_argument("--address", **address)
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--follow", action="store_true", help="a progress bar until the sweep finishes"
    )
    status.add_argument("--quiet", action="store_true", help="--follow without progress output")

    logs = actions.add_parser("logs", help="the job's driver log")
    logs.add_argument("job", metavar="JOB")
    logs.add_argument("--address", **address)

    results = actions.add_parser("results", help="the best N parameter sets of a finished sweep")
    results.add_argument("job", metavar="JOB")
    results.add_argument("--top", type=int, default=None, help="rows to print (default: spec)")
    results.add_argument("--json", action="store_true")
    sweep.set_defaults(func=handler)


def _print_status(st: dict[str, Any]) -> None:
    p = st["progress"]
    eta = "" if p["eta_s"] is None else f", ETA {p['eta_s']:.0f}s"
    pct = "" if p["percent"] is None else f" ({p['percent']}%)"
    print(
        f"sweep {st['run_id']} (job {st['job_id']}): {st['status']}, ray {st['ray_status']}; "
        f"{p['done']}/{p['total']} parameter sets{pct}{eta}"
    )
    if st["error"]:
        print(f"  error: {st['error']}")


def print_best(res: dict[str, Any]) -> None:
    """The best rows as a fixed-width table."""
    objective = res["objective"]
    print(f"sweep {res['run_id']}: {res['status']}, {res['rows']} rows, ranked by {objective}")
    if res["error"]:
        print(f"  error: {res['error']}")
    head = ("rank", "coin", "interval", "strategy", objective, "total_return", "max_dd", "trades")
    print("  ".join(f"{h:>12}" for h in head) + "  params")
    for i, row in enumerate(res["best"], 1):
        cells = (i, row["coin"], row["interval"], row["strategy"], row.get(objective),
                 row.get("total_return"), row.get("max_drawdown"), row.get("trades"))  # fmt: skip
        text = "  ".join(f"{c:>12.4f}" if isinstance(c, float) else f"{c!s:>12}" for c in cells)
        print(f"{text}  {json.dumps(row['params'])}")


def run_sweep_command(args: argparse.Namespace, settings: Settings) -> int:
    from serve_app.services import sweep as sweeps

    if args.action == "submit":
        spec = sweeps.read_spec(Path(args.spec))
        run_id, job_id = sweeps.submit(spec, settings, address=args.address, upload=args.upload)
        if args.json:
            json.dump({"run_id": run_id, "job_id": job_id}, sys.stdout)
            sys.stdout.write("\n")
        else:
            print(f"submitted sweep {run_id} as Ray job {job_id}")
            print(
                f"  follow it: squall sweep status {job_id}; results: squall sweep results {job_id}"
            )
        if not args.wait:
            return 0
        while (st := sweeps.status(settings, job_id, address=args.address))[
            "status"
        ] not in _TERMINAL:
            _print_status(st)
            time.sleep(2.0)
        print_best(sweeps.results(settings, job_id))
        return 0 if st["status"] == "succeeded" else 1
    if args.action == "status":
        if args.follow:
            from serve_app.progress_cli import follow_run

            poll = lambda: sweeps.status(settings, args.job, address=args.address)  # noqa: E731
            st = follow_run(poll, f"sweep {args.job}", unit="sets", quiet=args.quiet, every_s=2.0)
        else:
            st = sweeps.status(settings, args.job, address=args.address)
        if args.json:
            json.dump(st, sys.stdout, default=str)
            sys.stdout.write("\n")
        else:
            _print_status(st)
        return 0 if not args.follow or st["status"] == "succeeded" else 1
    if args.action == "logs":
        sys.stdout.write(sweeps.logs(settings, args.job, address=args.address))
        return 0
    res = sweeps.results(settings, args.job, args.top)
    if args.json:
        json.dump(res, sys.stdout, default=str)
        sys.stdout.write("\n")
    else:
        print_best(res)
    return 0 if res["status"] == "succeeded" else 1
