"""Research from the command line: ``squall backtest run|list|show|compare|rerun``,
``squall walkforward``, ``squall simulate``, ``squall risk report|correlation``.

Each takes the route's JSON body (``--spec FILE``, JSON or YAML) and flags for the common
fields that override it, calls the same service as the route (not HTTP), prints a table of
the key metrics with the run id (``--json``: the route's answer) and works with or without a
running ``squall up`` (the same database). Only the parsers live here (built on every
``squall`` call, so this module stays light); the work is imported when a command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from serve_app.settings import Settings

_SPEC = (
    "the route's JSON body as a file (JSON or YAML; '-' reads stdin); the flags below "
    "override its fields"
)
_SET = "any request field, dotted for nested ones (shocks.leverage=2); repeatable"
_JSON = "print the full answer as JSON, the same as the route's"


def _run(name: str) -> Any:
    """A handler that imports the command module only when the command runs."""

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        from serve_app.cli_research import commands

        try:
            code = int(getattr(commands, name)(args, settings))
            sys.stdout.flush()
        except BrokenPipeError:  # the reader stopped early (`| head`): the work is done and
            devnull = os.open(os.devnull, os.O_WRONLY)  # recorded; nothing more to say
            os.dup2(devnull, sys.stdout.fileno())
            return 0
        return code

    return handler


def _common(p: argparse.ArgumentParser, *, progress: bool = True) -> None:
    p.add_argument("--spec", metavar="FILE", help=_SPEC)
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help=_SET)
    p.add_argument("--json", action="store_true", help=_JSON)
    if progress:
        p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _series(p: argparse.ArgumentParser, *, seed: str = "recorded with the run") -> None:
    p.add_argument("--coin", help="base asset, e.g. BTC")
    p.add_argument("--interval", help="bar interval, e.g. 1d")
    p.add_argument("--start", help="first bar (ISO-8601 or unix s; default: the first stored)")
    p.add_argument("--end", help="last bar, inclusive (default: the latest stored)")
    p.add_argument("--strategy", help="strategy name, e.g. ema_cross")
    p.add_argument("--fee-bps", type=float, help="fee per side, basis points (default 10)")
    p.add_argument("--slippage-bps", type=float, help="slippage per side, basis points")
    p.add_argument(
        "--funding",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="charge stored perpetual funding (default yes)",
    )
    p.add_argument("--seed", type=int, help=seed)


def _backtest(sub: Any) -> None:
    bt = sub.add_parser("backtest", help="backtests and the run registry (no server needed)")
    actions = bt.add_subparsers(dest="action", required=True)

    run = actions.add_parser(
        "run", help="backtest one strategy on one series (as POST /backtest/run)"
    )
    _series(run)
    run.add_argument(
        "-p", "--param", action="append", metavar="K=V", help="strategy parameter; repeatable"
    )
    _common(run)

    ls = actions.add_parser("list", help="recorded runs of every kind, newest first (GET /runs)")
    for name in ("kind", "coin", "interval", "strategy", "status"):
        ls.add_argument(f"--{name}", help=f"only runs of this {name}")
    ls.add_argument("--since", help="created at or after (ISO-8601 or unix s)")
    ls.add_argument("--until", help="created at or before")
    ls.add_argument("--limit", type=int, default=20, help="runs to show (default 20)")
    ls.add_argument("--offset", type=int, default=0, help="runs to skip")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the run ids")
    ls.add_argument("--json", action="store_true", help=_JSON)

    show = actions.add_parser("show", help="one recorded run of any kind (GET /runs/RUN_ID)")
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--equity-points", type=int, default=1000, help="most equity points")
    show.add_argument("--max-trades", type=int, default=1000, help="most trades in --json")
    show.add_argument("--json", action="store_true", help=_JSON)

    cmp_ = actions.add_parser("compare", help="runs side by side (GET /backtest/compare?ids=...)")
    cmp_.add_argument(
        "run_ids", nargs="+", metavar="RUN_ID", help="2 to 10 run ids (or a comma-separated list)"
    )
    cmp_.add_argument("--equity-points", type=int, default=1000, help="points on the time axis")
    cmp_.add_argument("--json", action="store_true", help=_JSON)

    again = actions.add_parser(
        "rerun", help="run a recorded backtest again; say whether it is identical"
    )
    again.add_argument("run_id", metavar="RUN_ID")
    again.add_argument("--json", action="store_true", help=_JSON)
    bt.set_defaults(func=_run("cmd_backtest"))


def _walkforward(sub: Any) -> None:
    wf = sub.add_parser(
        "walkforward", help="walk-forward validation (as POST /backtest/walkforward)"
    )
    _series(wf)
    wf.add_argument(
        "--grid", action="append", metavar="K=V1,V2", help="parameter candidates; repeatable"
    )
    wf.add_argument("--fixed", action="append", metavar="K=V", help="parameter held fixed")
    wf.add_argument("--objective", help="sharpe (default), sortino, calmar or total_return")
    wf.add_argument("--train-bars", type=int, help="bars per train window")
    wf.add_argument("--test-bars", type=int, help="bars per test window")
    wf.add_argument("--step-bars", type=int, help="bars between fold starts (default test)")
    wf.add_argument("--purge-bars", type=int, help="bars dropped between train and test")
    wf.add_argument(
        "--anchored", action=argparse.BooleanOptionalAction, default=None,
        help="every train window starts at bar 0 (default: rolling)",
    )  # fmt: skip
    _common(wf)
    wf.set_defaults(func=_run("cmd_walkforward"))


def _simulate(sub: Any) -> None:
    sim = sub.add_parser(
        "simulate", help="Monte Carlo stress simulation of a strategy (as POST /risk/simulate)"
    )
    _series(sim, seed="seed of the paths: same request, same bits (default 0)")
    sim.add_argument(
        "-p", "--param", action="append", metavar="K=V", help="strategy parameter; repeatable"
    )
    sim.add_argument("--run-id", help="source: a recorded backtest run (instead of --coin ...)")
    sim.add_argument("--paths", type=int, help="Monte Carlo paths (default 10000)")
    sim.add_argument("--horizon", type=int, help="steps (bars) of every path (default 365)")
    sim.add_argument("--generator", choices=("bootstrap", "regime_switching"))
    sim.add_argument("--ruin-threshold", type=float, help="equity counted as ruin")
    _common(sim)
    sim.set_defaults(func=_run("cmd_simulate"))


def _risk(sub: Any) -> None:
    rk = sub.add_parser("risk", help="VaR/ES reports and correlation (as the /risk routes)")
    actions = rk.add_subparsers(dest="action", required=True)
    coin_help = "coin; repeatable or comma-separated"

    rep = actions.add_parser("report", help="VaR/ES by three methods (as POST /risk/report)")
    rep.add_argument("--coin", action="append", help=coin_help)
    rep.add_argument("--run-id", help="report on a recorded run's returns instead")
    rep.add_argument("--interval", help="bar interval (default 1d)")
    rep.add_argument("--window", type=int, help="latest N returns (default 365)")
    rep.add_argument("--start", help="first bar; overrides --window")
    rep.add_argument("--end", help="last bar, inclusive")
    rep.add_argument("--level", type=float, action="append", help="confidence level; repeatable")
    rep.add_argument("--weight", action="append", metavar="COIN=W", help="portfolio weight")
    rep.add_argument("--shrinkage", choices=("constant_correlation", "identity"))
    _common(rep, progress=False)

    cor = actions.add_parser("correlation", help="correlation matrix (as GET /risk/correlation)")
    cor.add_argument("--coin", action="append", required=True, help=coin_help)
    cor.add_argument("--interval", default="1d", help="bar interval (default 1d)")
    cor.add_argument("--window", type=int, default=365, help="latest N returns (default 365)")
    cor.add_argument("--start", help="first bar")
    cor.add_argument("--end", help="last bar, inclusive")
    cor.add_argument("--method", choices=("pearson", "spearman"), default="pearson")
    cor.add_argument("--rolling-window", type=int, help="returns per rolling window")
    cor.add_argument("--rolling-step", type=int, help="bars between rolling windows")
    cor.add_argument("--shrinkage", choices=("constant_correlation", "identity"))
    cor.add_argument("--json", action="store_true", help=_JSON)
    rk.set_defaults(func=_run("cmd_risk"))


def add_research_parsers(sub: Any) -> None:
    """Register ``backtest``, ``walkforward``, ``simulate`` and ``risk`` on the ``squall``
    subparsers."""
    _backtest(sub)
    _walkforward(sub)
    _simulate(sub)
    _risk(sub)
