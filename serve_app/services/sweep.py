"""Parameter sweeps as Ray jobs: the spec, its caps, submission and following a job.

``squall sweep submit SPEC.yaml`` validates the spec and its caps *before* anything is
submitted, records a ``queued`` sweep in the registry (the spec is its request), and submits
``python -m serve_app.jobs.sweep --run-id ID`` with Ray's job submission API to the configured
cluster (``SQUALL_RAY_JOBS_ADDRESS``, else the local dashboard). The job updates the run's
progress (done / total parameter sets) as units finish and stores the ranked table at the end;
``status`` / ``logs`` / ``results`` read the registry and the job server. A job is named by its
Ray submission id or by the registry run id, whichever is at hand.

A spec (YAML)::

    name: ema-grid
    coins: [BTC, ETH]
    intervals: [1h]
    start: 2024-01-01
    strategies:
      ema_cross: {fast: [5, 10, 20], slow: [50, 100, 200]}
      trend:                                     # a label: a spec (or a plugin: name: ...)
        spec: {long_entry: "ema:{fast} > ema:{slow}", long_exit: "ema:{fast} <= ema:{slow}"}
        grid: {fast: [5, 12], slow: [26, 50]}
    costs: {fee_bps: 10, slippage_bps: 2}
    objective: sharpe
    top: 10
    walkforward: {train_bars: 2000, test_bars: 500, purge_bars: 24}   # optional
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_app.services.provenance import (
    CODE_VERSION_ENV,
    ROOT,
    canonical_request,
    code_version,
    request_hash,
)
from serve_app.services.requests.backtest import (
    LOOKAHEAD_DOC,
    CostsAndSizing,
    FoldSpec,
    LookaheadPolicy,
    Number,
    SpecStrategy,
    _Body,
)
from serve_app.settings import Settings
from storage.engine import make_engine, session_factory, transaction
from storage.errors import ConfigurationError, SquallError
from storage.intervals import INTERVAL_SECONDS
from storage.runs import RunRecord, RunRepository

MAX_SWEEP_COMBOS = 100_000  # parameter sets x coins x intervals of one sweep
MAX_SWEEP_GRID = 10_000  # parameter sets of one strategy
MAX_SERIES = 50  # coins x intervals
OBJECTIVES = ("sharpe", "sortino", "calmar", "total_return")
_UPLOAD_EXCLUDES = [".venv", "var", ".git", "**/__pycache__", ".mypy_cache", ".ruff_cache"]


class SweepStrategy(BaseModel):
    """A strategy under a label of its own: a plugin by ``name`` or a declarative ``spec``,
    with fixed ``params`` and the ``grid`` to search (a spec's: placeholder -> values)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=80, description="a built-in or plugin name")
    spec: dict[str, Any] | None = Field(None, description="a declarative spec")
    params: dict[str, Number] = Field(default_factory=dict, description="held fixed")
    grid: dict[str, list[Number]] = Field(
        default_factory=dict, description="parameter -> candidate values"
    )

    def strategy(self) -> str | SpecStrategy:
        if (self.name is None) == (self.spec is None):
            raise ConfigurationError(
                "a strategy entry has exactly one of name or spec", code="invalid_strategy"
            )
        return self.name if self.name is not None else SpecStrategy(spec=self.spec or {})


class SweepSpec(_Body):
    """A sweep: strategies x parameter grids x coins x intervals, optionally walk-forward."""

    model_config = ConfigDict(extra="forbid")
    LATER_FIELDS = ("lookahead",)

    name: str = Field("sweep", max_length=80, description="a label for people")
    coins: list[str] = Field(min_length=1, description="base assets")
    intervals: list[str] = Field(min_length=1, description="bar intervals")
    start: str | int | None = Field(None, description="first bar (ISO-8601 or unix s)")
    end: str | int | None = Field(None, description="last bar, inclusive")
    strategies: dict[str, dict[str, list[Number]] | SweepStrategy] = Field(
        min_length=1,
        description="strategy name -> parameter -> candidate values; or label -> {name | "
        "spec, params, grid} (a plugin or a declarative spec)",
    )
    costs: CostsAndSizing = Field(default_factory=CostsAndSizing, description="costs, sizing, seed")
    objective: Literal["sharpe", "sortino", "calmar", "total_return"] = Field(
        "sharpe", description="how results are ranked (and folds choose parameters)"
    )
    top: int = Field(10, ge=1, le=1000, description="best N kept in the summary and printed")
    walkforward: FoldSpec | None = Field(None, description="run each grid walk-forward")
    lookahead: LookaheadPolicy = Field(
        "reject", description=LOOKAHEAD_DOC + " (per series, on the grid's first set)"
    )


@dataclass(frozen=True)
class Unit:
    """One task of a sweep: a strategy's whole grid on one series. ``strategy`` is its
    label; ``resolved`` the strategy (services.strategy.Resolved: pickles as a reference, a
    worker re-imports a plugin), None for a built-in named by the label."""

    index: int
    coin: str
    interval: str
    strategy: str
    combos: tuple[dict[str, Any], ...]
    resolved: Any = None


def grid_combos(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of a parameter grid (keys in the given order)."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def check_grid(strategy: str, grid: dict[str, list[Any]], cap: int) -> int:
    """The grid's size after checking it is non-empty and under ``cap`` (before expanding)."""
    empty = [k for k, v in grid.items() if not v]
    if empty:
        raise ConfigurationError(
            f"{strategy}: parameter(s) {', '.join(empty)} have no values; give at least one "
            "value each, or drop them to use the defaults"
        )
    size = 1
    for values in grid.values():
        size *= len(values)
    if size > cap:
        raise ConfigurationError(
            f"{strategy}: the grid has {size} parameter sets, over the cap of {cap}; "
            "use fewer values per parameter or split the sweep"
        )
    return size


def parse_spec(text: str) -> SweepSpec:
    """A spec from YAML text; ``ConfigurationError`` saying what to fix."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"the spec is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigurationError("the spec must be a YAML mapping (name, coins, intervals, ...)")
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"invalid sweep spec: {problems}") from None


def resolve_strategies(
    spec: SweepSpec, settings: Settings | None = None, refs: dict[str, Any] | None = None
) -> dict[str, tuple[Any, dict[str, Any], dict[str, list[Any]]]]:
    """label -> (resolved strategy, fixed params, grid). ``refs`` (label -> the stored
    ``{"ref", "provenance"}`` of the submitter) rebuild them without discovery (a sweep job)."""
    from serve_app.services.strategy import Resolved, StrategyRef, resolve

    out = {}
    for label, entry in spec.strategies.items():
        if isinstance(entry, SweepStrategy):
            target: Any = entry.strategy()
            fixed, grid = dict(entry.params), dict(entry.grid)
        else:
            target, fixed, grid = label, {}, dict(entry)
        stored = (refs or {}).get(label)
        if stored is not None:
            ref = StrategyRef(**{**stored["ref"], "paths": tuple(stored["ref"]["paths"])})
            resolved = Resolved(ref, stored["provenance"])
        else:
            from serve_app.settings import get_settings

            resolved, _ = resolve(settings or get_settings(), target)
        out[label] = (resolved, fixed, grid)
    return out


def strategy_refs(spec: SweepSpec, settings: Settings) -> dict[str, Any]:
    """What a sweep run records of its strategies: each label's reference and provenance."""
    from dataclasses import asdict

    return {
        label: {"ref": asdict(r.ref), "provenance": r.provenance}
        for label, (r, _, _) in resolve_strategies(spec, settings).items()
    }


def expand(
    spec: SweepSpec, settings: Settings | None = None, refs: dict[str, Any] | None = None
) -> list[Unit]:
    """Check the caps, the intervals and every parameter set, then list the units.

    Everything here runs before submission: a spec that would fail fails now, not in the job.
    """
    bad = [i for i in spec.intervals if i not in INTERVAL_SECONDS]
    if bad:
        raise ConfigurationError(
            f"unknown intervals {bad}; valid intervals: {', '.join(INTERVAL_SECONDS)}"
        )
    series = [(c.strip().upper(), i) for c in spec.coins for i in spec.intervals]
    if len(series) > MAX_SERIES:
        raise ConfigurationError(
            f"{len(series)} coin x interval series, over the cap of {MAX_SERIES}; split the sweep"
        )
    resolved = resolve_strategies(spec, settings, refs)
    total = sum(check_grid(s, g, MAX_SWEEP_GRID) for s, (_, _, g) in resolved.items())
    if total * len(series) > MAX_SWEEP_COMBOS:
        raise ConfigurationError(
            f"the sweep has {total * len(series)} parameter sets x series, over the cap of "
            f"{MAX_SWEEP_COMBOS}; narrow the grids, coins or intervals, or split it"
        )
    units: list[Unit] = []
    for label, (strategy, fixed, grid) in resolved.items():
        if strategy.ref.kind == "spec":
            from serve_app.services.walkforward import check_spec_grid

            check_spec_grid(strategy, grid)
        combos = []
        for combo in grid_combos(grid):
            try:
                combos.append(strategy.validate({**fixed, **combo}))
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"{label} {combo}: {exc.message}", code=exc.code, **exc.extra
                ) from None
        for coin, interval in series:
            units.append(Unit(len(units), coin, interval, label, tuple(combos), strategy))
    return units


def window_of(spec: SweepSpec) -> tuple[int | None, int | None]:
    """The spec's start/end as unix seconds; ``ConfigurationError`` when unreadable."""
    from serve_app.services.inputs import parse_range

    try:
        return parse_range(
            None if spec.start is None else str(spec.start),
            None if spec.end is None else str(spec.end),
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"sweep spec: {exc.message}", code=exc.code) from None


def required_candles(spec: SweepSpec, unit: Unit) -> int:
    """Candles a unit needs: the longest warm-up of its grid + 2, or one walk-forward fold."""
    from compute.backtest.strategies import required_bars

    if unit.resolved is None:
        need = max(required_bars(unit.strategy, c) for c in unit.combos)
    else:
        need = max(unit.resolved.required_bars(c) for c in unit.combos)
    if spec.walkforward is not None:
        fs = spec.walkforward
        need = max(need, fs.train_bars + fs.purge_bars + fs.test_bars)
    return need


def check_data(spec: SweepSpec, units: list[Unit], settings: Settings) -> None:
    """Every series holds enough candles, and no more than the per-request cap (one count
    query per series, before anything is submitted)."""
    from serve_app.services.inputs import Window, checked_count

    start, end = window_of(spec)
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            for unit in units:
                window = Window(unit.coin, unit.interval, start, end)
                try:
                    checked_count(
                        session, window, required_candles(spec, unit), f"{unit.strategy} grid"
                    )
                except SquallError as exc:
                    raise ConfigurationError(
                        f"{unit.coin} {unit.interval}: {exc.message}", code=exc.code
                    ) from None
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------ submission
def jobs_address(settings: Settings, override: str | None = None) -> str:
    """Where the job server listens: the override, the setting, else the local dashboard."""
    address = override or settings.ray_jobs_address
    return address or f"http://127.0.0.1:{settings.dashboard_port}"


def _is_local(address: str) -> bool:
    return any(h in address for h in ("127.0.0.1", "localhost", "0.0.0.0"))


def job_client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


AGENT_WAIT_S = 30.0  # a cluster that just started may not have its job agent yet


def _submit_job(address: str, **job: Any) -> str:
    """Submit with Ray's job API; while the cluster's job agent is still starting ("No
    available agent"), retry for up to ``AGENT_WAIT_S``."""
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return str(job_client(address).submit_job(**job))
        except Exception as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def submit(
    spec: SweepSpec,
    settings: Settings,
    *,
    address: str | None = None,
    upload: bool | None = None,
) -> tuple[str, str]:
    """Validate, record and submit a sweep; returns (run id, Ray job submission id).

    ``upload`` ships the project as the job's working directory (default: only when the
    cluster is not on this machine, where the installed project is used as is).
    """
    units = expand(spec, settings)
    check_data(spec, units, settings)
    refs = strategy_refs(spec, settings)
    total = sum(len(u.combos) for u in units)
    target = jobs_address(settings, address)
    local = _is_local(target)
    upload = (not local) if upload is None else upload
    engine = make_engine(settings.database_url)
    try:
        sessions = session_factory(engine)
        with transaction(sessions) as session:
            run_id = RunRepository(session).add(
                "sweep",
                canonical_request(spec),
                request_hash=request_hash(spec),
                code_version=code_version(),
                status="queued",
                seed=spec.costs.seed,
                coin=spec.coins[0].upper() if len(spec.coins) == 1 else None,
                interval=spec.intervals[0] if len(spec.intervals) == 1 else None,
                strategy=next(iter(spec.strategies)) if len(spec.strategies) == 1 else None,
                progress={"done": 0, "total": total, "units_done": 0, "units": len(units)},
                results={"strategies": refs},
            )
        python = sys.executable if local and not upload else "python"
        env = {"SQUALL_DATABASE_URL": settings.database_url, CODE_VERSION_ENV: code_version()}
        if settings.strategy_modules:
            env["SQUALL_STRATEGY_MODULES"] = ",".join(settings.strategy_modules)
        runtime_env: dict[str, Any] = {"env_vars": env}
        if upload:
            runtime_env["working_dir"] = str(ROOT)
            runtime_env["excludes"] = _UPLOAD_EXCLUDES
        try:
            job_id = _submit_job(
                target,
                entrypoint=f"{python} -m serve_app.jobs.sweep --run-id {run_id}",
                runtime_env=runtime_env,
                metadata={"squall_run_id": run_id, "name": spec.name},
            )
        except Exception as exc:
            with transaction(sessions) as session:
                RunRepository(session).update(
                    run_id, status="failed", error=f"submission failed: {exc}"[:2000]
                )
            raise ConfigurationError(
                f"could not submit to the Ray job server at {target}: {exc}; start the platform "
                "(squall up) or set SQUALL_RAY_JOBS_ADDRESS / --address"
            ) from None
        with transaction(sessions) as session:
            RunRepository(session).update(run_id, job_id=str(job_id))
    finally:
        engine.dispose()
    return run_id, str(job_id)


# ------------------------------------------------------------------------------ following
def find_run(settings: Settings, job: str) -> RunRecord:
    """The sweep run named by a Ray job submission id or a registry run id."""
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            repo = RunRepository(session)
            run = repo.find_by_job(job) or repo.get(job)
    finally:
        engine.dispose()
    if run is None:
        raise ConfigurationError(
            f"no sweep with job or run id {job!r} is recorded in {settings.database_url_redacted}"
        )
    return run


def progress_of(run: RunRecord, now: float | None = None) -> dict[str, Any]:
    """done / total, percent and an ETA extrapolated from the rate so far."""
    p = run.progress or {}
    done, total = int(p.get("done", 0)), int(p.get("total", 0))
    started = p.get("started_at")
    now = time.time() if now is None else now
    eta = None
    if started is not None and 0 < done < total:
        eta = (now - float(started)) / done * (total - done)
    return {
        "done": done,
        "total": total,
        "percent": None if not total else round(100.0 * done / total, 1),
        "eta_s": None if eta is None else round(eta, 1),
        "units_done": p.get("units_done"),
        "units": p.get("units"),
    }


def status(settings: Settings, job: str, *, address: str | None = None) -> dict[str, Any]:
    """The run's registry state, its progress and (when reachable) the Ray job's status."""
    run = find_run(settings, job)
    ray_status = None
    if run.job_id:
        try:
            ray_status = str(job_client(jobs_address(settings, address)).get_job_status(run.job_id))
        except Exception as exc:  # the registry still answers when the cluster is gone
            ray_status = f"unknown ({type(exc).__name__}: {exc})"
    return {
        "run_id": run.id,
        "job_id": run.job_id,
        "status": run.status,
        "ray_status": ray_status,
        "progress": progress_of(run),
        "duration_s": run.duration_s,
        "error": run.error,
    }


def logs(settings: Settings, job: str, *, address: str | None = None) -> str:
    run = find_run(settings, job)
    if not run.job_id:
        raise ConfigurationError(f"run {run.id} has no Ray job (it was never submitted)")
    return str(job_client(jobs_address(settings, address)).get_job_logs(run.job_id))


def results(settings: Settings, job: str, top: int | None = None) -> dict[str, Any]:
    """The best ``top`` rows (default: the spec's ``top``) of a finished sweep."""
    run = find_run(settings, job)
    table = run.results.get("table", []) if isinstance(run.results, dict) else []
    n = top or int(run.request.get("top", 10))
    return {
        "run_id": run.id,
        "job_id": run.job_id,
        "status": run.status,
        "objective": run.request.get("objective"),
        "rows": len(table),
        "best": table[:n],
        "error": run.error,
    }


def read_spec(path: Path) -> SweepSpec:
    if not path.is_file():
        raise ConfigurationError(f"{path}: no such spec file")
    return parse_spec(path.read_text())


def stop_job(run: RunRecord, *, address: str | None = None) -> None:
    """Ask Ray to stop the job of a sweep run (cancel); the job records ``cancelled``."""
    from serve_app.settings import get_settings

    if not run.job_id:
        return
    try:
        job_client(jobs_address(get_settings(), address)).stop_job(run.job_id)
    except Exception as exc:  # the registry flag still stops the job at its next unit
        raise ConfigurationError(
            f"could not reach the Ray job server to stop job {run.job_id}: {exc}; the run is "
            "flagged and stops at its next unit if the job is still alive",
            code="job_server_unreachable",
        ) from None
