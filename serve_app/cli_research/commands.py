"""The research commands: build the route's request, call the service, print the answer.

Every command opens the configured database itself (``SQUALL_DATABASE_URL``, migrated to head
like ``squall import``), so it works with or without a running ``squall up``: runs land in the
same registry and ``GET /runs/{id}`` serves them. The work runs in this process, exactly as a
synchronous request runs in an API replica (the services' ``prepare``/``record``/``execute``
with a :class:`~serve_app.execution.runs.RunContext`: heartbeat, progress and cancel through
the registry). The JSON printed with ``--json`` is the route's answer, rendered by the API's
own response models.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from serve_app.cli_research import spec as specs
from serve_app.cli_research import tables
from serve_app.cli_research.output import Display, ShownRun, line, print_json
from serve_app.settings import Settings


@contextmanager
def database(settings: Settings, *, compute: bool = False) -> Iterator[sessionmaker[Session]]:
    """Sessions on the configured database (migrated to head); with ``compute`` the shared
    compiled-kernel cache is switched on first."""
    from storage import migrate
    from storage.engine import make_engine, session_factory

    if compute:
        from serve_app.execution.compiles import configure_cache

        configure_cache(settings.jax_cache_dir)
    engine = make_engine(settings.database_url)
    try:
        if migrate.current_revision(engine) != migrate.head_revision():
            migrate.upgrade(settings.database_url)
        yield session_factory(engine)
    finally:
        engine.dispose()


def _json_body(model: Any, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as the route sends it: encoded and checked against the response model."""
    import orjson

    from serve_app.api.encoding import typed_json

    out: dict[str, Any] = orjson.loads(typed_json(model, body).body)
    return out


def _interrupted(run_id: str | None) -> int:
    where = (
        f": run {run_id} is recorded as failed (squall backtest show {run_id})" if run_id else ""
    )
    print(f"squall: interrupted{where}", flush=True)
    return 130


# ------------------------------------------------------------------------------ requests
def _series_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "coin": args.coin,
        "interval": args.interval,
        "start": args.start,
        "end": args.end,
        "strategy": args.strategy,
        "fee_bps": args.fee_bps,
        "slippage_bps": args.slippage_bps,
        "funding": args.funding,
        "seed": args.seed,
    }


def backtest_request(args: argparse.Namespace) -> Any:
    from serve_app.services.requests.backtest import BacktestRunRequest

    flags = {**_series_flags(args), "params": specs.pairs(args.param, "--param") or None}
    body = specs.merged(specs.read_spec(args.spec), flags, args.set)
    return specs.checked(BacktestRunRequest, body, "backtest run")


def walkforward_request(args: argparse.Namespace) -> Any:
    from serve_app.services.requests.backtest import WalkForwardRequest

    flags = {
        **_series_flags(args),
        "grid": specs.grid(args.grid) or None,
        "fixed_params": specs.pairs(args.fixed, "--fixed") or None,
        "objective": args.objective,
        "train_bars": args.train_bars,
        "test_bars": args.test_bars,
        "step_bars": args.step_bars,
        "purge_bars": args.purge_bars,
        "anchored": args.anchored,
    }
    body = specs.merged(specs.read_spec(args.spec), flags, args.set)
    return specs.checked(WalkForwardRequest, body, "walkforward")


def simulate_request(args: argparse.Namespace) -> Any:
    from serve_app.services.requests.simulation import SimulateRequest

    strategy = {**_series_flags(args), "params": specs.pairs(args.param, "--param") or None}
    seed = strategy.pop("seed")  # --seed is the simulation's seed
    strategy = {k: v for k, v in strategy.items() if v is not None}
    flags = {
        "backtest": strategy or None,
        "run_id": args.run_id,
        "paths": args.paths,
        "horizon": args.horizon,
        "generator": args.generator,
        "ruin_threshold": args.ruin_threshold,
        "seed": seed,
    }
    body = specs.merged(specs.read_spec(args.spec), flags, args.set)
    return specs.checked(SimulateRequest, body, "simulate")


def risk_request(args: argparse.Namespace) -> Any:
    from serve_app.services.requests.risk import RiskReportRequest

    flags = {
        "coins": [c.strip() for part in args.coin or [] for c in part.split(",") if c.strip()]
        or None,
        "run_id": args.run_id,
        "interval": args.interval,
        "window": args.window,
        "start": args.start,
        "end": args.end,
        "levels": args.level,
        "weights": specs.pairs(args.weight, "--weight") or None,
        "shrinkage": args.shrinkage,
    }
    body = specs.merged(specs.read_spec(args.spec), flags, args.set)
    return specs.checked(RiskReportRequest, body, "risk report")


# -------------------------------------------------------------------------------- backtest
def backtest_run(args: argparse.Namespace, settings: Settings) -> int:
    from serve_app.api.backtest import backtest_response
    from serve_app.services import backtest as service

    req = backtest_request(args)
    with database(settings, compute=True) as sessions:
        label = f"backtest {req.coin} {req.interval} {req.strategy}"
        with Display(label, "backtests", quiet=args.quiet):
            rec = service.run_backtest(sessions, settings, req)
    resp = backtest_response(rec, req).model_dump(mode="json")
    if args.json:
        print_json(resp)
    else:
        tables.backtest(resp, req.model_dump(mode="json"))
    return 0


def backtest_rerun(args: argparse.Namespace, settings: Settings) -> int:
    from serve_app.api.backtest import rerun_response
    from serve_app.services import backtest as service

    with database(settings, compute=True) as sessions:
        again = service.rerun(sessions, settings, args.run_id)
    resp = rerun_response(args.run_id, again).model_dump(mode="json")
    if args.json:
        print_json(resp)
    else:
        tables.rerun(resp)
    return 0


def backtest_list(args: argparse.Namespace, settings: Settings) -> int:
    from serve_app.api.runs import page_out
    from serve_app.services.runs import RunQuery

    query = RunQuery(
        args.kind, args.coin, args.interval, args.strategy, args.status, args.since,
        args.until, args.limit, args.offset,
    )  # fmt: skip
    with database(settings) as sessions, sessions() as session:
        page = page_out(query, session).model_dump(mode="json")
    if args.json:
        print_json(page)
    elif args.quiet:
        for run in page["runs"]:
            line(run["run_id"])
    else:
        tables.runs_page(page)
    return 0


def backtest_show(args: argparse.Namespace, settings: Settings) -> int:
    from serve_app.api.runs import detail_out
    from serve_app.services.runs import get_run

    with database(settings) as sessions, sessions() as session:
        run = detail_out(get_run(session, args.run_id), args.equity_points, args.max_trades)
    detail = run.model_dump(mode="json")
    if args.json:
        print_json(detail)
    else:
        tables.run_detail(detail)
    return 0


def backtest_compare(args: argparse.Namespace, settings: Settings) -> int:
    from serve_app.api.runs import summary_out
    from serve_app.api.schemas.runs import (
        CompareEquityOut,
        CompareMetricOut,
        CompareResponse,
        ParamDiffOut,
    )
    from serve_app.services import runs
    from serve_app.timefmt import iso_array

    ids = [i.strip() for part in args.run_ids for i in part.split(",") if i.strip()]
    with database(settings) as sessions, sessions() as session:
        c = runs.compare(session, ids, args.equity_points)
    shown = c.equity["ts_unix"]
    resp = CompareResponse(
        runs=[summary_out(r) for r in c.runs],
        metrics=[CompareMetricOut.model_validate(m) for m in c.metrics],
        param_diffs=[ParamDiffOut.model_validate(d) for d in c.param_diffs],
        equity=CompareEquityOut(
            ts=iso_array(shown),
            ts_unix=shown.tolist(),
            series=c.equity["series"],
            stride=c.equity["stride"],
        ),
    ).model_dump(mode="json")
    if args.json:
        print_json(resp)
    else:
        tables.comparison(resp)
    return 0


BACKTEST_ACTIONS = {
    "run": backtest_run,
    "list": backtest_list,
    "show": backtest_show,
    "compare": backtest_compare,
    "rerun": backtest_rerun,
}


def cmd_backtest(args: argparse.Namespace, settings: Settings) -> int:
    return BACKTEST_ACTIONS[args.action](args, settings)


# ----------------------------------------------------------------------------- research
def cmd_walkforward(args: argparse.Namespace, settings: Settings) -> int:
    import numpy as np

    from serve_app.api.schemas.backtest import WalkForwardResponse
    from serve_app.services import walkforward as wf
    from serve_app.timefmt import iso_array

    req = walkforward_request(args)
    run_id = None
    with database(settings, compute=True) as sessions:
        label = f"walk-forward {req.coin} {req.interval} {req.strategy}"
        try:
            with Display(label, "folds", quiet=args.quiet) as display:
                prep = wf.prepare(sessions, settings, req)
                run_id, created = wf.record(sessions, prep, status="running")
                display.update(0, prep.folds)
                with ShownRun(
                    display, sessions, run_id, heartbeat_s=settings.run_heartbeat_s,
                    unit="folds", total=prep.folds,
                ) as ctx:  # fmt: skip
                    result = wf.execute(sessions, run_id, created, prep, ctx)
        except KeyboardInterrupt:
            return _interrupted(run_id)
    equity = result["oos"]["equity"]
    ts = np.asarray(equity["ts_unix"], np.int64)
    equity["ts"], equity["ts_unix"] = iso_array(ts), ts.tolist()
    result.pop("status", None)
    resp = WalkForwardResponse.model_validate(result).model_dump(mode="json")
    if args.json:
        print_json(resp)
    else:
        tables.walkforward(resp, req.model_dump(mode="json"))
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from serve_app.api.schemas.risk import SimulationResponse
    from serve_app.services import simulation

    req = simulate_request(args)
    run_id = None
    with database(settings, compute=True) as sessions:
        try:
            with Display("simulate", "paths", quiet=args.quiet) as display:
                prep = simulation.prepare(sessions, settings, req)
                run_id = simulation.start(sessions, req, prep, status="running")
                display.update(0, req.paths)
                with ShownRun(
                    display, sessions, run_id, heartbeat_s=settings.run_heartbeat_s, unit="paths"
                ) as ctx:
                    body = simulation.execute(sessions, run_id, req, prep, ctx)
        except KeyboardInterrupt:
            return _interrupted(run_id)
    resp = _json_body(SimulationResponse, body)
    if args.json:
        print_json(resp)
    else:
        tables.simulation(resp)
    return 0


def cmd_risk(args: argparse.Namespace, settings: Settings) -> int:
    from serve_app.api.schemas.risk import CorrelationResponse, RiskReportResponse
    from serve_app.services import risk

    if args.action == "report":
        req = risk_request(args)
        with database(settings, compute=True) as sessions, sessions() as session:
            resp = _json_body(RiskReportResponse, risk.report(session, settings, req))
        if args.json:
            print_json(resp)
        else:
            tables.risk_report(resp)
        return 0
    from serve_app.services.requests.risk import MAX_ROWS_PER_COIN

    for flag, n, low in (("--window", args.window, 3), ("--rolling-window", args.rolling_window, 3),
                         ("--rolling-step", args.rolling_step, 1)):  # fmt: skip
        if n is not None and not low <= n <= MAX_ROWS_PER_COIN:
            raise ValueError(f"{flag} takes {low} to {MAX_ROWS_PER_COIN} returns, got {n}")
    coins = ",".join(args.coin or [])
    q = risk.CorrelationQuery(
        coins, args.interval, args.window, args.start, args.end, args.method,
        args.rolling_window, args.rolling_step, args.shrinkage,
    )  # fmt: skip
    with database(settings, compute=True) as sessions, sessions() as session:
        resp = _json_body(CorrelationResponse, risk.correlation(session, settings, q))
    if args.json:
        print_json(resp)
    else:
        tables.correlation(resp)
    return 0
