"""What a parameter sweep's Ray job runs (entry point: ``python -m serve_app.jobs.sweep``).

``squall sweep submit`` records the sweep (its spec is the run's request) and submits this
entry point with ``ray job submit``'s API. Here the spec is read back from the registry,
expanded into units (one strategy's whole grid on one series), and the units run on the warm
workers of the cluster (each reads its own candles, so nothing large passes through the
driver). The job beats the run's heartbeat; a cancel (``DELETE /runs/{id}``, which also stops
the Ray job) is seen between units: outstanding units are cancelled and the run is recorded
``cancelled``. After each unit the
run's progress (parameter sets done / total, start time for the ETA) is written; at the end the
whole table, ranked by the objective, goes to the registry and the best N to the summary.

Inside a Ray job ``RAY_ADDRESS`` names the cluster; without it (``--local``) the units run in
this process, which is how a spec can be debugged on a laptop.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from typing import Any

from serve_app.services.sweep import SweepSpec, Unit, expand
from serve_app.settings import Settings
from storage.engine import make_engine, session_factory, transaction
from storage.errors import SquallError
from storage.runs import RunRepository

FAST_PATH_MIN_BARS = 10_000
METRIC_COLUMNS = (
    "total_return",
    "cagr",
    "annual_volatility",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "trades",
    "win_rate",
    "profit_factor",
    "exposure",
    "turnover",
    "fees_paid",
    "funding_paid",
)


def evaluate_unit(shared: dict[str, Any], unit: Unit) -> dict[str, Any]:
    """One unit: read the series, evaluate every parameter set (or walk-forward), return rows.

    Runs in a Ray worker (or in-process); a unit whose series lacks data is returned with an
    ``error`` instead of failing the whole sweep.
    """
    from serve_app.services.backtest import engine_config
    from serve_app.services.inputs import SeriesData, Window, checked_count, load_series

    spec = SweepSpec.model_validate(shared["spec"])
    window = Window(unit.coin, unit.interval, shared["start"], shared["end"])
    engine = make_engine(shared["database_url"])
    try:
        with session_factory(engine)() as session:
            required = shared["required"][unit.index]
            checked_count(session, window, required, f"{unit.strategy} on {unit.coin}")
            data: SeriesData = load_series(session, window, with_funding=spec.costs.funding)
    except SquallError as exc:
        return {"unit": _label(unit), "error": exc.message, "rows": [], "fingerprint": None}
    finally:
        engine.dispose()
    try:
        config = engine_config(spec.costs, unit.interval)
        checks = _checks(data, unit, spec)
        if spec.walkforward is None:
            rows = _grid_rows(data, unit, config)
        else:
            rows = [_walkforward_row(data, unit, spec, config)]
    except SquallError as exc:
        return {"unit": _label(unit), "error": exc.message, "rows": [], "fingerprint": None}
    if checks is not None:
        for row in rows:
            row["checks_passed"] = checks["passed"]
    out = {"unit": _label(unit), "error": None, "rows": rows, "fingerprint": data.fingerprint}
    return {**out, "checks": checks} if checks is not None else out


def _builtin(unit: Unit) -> str | None:
    """The built-in strategy's name of a unit (None for a plugin or a spec)."""
    if unit.resolved is None:
        return unit.strategy
    return str(unit.resolved.ref.name) if unit.resolved.builtin else None


def _checks(data: Any, unit: Unit, spec: SweepSpec) -> dict[str, Any] | None:
    """The look-ahead check of a user strategy on the unit's series (its first set)."""
    if _builtin(unit) is not None:
        return None
    from serve_app.services.strategy import check, frame_of

    return check(unit.resolved, frame_of(data), unit.combos[0], spec.lookahead)


def _label(unit: Unit) -> str:
    return f"{unit.strategy} {unit.coin} {unit.interval}"


def _fast_path(data: Any, unit: Unit, config: Any) -> bool:
    """Whether the grid fits ``compute.backtest.sweep``'s one-kernel EMA long/flat sweep: all-in
    fixed sizing, fee + fixed slippage, no funding, no gate, and a series long enough for
    the kernel to pay off (short ones are cheap one by one)."""
    return (
        len(data) >= FAST_PATH_MIN_BARS
        and _builtin(unit) == "ema_cross"
        and all(c["long_only"] == 1 and c["vol_gate"] == 0 for c in unit.combos)
        and config.sizing == "fixed"
        and config.fraction == 1.0
        and config.slippage_range_frac == 0.0
        and (data.funding is None or not data.funding.any())
    )


def _grid_rows(data: Any, unit: Unit, config: Any) -> list[dict[str, Any]]:
    """Every parameter set of the unit on its series: one compiled kernel for the whole grid
    when it fits :func:`compute.backtest.sweep.sweep`, else one backtest per set (regimes
    shared)."""
    from compute.backtest.engine import run_backtest
    from compute.indicators import regimes
    from serve_app.services.strategy import Resolved, StrategyRef, frame_of

    if _spec_fast_path(data, unit, config):
        return _spec_rows(data, unit, config)
    if _fast_path(data, unit, config):
        from compute.backtest.sweep import sweep

        fast = [c["fast"] for c in unit.combos]
        slow = [c["slow"] for c in unit.combos]
        out = sweep(
            data.open,
            data.close,
            fast,
            slow,
            fee_bps=config.fee_bps,
            slippage_bps=config.slippage_bps,
            periods_per_year=config.periods_per_year,
        )
        return [
            _row(unit, params, {k: _num(v[i]) for k, v in out.items()})
            for i, params in enumerate(unit.combos)
        ]

    labels: dict[str, Any] = {
        "vol": regimes.vol_regime(data.close),
        "trend": regimes.trend(data.high, data.low, data.close)[1],
    }
    name = _builtin(unit)
    strategy = unit.resolved if name is None else Resolved(StrategyRef("builtin", name))
    frame = frame_of(data)
    rows = []
    for params in unit.combos:
        target = strategy.positions(frame, params)
        result = run_backtest(
            data.ts,
            data.open,
            data.high,
            data.low,
            data.close,
            target,
            config,
            funding_rate=data.funding,
            regimes=labels,
            hold_from_start=strategy.held_from_start,
        )
        rows.append(_row(unit, params, result.metrics))
    return rows


def _spec_fast_path(data: Any, unit: Unit, config: Any) -> bool:
    """Whether a spec's grid fits ``compute.strategy.grid.sweep_spec``'s fused kernel: a
    long/flat all-in spec (``grid.fused``), all-in fixed sizing, fee + fixed slippage, no
    funding, and a series long enough to pay off (the same conditions as the EMA kernel)."""
    if unit.resolved is None or unit.resolved.ref.kind != "spec":
        return False
    from compute.strategy.grid import fused

    spec = unit.resolved.plugin.spec
    return (
        len(data) >= FAST_PATH_MIN_BARS
        and fused([spec.bind(c) for c in unit.combos])
        and config.sizing == "fixed"
        and config.fraction == 1.0
        and config.slippage_range_frac == 0.0
        and (data.funding is None or not data.funding.any())
    )


def _spec_rows(data: Any, unit: Unit, config: Any) -> list[dict[str, Any]]:
    """A spec's whole grid in one fused kernel (metrics to ~1e-9 of the engine's)."""
    from compute.strategy.grid import sweep_spec
    from serve_app.services.strategy import frame_of

    spec = unit.resolved.plugin.spec
    out = sweep_spec(
        spec,
        [spec.bind(c) for c in unit.combos],
        frame_of(data),
        fee_bps=config.fee_bps,
        slippage_bps=config.slippage_bps,
        periods_per_year=config.periods_per_year,
    )
    metrics = {k: v for k, v in out.items() if k not in ("params", "path")}
    return [
        _row(unit, params, {k: _num(v[i]) for k, v in metrics.items()})
        for i, params in enumerate(unit.combos)
    ]


def _walkforward_row(data: Any, unit: Unit, spec: SweepSpec, config: Any) -> dict[str, Any]:
    """Walk-forward of the unit's grid on its series: one row of stitched OOS metrics."""
    from serve_app.services.walkforward import walkforward_series

    assert spec.walkforward is not None
    grid = list(unit.combos)
    strategy = unit.strategy if unit.resolved is None else unit.resolved
    report = walkforward_series(data, strategy, grid, spec.walkforward, config, use_ray=False)
    row = _row(
        unit, {"chosen": [f["chosen_params"] for f in report["folds"]]}, report["oos"]["metrics"]
    )
    row["decay_flag"] = report["decay"].get("fading")
    return row


def _num(value: Any) -> float | int | None:
    number = value.item() if hasattr(value, "item") else value
    if isinstance(number, float) and not math.isfinite(number):
        return None
    return number if isinstance(number, int | float) else None


def _row(unit: Unit, params: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "coin": unit.coin,
        "interval": unit.interval,
        "strategy": unit.strategy,
        "params": params,
    }
    row.update({k: metrics.get(k) for k in METRIC_COLUMNS})
    return row


def rank(rows: list[dict[str, Any]], objective: str) -> list[dict[str, Any]]:
    """Best first by ``objective``; undefined values last; ties keep their order."""
    return sorted(rows, key=lambda r: (r.get(objective) is None, -(r.get(objective) or 0.0)))


def run(run_id: str, settings: Settings) -> int:
    """Execute the sweep recorded as ``run_id``; returns a process exit code."""
    from serve_app.execution.fanout import fan_out
    from serve_app.execution.runs import RunCancelledError, RunContext

    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    started = time.perf_counter()
    try:
        with sessions() as session:
            record = RunRepository(session).get(run_id)
        if record is None:
            print(f"no run {run_id} in {settings.database_url_redacted}", file=sys.stderr)
            return 2
        try:
            spec = SweepSpec.model_validate(record.request)
            stored = record.results if isinstance(record.results, dict) else {}
            refs = stored.get("strategies") or {}
            units = expand(spec, settings, refs)
            from serve_app.services.sweep import required_candles, window_of

            start, end = window_of(spec)
            shared = {
                "spec": record.request,
                "database_url": settings.database_url,
                "start": start,
                "end": end,
                "required": [required_candles(spec, u) for u in units],
            }
            total = sum(len(u.combos) for u in units)
            progress: dict[str, Any] = {
                "done": 0,
                "total": total,
                "units_done": 0,
                "units": len(units),
                "started_at": time.time(),
            }
            with transaction(sessions) as session:
                RunRepository(session).update(
                    run_id, status="running", progress=progress, started_at=int(time.time())
                )
            ctx = RunContext(sessions, run_id, heartbeat_s=settings.run_heartbeat_s)

            def on_done(i: int, out: dict[str, Any]) -> None:
                progress["done"] += len(units[i].combos)
                progress["units_done"] += 1
                with transaction(sessions) as session:
                    RunRepository(session).update(run_id, progress=progress)
                print(
                    f"[{progress['units_done']}/{len(units)}] {out['unit']}: "
                    + (out["error"] or f"{len(out['rows'])} rows"),
                    flush=True,
                )

            if os.environ.get("RAY_ADDRESS") and not _ray_up():
                import ray

                ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
            with ctx:
                outs, how = fan_out(evaluate_unit, units, shared, on_done=on_done, ctx=ctx)
            table = rank([row for out in outs for row in out["rows"]], spec.objective)
            skipped = [{"unit": o["unit"], "error": o["error"]} for o in outs if o["error"]]
            prints = sorted(o["fingerprint"] for o in outs if o["fingerprint"])
            fingerprint = hashlib.sha256("|".join(prints).encode()).hexdigest()[:32]
            duration = time.perf_counter() - started
            with transaction(sessions) as session:
                RunRepository(session).update(
                    run_id,
                    status="succeeded" if table or not skipped else "failed",
                    error=None if table or not skipped else "every unit was skipped",
                    progress=progress,
                    summary={
                        "objective": spec.objective,
                        "rows": len(table),
                        "units": len(units),
                        "skipped": len(skipped),
                        "best": table[: spec.top],
                    },
                    results={
                        "table": table,
                        "skipped": skipped,
                        "execution": how,
                        "strategies": refs,
                        "checks": {o["unit"]: o["checks"] for o in outs if o.get("checks")},
                    },
                    data_fingerprint=fingerprint,
                    duration_s=duration,
                    finished_at=int(time.time()),
                )
        except Exception as exc:
            cancelled = isinstance(exc, RunCancelledError)
            with transaction(sessions) as session:
                RunRepository(session).update(
                    run_id,
                    status="cancelled" if cancelled else "failed",
                    error="cancelled on request"
                    if cancelled
                    else f"{type(exc).__name__}: {exc}"[:2000],
                    duration_s=time.perf_counter() - started,
                    finished_at=int(time.time()),
                )
            if cancelled:
                return 3
            raise
    finally:
        engine.dispose()
    print(
        json.dumps({"run_id": run_id, "rows": len(table), "best": table[: spec.top]}, default=str)
    )
    return 0


def _ray_up() -> bool:
    from serve_app.execution.fanout import ray_running

    return ray_running()
