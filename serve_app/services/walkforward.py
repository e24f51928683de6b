"""Walk-forward validation: caps, folds on the warm workers, stitching, decay, registry.

Before any work: the grid is checked (not empty, at most ``MAX_GRID`` sets, every set valid),
the candles in the window are counted, the folds are cut from the count alone
(``compute.backtest.walkforward.make_folds``: train/test longer than the data, or too many folds,
is a
422 saying what to change) and the total work (parameter sets x bars) is capped. Then the
candles are read once, the regime labels computed once over the whole series (causal), and the
arrays ``ray.put`` once; each fold chooses parameters on its train window and evaluates them
out of sample (``compute.backtest.walkforward.evaluate_fold``). Small walk-forwards run in the
calling process (a fan-out costs more than it saves); large ones spread their folds over the
warm workers of every node (same numbers either way). With ``mode: "async"`` the run is
queued, executed by a warm worker and followed at ``GET /runs/{id}``; ``DELETE /runs/{id}``
cancels it between folds and cancels its outstanding fold calls.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from compute.core.errors import ComputeError
from serve_app.execution.fanout import fan_out, ray_running
from serve_app.execution.runs import NO_RUN, RunContext
from serve_app.services.backtest import MIN_TRADE_BARS, engine_config, used_block
from serve_app.services.inputs import (
    MAX_BACKTEST_BARS,
    SeriesData,
    Window,
    check_window,
    count_candles,
    insufficient,
    load_series,
    too_many_bars,
)
from serve_app.services.requests.backtest import FoldSpec, WalkForwardRequest
from serve_app.services.results import plain, thin_indices
from serve_app.services.runs import fail_run, start_run
from serve_app.settings import Settings
from serve_app.timefmt import iso
from storage.engine import transaction
from storage.errors import ConfigurationError, DataIntegrityError, LimitExceededError
from storage.runs import RunRepository

log = logging.getLogger(__name__)
MAX_GRID = 1_000  # parameter sets a walk-forward searches per fold
MAX_WORK = 2_000_000_000  # parameter sets x bars of one walk-forward (train + test, all folds)
FANOUT_MIN_WORK = 20_000_000  # bar evaluations below which the folds run in this process


# ------------------------------------------------------------------------------- checks
def check_grid(
    strategy: Any, grid: dict[str, list[Any]], fixed: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every parameter set of ``grid`` (with ``fixed``), validated; 422 saying what to fix.
    ``strategy``: a resolved strategy (services.strategy) or a built-in's name."""
    if isinstance(strategy, str):
        from serve_app.services.strategy import Resolved, StrategyRef

        strategy = Resolved(StrategyRef("builtin", strategy))
    if not grid or any(not v for v in grid.values()):
        empty = [k for k, v in grid.items() if not v]
        raise ConfigurationError(
            "the grid is empty"
            + (f": {', '.join(empty)} have no values" if empty else "")
            + "; give at least one parameter with one or more values (a single parameter set "
            "is POST /backtest/run)",
            code="empty_grid",
            parameter="grid",
        )
    both = sorted(set(grid) & set(fixed))
    if both:
        raise ConfigurationError(
            f"{', '.join(both)} appear in both grid and fixed_params; keep each in one",
            code="invalid_parameter",
            parameter="grid",
        )
    size = int(np.prod([len(v) for v in grid.values()]))
    if size > MAX_GRID:
        raise LimitExceededError(
            f"the grid has {size} parameter sets; at most {MAX_GRID} per walk-forward: use "
            "fewer values, or run it as a sweep job (squall sweep submit)",
            code="grid_too_large",
            parameter="grid",
            cap=MAX_GRID,
        )
    if strategy.ref.kind == "spec":
        check_spec_grid(strategy, grid)
    from serve_app.services.sweep import grid_combos

    return [strategy.validate({**fixed, **combo}) for combo in grid_combos(grid)]


def check_spec_grid(strategy: Any, grid: dict[str, Any]) -> None:
    """A spec's grid names its placeholders only (422 ``invalid_strategy``, field ``grid``)."""
    names = strategy.plugin.spec.placeholders
    unknown = sorted(set(grid) - set(names))
    if unknown:
        raise ConfigurationError(
            f"grid: parameter(s) {unknown} are not placeholders of the spec (token "
            f"{unknown[0]!r} at position 0)",
            code="invalid_strategy",
            field="grid",
            token=unknown[0],
            position=0,
            valid=names,
        )


def plan_folds(n_bars: int, spec: FoldSpec) -> list[Any]:
    """The folds of ``n_bars`` bars; 422 when they do not fit or are too many."""
    from compute.backtest.walkforward import make_folds

    try:
        return make_folds(
            n_bars,
            spec.train_bars,
            spec.test_bars,
            spec.step_bars or spec.test_bars,
            spec.purge_bars,
            spec.anchored,
        )
    except ComputeError as exc:
        raise ConfigurationError(
            f"{exc} (the window holds {n_bars} candles)",
            code="folds_exceed_data",
            parameter="train_bars",
            available_bars=n_bars,
            required_bars=spec.train_bars + spec.purge_bars + spec.test_bars,
        ) from None


def check_work(folds: list[Any], grid_size: int) -> int:
    """Parameter sets x bars the folds cost (each grid point runs on ``[0, train_end)`` for its
    signal and on train; the chosen one on the test window); 422 over ``MAX_WORK``."""
    work = sum(grid_size * (2 * f.train_end - f.train_start) + 2 * f.test_end for f in folds)
    if work > MAX_WORK:
        raise LimitExceededError(
            f"{len(folds)} folds x {grid_size} parameter sets cost {work:,} bar evaluations, "
            f"over the cap of {MAX_WORK:,}: use fewer folds (a larger step_bars), a smaller "
            "grid or a shorter window, or run a sweep job",
            code="too_much_work",
            cap=MAX_WORK,
        )
    return work


# --------------------------------------------------------------------------------- folds
def _folds_task(shared: dict[str, Any], folds: list[Any]) -> list[dict[str, Any]]:
    """A group of folds in one batched call (on a warm worker or in-process). A resolved
    strategy arrives as its reference and is rebuilt here (a plugin re-imported)."""
    from compute.backtest.walkforward import evaluate_folds

    strategy = shared["strategy"]
    return evaluate_folds(
        folds,
        shared["candles"],
        strategy if isinstance(strategy, str) else strategy.engine_strategy,
        shared["grid"],
        shared["config"],
        shared["objective"],
        regimes=shared["regimes"],
        funding_rate=shared["funding"],
    )


FOLDS_PER_GROUP = 8  # a batched call of 8 folds x the grid: progress and cancel points


def _fold_groups(folds: list[Any], use_ray: bool) -> list[list[Any]]:
    """Consecutive folds per batched call: in-process every ``FOLDS_PER_GROUP``; on the
    workers at least two calls per worker so none waits."""
    size = FOLDS_PER_GROUP
    if use_ray:
        from serve_app.execution.workers import pool

        calls = 2 * max(1, len(pool().workers()))
        size = max(1, min(size, -(-len(folds) // calls)))
    return [folds[i : i + size] for i in range(0, len(folds), size)]


def walkforward_series(
    data: SeriesData,
    strategy: Any,
    grid: list[dict[str, Any]],
    spec: FoldSpec,
    config: Any,
    *,
    use_ray: bool | None = None,
    ctx: RunContext = NO_RUN,
) -> dict[str, Any]:
    """Walk-forward of ``grid`` on ``data``: folds, stitched OOS, decay, regime checks.

    ``use_ray`` None: the folds go to the warm workers only when the work is large enough
    (``FANOUT_MIN_WORK`` bar evaluations) and Ray is running. ``strategy``: a built-in's
    name or a resolved strategy (services.strategy), which the workers rebuild."""
    from compute.backtest.walkforward import decay_report, stitch
    from compute.indicators import regimes
    from serve_app.services.strategy import frame_of

    folds = plan_folds(len(data), spec)
    builtin = isinstance(strategy, str) or strategy.builtin
    candles = data.candles() if builtin else frame_of(data)
    shared = {
        "candles": candles,
        "strategy": strategy,
        "grid": grid,
        "config": config,
        "objective": spec.objective,
        "regimes": {
            "vol": regimes.vol_regime(data.close),
            "trend": regimes.trend(data.high, data.low, data.close)[1],
        },
        "funding": data.funding,
    }
    if use_ray is None:
        use_ray = ray_running() and check_work(folds, len(grid)) >= FANOUT_MIN_WORK
    groups = _fold_groups(folds, use_ray)
    ctx.progress(0, len(folds))
    done = [0]

    def group_done(i: int, _res: Any) -> None:
        done[0] += len(groups[i])
        ctx.progress(done[0], len(folds))

    parts, how = fan_out(_folds_task, groups, shared, use_ray=use_ray, on_done=group_done, ctx=ctx)
    results = [r for part in parts for r in part]
    how["folds"] = len(folds)
    oos = stitch(results, config.periods_per_year)
    decay = decay_report(results, spec.objective)
    folds_out: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for k, (fold, res) in enumerate(zip(folds, results, strict=True)):
        regime_rows = [
            {
                **r,
                "min_bars": spec.min_regime_bars,
                "min_trades": spec.min_regime_trades,
                "insufficient": r["bars"] < spec.min_regime_bars
                or r["trades"] < spec.min_regime_trades,
            }
            for r in res["regime_checks"]
        ]
        checks.append({"fold": k, "regimes": regime_rows})
        folds_out.append(_fold_out(data.ts, fold, res, decay["oos_is_ratio"][k], regime_rows))
    flagged = [
        {"fold": c["fold"], "kind": r["kind"], "regime": r["regime"], "bars": r["bars"],
         "trades": r["trades"]}
        for c in checks
        for r in c["regimes"]
        if r["insufficient"] and r["bars"] > 0
    ]  # fmt: skip
    return {
        "folds": folds_out,
        "oos": {
            "metrics": plain(oos["metrics"]),
            "ts": np.asarray(oos["ts"], np.int64),
            "equity": np.asarray(oos["equity"], np.float64),
            "trades": [
                {**plain(t), "fold": k} for k, res in enumerate(results) for t in res["oos_trades"]
            ],
        },
        "decay": plain(decay),
        "regime_checks": {
            "min_bars": spec.min_regime_bars,
            "min_trades": spec.min_regime_trades,
            "flagged": flagged,
            "per_fold": checks,
        },
        "execution": how,
    }


def _span(ts: np.ndarray, lo: int, hi: int) -> dict[str, Any]:
    first, last = int(ts[lo]), int(ts[hi - 1])
    return {
        "start_bar": lo,
        "end_bar": hi - 1,
        "bars": hi - lo,
        "start_ts": iso(first),
        "start_ts_unix": first,
        "end_ts": iso(last),
        "end_ts_unix": last,
    }


def _fold_out(
    ts: np.ndarray, fold: Any, res: dict[str, Any], ratio: Any, regime_rows: list[Any]
) -> dict[str, Any]:
    return {
        "index": fold.index,
        "train": _span(ts, fold.train_start, fold.train_end),
        "test": _span(ts, fold.test_start, fold.test_end),
        "purge_bars": fold.test_start - fold.train_end,
        "chosen_params": res["params"],
        "is_scores": plain(res["is_scores"]),
        "is_metrics": plain(res["is_metrics"]),
        "oos_metrics": plain(res["oos_metrics"]),
        "oos_is_ratio": ratio,
        "oos_trades": len(res["oos_trades"]),
        "regimes": regime_rows,
    }


# ------------------------------------------------------------------------------ the run
@dataclass
class Prepared:
    """A checked walk-forward with its data read: everything but the folds' work."""

    req: WalkForwardRequest
    window: Window
    grid: list[dict[str, Any]]
    folds: int
    warmup: int
    data: SeriesData
    config: Any
    strategy: Any = None  # services.strategy.Resolved (pickles as its reference)
    fixed: dict[str, Any] | None = None
    checks: dict[str, Any] | None = None


def prepare(
    sessions: sessionmaker[Session], settings: Settings, req: WalkForwardRequest
) -> Prepared:
    """Validate the grid, count the candles, cut the folds, cap the work, read the data, and
    check a user strategy for look-ahead (on the grid's first set, over the whole window)."""
    from serve_app.services.strategy import check, frame_of, resolve

    resolved, given = resolve(settings, req.strategy)
    both = sorted(set(given) & set(req.fixed_params))
    if both:
        raise ConfigurationError(
            f"{', '.join(both)} appear in both strategy.params and fixed_params; keep each in one",
            code="invalid_parameter",
            parameter="fixed_params",
        )
    fixed = {**given, **req.fixed_params}
    grid = check_grid(resolved, req.grid, fixed)
    warmup = max(resolved.required_bars(g) for g in grid) - MIN_TRADE_BARS
    need = req.train_bars + req.purge_bars + req.test_bars
    with sessions() as session:
        window = check_window(session, settings, req)
        n = count_candles(session, window)
        if n > MAX_BACKTEST_BARS:
            raise too_many_bars(window, n)
        if n == 0:
            raise insufficient(session, window, need, 0, "one walk-forward fold")
        folds = plan_folds(n, req)
        check_work(folds, len(grid))
        data = load_series(session, window, with_funding=req.funding)
    config = engine_config(req, window.interval)
    checks = check(resolved, frame_of(data), grid[0], req.lookahead)
    return Prepared(req, window, grid, len(folds), warmup, data, config, resolved, fixed, checks)


def record(sessions: sessionmaker[Session], prep: Prepared, *, status: str) -> tuple[str, int]:
    """Record the run (``running`` for in-request work, ``queued`` for a worker)."""
    return start_run(
        sessions,
        "walkforward",
        prep.req,
        status=status,
        coin=prep.window.coin,
        interval=prep.window.interval,
        strategy=prep.strategy.label,
        seed=prep.req.seed,
        progress={"done": 0, "total": prep.folds, "unit": "folds"},
    )


def execute(
    sessions: sessionmaker[Session], run_id: str, created: int, prep: Prepared, ctx: RunContext
) -> dict[str, Any]:
    """The folds, stitched and recorded; returns the result (the response body's content)."""
    req, window, data = prep.req, prep.window, prep.data
    started = time.perf_counter()
    try:
        report = walkforward_series(data, prep.strategy, prep.grid, req, prep.config, ctx=ctx)
    except ComputeError as exc:
        fail_run(sessions, run_id, exc, started)
        raise DataIntegrityError(f"the stored data cannot be used: {exc}") from None
    except BaseException as exc:
        fail_run(sessions, run_id, exc, started)
        raise
    duration = time.perf_counter() - started
    used = used_block(
        req, window.coin, window.interval, prep.strategy.label, dict(prep.fixed or {}),
        prep.warmup, data, provenance=prep.strategy.provenance, checks=prep.checks,
    )  # fmt: skip
    oos = report["oos"]
    summary = {**oos["metrics"], "folds": prep.folds, "fading": report["decay"]["fading"]}
    results = {k: report[k] for k in ("folds", "decay", "regime_checks", "execution")}
    with transaction(sessions) as session:
        RunRepository(session).update(
            run_id,
            status="succeeded",
            data_fingerprint=data.fingerprint,
            duration_s=duration,
            finished_at=int(time.time()),
            summary=summary,
            equity={"ts": oos["ts"], "equity": oos["equity"]},
            trades=oos["trades"],
            results={**results, "used": used, "grid_size": len(prep.grid)},
            progress={"done": prep.folds, "total": prep.folds, "unit": "folds"},
        )
    idx, stride = thin_indices(len(oos["ts"]), req.equity_points)
    return {
        "run_id": run_id,
        "kind": "walkforward",
        "status": "succeeded",
        "created_at": iso(created),
        "created_at_unix": created,
        "duration_s": duration,
        "used": used,
        "grid_size": len(prep.grid),
        "folds": report["folds"],
        "oos": {
            "metrics": oos["metrics"],
            "bars": len(oos["ts"]),
            "trades": len(oos["trades"]),
            "equity": {
                "ts_unix": oos["ts"][idx],
                "equity": oos["equity"][idx].tolist(),
                "stride": stride,
            },
        },
        "decay": report["decay"],
        "regime_checks": report["regime_checks"],
        "execution": report["execution"],
    }


def run_walkforward(
    sessions: sessionmaker[Session], settings: Settings, req: WalkForwardRequest
) -> dict[str, Any]:
    """Validate, cap, load, run and record one walk-forward in this call."""
    prep = prepare(sessions, settings, req)
    run_id, created = record(sessions, prep, status="running")
    with RunContext(
        sessions, run_id, heartbeat_s=settings.run_heartbeat_s, unit="folds", total=prep.folds
    ) as ctx:
        return execute(sessions, run_id, created, prep, ctx)


def submit_walkforward(
    sessions: sessionmaker[Session], settings: Settings, req: WalkForwardRequest
) -> dict[str, Any]:
    """Check and prepare now (errors answer at once), then queue the folds on a warm worker;
    returns the queued run (poll ``/runs/{run_id}``)."""
    from serve_app.execution.submit import ensure_capacity, launch

    prep = prepare(sessions, settings, req)
    ensure_capacity(sessions, settings.max_active_runs)
    run_id, created = record(sessions, prep, status="queued")
    where = launch(DRIVER, settings.model_dump(mode="json"), run_id, created, prep)
    return {
        "run_id": run_id,
        "kind": "walkforward",
        "status": "queued",
        "progress": {"done": 0, "total": prep.folds, "unit": "folds"},
        "poll": f"/runs/{run_id}",
        "worker": where,
    }


DRIVER = "serve_app.services.walkforward:drive"


def drive(settings_values: dict[str, Any], run_id: str, created: int, prep: Prepared) -> None:
    """Execute a queued walk-forward (on a warm worker; see serve_app.execution.submit)."""
    from serve_app.execution.submit import claimed, sessions_for

    settings = Settings(**settings_values)
    sessions = sessions_for(settings.database_url)
    if not claimed(sessions, run_id):
        return
    with RunContext(
        sessions, run_id, heartbeat_s=settings.run_heartbeat_s, unit="folds", total=prep.folds
    ) as ctx:
        try:
            execute(sessions, run_id, created, prep, ctx)
        except Exception as exc:  # recorded on the run by execute(); nobody waits for it here
            log.info("walk-forward %s ended: %s", run_id, exc)
