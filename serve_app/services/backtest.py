"""The backtest use case: validate and cap a request, read its data, run the engine, record it.

Order matters: everything that can be checked without work is checked first (strategy and
parameters, interval, coin, times), then the candles in the window are *counted* (one indexed
query) and the caps and the warm-up are checked against the count; only then are candles and
funding read and the engine run. A run is recorded in the registry (``storage.runs``) as
``running`` before the engine starts and updated to ``succeeded`` or ``failed`` after, so a
crash leaves a trace.

``compute`` (JAX) is imported on first use: the market API and the CLI never pay for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from compute.core.errors import ComputeError
from serve_app.execution.compiles import call_counted
from serve_app.services.inputs import SeriesData, check_window, checked_count, load_series
from serve_app.services.provenance import code_version, request_hash
from serve_app.services.requests.backtest import BacktestRunRequest, CostsAndSizing
from serve_app.services.results import plain, stored_equity
from serve_app.services.runs import fail_run, start_run
from serve_app.settings import Settings
from storage.engine import transaction
from storage.errors import ConfigurationError, DataIntegrityError
from storage.intervals import periods_per_year
from storage.runs import RunRepository

MIN_TRADE_BARS = 2  # a signal at bar t executes at t+1: one bar after the warm-up is not enough


# ------------------------------------------------------------------------------ strategies
def strategy_error(exc: Exception, strategy: str) -> ConfigurationError:
    """A compute validation error, listing the valid strategies and parameters."""
    from compute.backtest.strategies import STRATEGIES

    valid = [s.describe() for s in STRATEGIES.values()]
    unknown = strategy not in STRATEGIES
    return ConfigurationError(
        str(exc),
        code="unknown_strategy" if unknown else "invalid_parameter",
        parameter="strategy" if unknown else "params",
        valid=valid,
    )


def validate_strategy(strategy: str, params: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The parameters with defaults filled in, and the candles one traded bar needs (warm-up
    + 2: a signal at bar t executes at t + 1's open)."""
    from compute.backtest import strategies

    try:
        full = strategies.validate_strategy(strategy, dict(params))
        return full, int(strategies.required_bars(strategy, full))
    except ComputeError as exc:
        raise strategy_error(exc, strategy) from None


# ---------------------------------------------------------------------------------- engine
def engine_config(req: CostsAndSizing, interval: str) -> Any:
    """The engine's ``BacktestConfig`` for a request (e.g. a fixed fraction above
    max_leverage is a ConfigurationError)."""
    from compute.backtest.engine import BacktestConfig

    try:
        return BacktestConfig(
            fee_bps=req.fee_bps,
            slippage_bps=req.slippage_bps,
            slippage_range_frac=req.slippage_range_frac,
            sizing=req.sizing,
            fraction=req.fraction,
            target_vol=req.target_vol,
            vol_lookback=req.vol_lookback,
            max_leverage=req.max_leverage,
            periods_per_year=periods_per_year(interval),
        )
    except ComputeError as exc:
        raise ConfigurationError(
            f"{exc}; fix that body field", code="invalid_costs_or_sizing"
        ) from None


def run_engine(data: SeriesData, strategy: str, params: dict[str, Any], config: Any) -> Any:
    """Positions of the strategy, then the engine; bad stored data is a DataIntegrityError."""
    from compute.backtest import strategies
    from compute.backtest.engine import run_backtest

    try:
        target = strategies.positions(strategy, params, data.open, data.high, data.low, data.close)
        return run_backtest(
            data.ts,
            data.open,
            data.high,
            data.low,
            data.close,
            target,
            config,
            funding_rate=data.funding,
            hold_from_start=strategy in strategies.HELD_FROM_START,
        )
    except ComputeError as exc:
        raise DataIntegrityError(f"the stored data cannot be used: {exc}") from None


# -------------------------------------------------------------------------------- the run
@dataclass
class Recorded:
    """A finished run as stored (and as the response is built from)."""

    run_id: str
    created_at: int
    duration_s: float
    used: dict[str, Any]
    metrics: dict[str, Any]
    equity: dict[str, Any]
    trades: list[dict[str, Any]]
    regime_stats: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


def used_block(
    req: Any, coin: str, interval: str, strategy: str, params: dict[str, Any], warmup: int,
    data: SeriesData,
) -> dict[str, Any]:  # fmt: skip
    """What a run used: enough to reproduce it (``used`` of the response and the registry)."""
    return {
        "coin": coin,
        "interval": interval,
        "strategy": strategy,
        "params": params,
        "warmup_bars": warmup,
        "data": data.used(),
        "seed": req.seed,
        "code_version": code_version(),
        "request_hash": request_hash(req),
        "periods_per_year": periods_per_year(interval),
    }


def run_backtest(
    sessions: sessionmaker[Session],
    settings: Settings,
    req: BacktestRunRequest,
    *,
    rerun_of: str | None = None,
    run_id: str | None = None,
) -> Recorded:
    """Validate, cap, load, run and record one backtest (under ``run_id`` when it was queued
    and claimed by a worker; a new run otherwise)."""
    params, required = validate_strategy(req.strategy, req.params)
    warmup = required - MIN_TRADE_BARS
    with sessions() as session:
        window = check_window(session, settings, req)
        checked_count(session, window, required, f"{req.strategy} (warm-up {warmup} bars)")
        data = load_series(session, window, with_funding=req.funding)
    config = engine_config(req, window.interval)
    if run_id is None:
        run_id, created = start_run(
            sessions,
            "backtest",
            req,
            coin=window.coin,
            interval=window.interval,
            strategy=req.strategy,
            seed=req.seed,
            rerun_of=rerun_of,
        )
    else:
        created = int(time.time())
    started = time.perf_counter()
    try:
        result, cost = call_counted(run_engine, data, req.strategy, params, config)
    except BaseException as exc:
        fail_run(sessions, run_id, exc, started)
        raise
    duration = time.perf_counter() - started
    used = used_block(req, window.coin, window.interval, req.strategy, params, warmup, data)
    rec = Recorded(
        run_id=run_id,
        created_at=created,
        duration_s=duration,
        used=used,
        metrics=plain(result.metrics),
        equity=stored_equity(result.equity),
        trades=plain(list(result.trades)),
        regime_stats=plain(list(result.regime_stats)),
        extra={
            "execution": {
                "where": "in-process",
                **cost,
                "warm": cost["compiles"] + cost["cache_loads"] == 0,
            }
        },
    )
    with transaction(sessions) as session:
        RunRepository(session).update(
            run_id,
            status="succeeded",
            data_fingerprint=data.fingerprint,
            duration_s=duration,
            finished_at=int(time.time()),
            summary=rec.metrics,
            equity=rec.equity,
            trades=rec.trades,
            results={"used": used, "regime_stats": rec.regime_stats},
            progress={"done": 1, "total": 1, "unit": "backtests"},
        )
    return rec


def recorded(session: Session, run_id: str) -> Recorded:
    """A succeeded backtest run of the registry as a :class:`Recorded`."""
    from serve_app.services.runs import get_run

    run = get_run(session, run_id)
    results = run.results if isinstance(run.results, dict) else {}
    return Recorded(
        run_id=run.id,
        created_at=run.created_at,
        duration_s=run.duration_s or 0.0,
        used=results.get("used", {}),
        metrics=run.summary or {},
        equity=run.equity or {},
        trades=run.trades or [],
        regime_stats=results.get("regime_stats", []),
    )


@dataclass(frozen=True)
class Rerun:
    original: Any  # RunRecord
    again: Any  # RunRecord
    recorded: Recorded
    request: BacktestRunRequest
    differences: list[dict[str, Any]]

    @property
    def equity_identical(self) -> bool:
        return bool(self.original.equity == self.again.equity)

    @property
    def trades_identical(self) -> bool:
        return bool(self.original.trades == self.again.trades)

    @property
    def identical(self) -> bool:
        return not self.differences and self.equity_identical and self.trades_identical


def rerun(sessions: sessionmaker[Session], settings: Settings, run_id: str) -> Rerun:
    """Run a recorded backtest again with its recorded request; say what differs."""
    from serve_app.services.runs import get_run

    with sessions() as session:
        original = get_run(session, run_id)
    if original.kind != "backtest":
        raise ConfigurationError(
            f"run {run_id} is a {original.kind}; only backtest runs can be re-run here "
            "(re-submit a walk-forward or sweep with its recorded request)",
            code="not_rerunnable",
            parameter="run_id",
        )
    req = BacktestRunRequest.model_validate(original.request)
    rec = run_backtest(sessions, settings, req, rerun_of=run_id)
    with sessions() as session:
        again = get_run(session, rec.run_id)
    before, after = original.summary or {}, again.summary or {}
    diffs = [
        {"metric": k, "original": before.get(k), "rerun": after.get(k)}
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k)
    ]
    return Rerun(original, again, rec, req, diffs)


DRIVER = "serve_app.services.backtest:drive"


def submit_backtest(
    sessions: sessionmaker[Session], settings: Settings, req: BacktestRunRequest
) -> dict[str, Any]:
    """Check the request now (errors answer at once), then queue it on a warm worker."""
    from serve_app.execution.submit import launch

    _, required = validate_strategy(req.strategy, req.params)
    warmup = required - MIN_TRADE_BARS
    with sessions() as session:
        window = check_window(session, settings, req)
        checked_count(session, window, required, f"{req.strategy} (warm-up {warmup} bars)")
    engine_config(req, window.interval)
    run_id, _ = start_run(
        sessions,
        "backtest",
        req,
        status="queued",
        coin=window.coin,
        interval=window.interval,
        strategy=req.strategy,
        seed=req.seed,
        progress={"done": 0, "total": 1, "unit": "backtests"},
    )
    where = launch(DRIVER, settings.model_dump(mode="json"), run_id, req.model_dump(mode="json"))
    return {
        "run_id": run_id,
        "kind": "backtest",
        "status": "queued",
        "progress": {"done": 0, "total": 1, "unit": "backtests"},
        "poll": f"/runs/{run_id}",
        "worker": where,
    }


def drive(settings_values: dict[str, Any], run_id: str, request: dict[str, Any]) -> None:
    """Execute a queued backtest on a warm worker, recording it under ``run_id``."""
    from serve_app.execution.runs import RunContext
    from serve_app.execution.submit import claimed, sessions_for

    settings = Settings(**settings_values)
    sessions = sessions_for(settings.database_url)
    if not claimed(sessions, run_id):
        return
    req = BacktestRunRequest.model_validate(request)
    with RunContext(sessions, run_id, heartbeat_s=settings.run_heartbeat_s):
        try:
            run_backtest(sessions, settings, req, run_id=run_id)
        except Exception:  # recorded on the run; nobody waits for it here
            return
