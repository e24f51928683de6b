"""Walk-forward validation as a service: caps, folds as Ray tasks, stitching, decay, registry.

Before any work: the grid is checked (not empty, at most ``MAX_GRID`` sets, every set valid),
the candles in the window are counted, the folds are cut from the count alone
(``compute.backtest.walkforward.make_folds``: train/test longer than the data, or too many folds,
is a
422 saying what to change) and the total work (parameter sets x bars) is capped. Then the
candles are read once, the regime labels computed once over the whole series (causal), and the
arrays ``ray.put`` once; each fold is a Ray task choosing parameters on its train window and
evaluating them out of sample (``compute.backtest.walkforward.evaluate_fold``), with at most 2 x the
cluster's CPUs in flight. Without a Ray runtime the folds run in-process (same numbers).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from compute.core.errors import ComputeError
from serve_app.api.backtest_models import (
    FoldSpec,
    UsedOut,
    WalkForwardRequest,
    WalkForwardResponse,
)
from serve_app.api.errors import ApiError
from serve_app.api.timefmt import iso, iso_array
from serve_app.backtests import (
    MAX_BACKTEST_BARS,
    MAX_GRID,
    MAX_WORK,
    SeriesData,
    _plain,
    check_window,
    count_candles,
    engine_config,
    fail_run,
    insufficient,
    load_series,
    start_run,
    strategy_error,
    thin_indices,
    too_many_bars,
)
from serve_app.execution.fanout import fan_out
from serve_app.runs import code_version, request_hash
from serve_app.settings import Settings
from storage.engine import transaction
from storage.intervals import periods_per_year
from storage.runs import RunRepository


# ------------------------------------------------------------------------------- checks
def check_grid(
    strategy: str, grid: dict[str, list[Any]], fixed: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every parameter set of ``grid`` (with ``fixed``), validated; 422 saying what to fix."""
    from compute.backtest import strategies

    if not grid or any(not v for v in grid.values()):
        empty = [k for k, v in grid.items() if not v]
        raise ApiError(
            422,
            "empty_grid",
            "the grid is empty"
            + (f": {', '.join(empty)} have no values" if empty else "")
            + "; give at least one parameter with one or more values (a single parameter set "
            "is POST /backtest/run)",
            parameter="grid",
        )
    both = sorted(set(grid) & set(fixed))
    if both:
        raise ApiError(
            422,
            "invalid_parameter",
            f"{', '.join(both)} appear in both grid and fixed_params; keep each in one",
            parameter="grid",
        )
    size = int(np.prod([len(v) for v in grid.values()]))
    if size > MAX_GRID:
        raise ApiError(
            422,
            "grid_too_large",
            f"the grid has {size} parameter sets; at most {MAX_GRID} per walk-forward: use "
            "fewer values, or run it as a sweep job (squall sweep submit)",
            parameter="grid",
            cap=MAX_GRID,
        )
    from serve_app.sweeps import grid_combos

    try:
        return [
            strategies.validate_strategy(strategy, {**fixed, **combo})
            for combo in grid_combos(grid)
        ]
    except ComputeError as exc:
        raise strategy_error(exc, strategy) from None


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
        raise ApiError(
            422,
            "folds_exceed_data",
            f"{exc} (the window holds {n_bars} candles)",
            parameter="train_bars",
            available_bars=n_bars,
            required_bars=spec.train_bars + spec.purge_bars + spec.test_bars,
        ) from None


def check_work(folds: list[Any], grid_size: int) -> int:
    """Parameter sets x bars the folds cost (each grid point runs on ``[0, train_end)`` for its
    signal and on train; the chosen one on the test window); 422 over ``MAX_WORK``."""
    work = sum(grid_size * (2 * f.train_end - f.train_start) + 2 * f.test_end for f in folds)
    if work > MAX_WORK:
        raise ApiError(
            422,
            "too_much_work",
            f"{len(folds)} folds x {grid_size} parameter sets cost {work:,} bar evaluations, "
            f"over the cap of {MAX_WORK:,}: use fewer folds (a larger step_bars), a smaller "
            "grid or a shorter window, or run a sweep job",
            cap=MAX_WORK,
        )
    return work


# --------------------------------------------------------------------------------- folds
def _fold_task(shared: dict[str, Any], fold: Any) -> dict[str, Any]:
    """One fold (runs in a Ray worker or in-process)."""
    from compute.backtest.walkforward import evaluate_fold

    return evaluate_fold(
        fold,
        shared["candles"],
        shared["strategy"],
        shared["grid"],
        shared["config"],
        shared["objective"],
        regimes=shared["regimes"],
        funding_rate=shared["funding"],
    )


def walkforward_series(
    data: SeriesData,
    strategy: str,
    grid: list[dict[str, Any]],
    spec: FoldSpec,
    config: Any,
    *,
    use_ray: bool | None = None,
) -> dict[str, Any]:
    """Walk-forward of ``grid`` on ``data``: folds, stitched OOS, decay, regime checks."""
    from compute.backtest.walkforward import decay_report, stitch
    from compute.indicators import regimes

    folds = plan_folds(len(data), spec)
    shared = {
        "candles": {k: getattr(data, k) for k in ("ts", "open", "high", "low", "close")},
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
    results, how = fan_out(_fold_task, folds, shared, use_ray=use_ray)
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
            "metrics": _plain(oos["metrics"]),
            "ts": np.asarray(oos["ts"], np.int64),
            "equity": np.asarray(oos["equity"], np.float64),
            "trades": [
                {**_plain(t), "fold": k} for k, res in enumerate(results) for t in res["oos_trades"]
            ],
        },
        "decay": _plain(decay),
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
        "is_scores": _plain(res["is_scores"]),
        "is_metrics": _plain(res["is_metrics"]),
        "oos_metrics": _plain(res["oos_metrics"]),
        "oos_is_ratio": ratio,
        "oos_trades": len(res["oos_trades"]),
        "regimes": regime_rows,
    }


# ------------------------------------------------------------------------------ the run
def run_walkforward_request(
    sessions: sessionmaker[Session], settings: Settings, req: WalkForwardRequest
) -> WalkForwardResponse:
    """Validate, cap, load, fan the folds out, record and answer one walk-forward."""
    from compute.backtest import strategies

    grid = check_grid(req.strategy, req.grid, req.fixed_params)
    warmup = max(strategies.required_bars(req.strategy, g) for g in grid) - 2
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
    run_id, created = start_run(
        sessions,
        "walkforward",
        req,
        coin=window.coin,
        interval=window.interval,
        strategy=req.strategy,
        seed=req.seed,
    )
    started = time.perf_counter()
    try:
        report = walkforward_series(data, req.strategy, grid, req, config)
    except ComputeError as exc:
        fail_run(sessions, run_id, exc, started)
        raise ApiError(422, "data_integrity", f"the stored data cannot be used: {exc}") from None
    except BaseException as exc:
        fail_run(sessions, run_id, exc, started)
        raise
    duration = time.perf_counter() - started
    used = {
        "coin": window.coin,
        "interval": window.interval,
        "strategy": req.strategy,
        "params": dict(req.fixed_params),
        "warmup_bars": warmup,
        "data": data.used(),
        "seed": req.seed,
        "code_version": code_version(),
        "request_hash": request_hash(req),
        "periods_per_year": periods_per_year(window.interval),
    }
    oos = report["oos"]
    summary = {**oos["metrics"], "folds": len(folds), "fading": report["decay"]["fading"]}
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
            results={**results, "used": used, "grid_size": len(grid)},
        )
    idx, stride = thin_indices(len(oos["ts"]), req.equity_points)
    return WalkForwardResponse(
        run_id=run_id,
        kind="walkforward",
        created_at=iso(created),
        created_at_unix=created,
        duration_s=duration,
        used=UsedOut.model_validate(used),
        grid_size=len(grid),
        folds=report["folds"],
        oos={
            "metrics": oos["metrics"],
            "bars": len(oos["ts"]),
            "trades": len(oos["trades"]),
            "equity": {
                "ts": iso_array(oos["ts"][idx]),
                "ts_unix": oos["ts"][idx].tolist(),
                "equity": oos["equity"][idx].tolist(),
                "stride": stride,
            },
        },
        decay=report["decay"],
        regime_checks=report["regime_checks"],
        execution=report["execution"],
    )
