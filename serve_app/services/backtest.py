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

import functools
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
from serve_app.services.strategy import Resolved, check, frame_of, resolve
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


def run_engine(
    data: SeriesData,
    strategy: Any,
    params: dict[str, Any],
    config: Any,
    *,
    target: Any = None,
) -> Any:
    """Positions of the strategy (a built-in's name or any plugin; or ``target`` computed
    already), then the engine; bad stored data is a DataIntegrityError."""
    from compute.backtest import strategies
    from compute.backtest.engine import run_backtest

    held = (
        strategy in strategies.HELD_FROM_START
        if isinstance(strategy, str)
        else strategy.held_from_start
    )
    try:
        if target is None and isinstance(strategy, str):
            target = strategies.positions(
                strategy, params, data.open, data.high, data.low, data.close
            )
        elif target is None:
            target = strategy.positions(frame_of(data), params)
        return run_backtest(
            data.ts,
            data.open,
            data.high,
            data.low,
            data.close,
            target,
            config,
            funding_rate=data.funding,
            hold_from_start=held,
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
    data: SeriesData, *, provenance: dict[str, Any] | None = None,
    checks: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What a run used: enough to reproduce it (``used`` of the response and the registry):
    with the strategy's provenance (name, version, origin, source, source hash) and, for a
    user strategy, its look-ahead / recursion check."""
    out = {
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
    if provenance is not None:
        out["provenance"] = provenance
    if checks is not None:
        out["checks"] = checks
    return out


def resolved_params(
    settings: Settings, req: Any, resolved: Resolved | None = None
) -> tuple[Resolved, dict[str, Any], int]:
    """The request's strategy (``resolved`` when a worker got it already), its full
    parameters and the candles one traded bar needs; 422s before any work."""
    if resolved is None:
        resolved, given = resolve(settings, req.strategy, req.params)
    else:
        given = dict(req.params) or dict(getattr(req.strategy, "params", {}) or {})
    params = resolved.validate(given)
    return resolved, params, resolved.required_bars(params)


def run_backtest(
    sessions: sessionmaker[Session],
    settings: Settings,
    req: BacktestRunRequest,
    *,
    rerun_of: str | None = None,
    run_id: str | None = None,
    resolved: Resolved | None = None,
) -> Recorded:
    """Validate, cap, load, check, run and record one backtest (under ``run_id`` when it was
    queued and claimed by a worker; a new run otherwise). A user strategy's look-ahead check
    runs on the candles before anything is recorded (a rejection records nothing)."""
    resolved, params, required = resolved_params(settings, req, resolved)
    warmup = required - MIN_TRADE_BARS
    label = resolved.label
    with sessions() as session:
        window = check_window(session, settings, req)
        checked_count(session, window, required, f"{label} (warm-up {warmup} bars)")
        data = load_series(session, window, with_funding=req.funding)
    config = engine_config(req, window.interval)
    target = None
    if not resolved.builtin:
        target = resolved.positions(frame_of(data), params)
    checks = check(resolved, frame_of(data), params, req.lookahead, full=target)
    if run_id is None:
        run_id, created = start_run(
            sessions,
            "backtest",
            req,
            coin=window.coin,
            interval=window.interval,
            strategy=label,
            seed=req.seed,
            rerun_of=rerun_of,
        )
    else:
        created = int(time.time())
    started = time.perf_counter()
    try:
        result, cost = call_counted(
            functools.partial(run_engine, target=target),
            data,
            resolved.engine_strategy,
            params,
            config,
        )
    except BaseException as exc:
        fail_run(sessions, run_id, exc, started)
        raise
    duration = time.perf_counter() - started
    used = used_block(
        req, window.coin, window.interval, label, params, warmup, data,
        provenance=resolved.provenance, checks=checks,
    )  # fmt: skip
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
    recorded: Any  # Recorded (a backtest) or services.portfolio.Recorded
    request: Any  # BacktestRunRequest or PortfolioRequest
    differences: list[dict[str, Any]]

    @property
    def same_strategy(self) -> bool:
        """The strategy's provenance (version, source hash; a spec's canonical text) is the
        one recorded with the original."""

        def prov(run: Any) -> Any:
            results = run.results if isinstance(run.results, dict) else {}
            return (results.get("used") or {}).get("provenance")

        return bool(prov(self.original) == prov(self.again))

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
    if original.kind not in ("backtest", "portfolio"):
        raise ConfigurationError(
            f"run {run_id} is a {original.kind}; only backtest and portfolio runs can be "
            "re-run here (re-submit a walk-forward or sweep with its recorded request)",
            code="not_rerunnable",
            parameter="run_id",
        )
    req: Any
    if original.kind == "portfolio":
        from serve_app.services import portfolio

        req = portfolio.PortfolioRequest.model_validate(original.request)
        rec: Any = portfolio.run_portfolio(sessions, settings, req, rerun_of=run_id)
    else:
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
    from serve_app.execution.submit import ensure_capacity, launch

    resolved, _, required = resolved_params(settings, req)
    warmup = required - MIN_TRADE_BARS
    with sessions() as session:
        window = check_window(session, settings, req)
        checked_count(session, window, required, f"{resolved.label} (warm-up {warmup} bars)")
    engine_config(req, window.interval)
    ensure_capacity(sessions, settings.max_active_runs)
    run_id, _ = start_run(
        sessions,
        "backtest",
        req,
        status="queued",
        coin=window.coin,
        interval=window.interval,
        strategy=resolved.label,
        seed=req.seed,
        progress={"done": 0, "total": 1, "unit": "backtests"},
    )
    where = launch(
        DRIVER, settings.model_dump(mode="json"), run_id, req.model_dump(mode="json"), resolved
    )
    return {
        "run_id": run_id,
        "kind": "backtest",
        "status": "queued",
        "progress": {"done": 0, "total": 1, "unit": "backtests"},
        "poll": f"/runs/{run_id}",
        "worker": where,
    }


def drive(
    settings_values: dict[str, Any],
    run_id: str,
    request: dict[str, Any],
    resolved: Resolved | None = None,
) -> None:
    """Execute a queued backtest on a warm worker, recording it under ``run_id`` (the
    strategy resolved by the submitter: a plugin is re-imported here by module path)."""
    from serve_app.execution.runs import RunContext
    from serve_app.execution.submit import claimed, sessions_for
    from serve_app.services.runs import get_run

    settings = Settings(**settings_values)
    sessions = sessions_for(settings.database_url)
    if not claimed(sessions, run_id):
        return
    req = BacktestRunRequest.model_validate(request)
    started = time.perf_counter()
    with RunContext(sessions, run_id, heartbeat_s=settings.run_heartbeat_s):
        try:
            run_backtest(sessions, settings, req, run_id=run_id, resolved=resolved)
        except Exception as exc:  # recorded on the run; nobody waits for it here
            with sessions() as session:
                still = get_run(session, run_id, payload=False).status == "running"
            if still:  # failed before the engine (a check, the data): say why
                fail_run(sessions, run_id, exc, started)
