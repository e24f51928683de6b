"""The stress-simulation use case: source returns, regime labels, generator and shocks, the
paths, and the run registry (kind ``simulation``).

Order: the request model has already checked every cap (paths, horizon, path-steps, source
length); then the source returns are resolved (a series, a recorded backtest re-run from its
request, or a strategy spec backtested first), the generator is prepared (block length,
regime weights, volatility scales, or the HMM fit) and only then do the paths run
(:mod:`serve_app.execution.chunks`): in this process when the request is small (warm, no
fan-out), else on the warm workers of every node. A run is recorded before the paths start
and updated to ``succeeded`` (summary + full result), ``failed`` or ``cancelled``. Large
requests (and ``mode: "async"``) are queued and executed by a warm worker, never by a thread
of the replica; progress (paths done / total) and the heartbeat are written to the registry,
so any replica can answer ``GET /risk/simulations/{id}`` or ``GET /runs/{id}``.

``compute`` (JAX) and Ray are imported on first use.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from compute.core.errors import ComputeError
from serve_app.execution.runs import RunCancelledError, RunContext
from serve_app.services.provenance import code_version, request_hash
from serve_app.services.requests.backtest import BacktestRunRequest
from serve_app.services.requests.simulation import ASYNC_ABOVE, MIN_SOURCE, SimulateRequest
from serve_app.settings import Settings
from storage.engine import transaction
from storage.errors import ConfigurationError, InsufficientDataError, NotFoundError
from storage.intervals import periods_per_year
from storage.runs import RunRepository

log = logging.getLogger(__name__)
_VOL_NAMES = {"low": 0, "normal": 1, "high": 2}


@dataclass
class Source:
    """The returns a simulation resamples, and where they came from."""

    returns: np.ndarray
    periods_per_year: float
    origin: dict[str, Any]
    fingerprint: str | None = None
    turnover: float | None = None  # mean |change of position| per bar (backtests)
    exposure: float | None = None  # mean |position| (backtests)
    coin: str | None = None
    interval: str | None = None
    strategy: str | None = None


@dataclass
class Prepared:
    job: Any  # compute.simulation.paths.Job
    used: dict[str, Any]
    prepare_s: float
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- the source
def _checked_returns(values: Any, what: str) -> np.ndarray:
    r = np.asarray(values, dtype=np.float64)
    if r.size < MIN_SOURCE:
        raise InsufficientDataError(
            f"{what}: at least {MIN_SOURCE} returns are needed to simulate, got {r.size}"
        )
    bad = np.flatnonzero(~np.isfinite(r) | (r <= -1))
    if bad.size:
        raise ConfigurationError(
            f"{what}: returns must be finite and > -1; position {int(bad[0])} is {r[bad[0]]!r}",
            code="invalid_returns",
        )
    return r


def _from_backtest(
    sessions: sessionmaker[Session], settings: Settings, bt: Any, origin: dict[str, Any]
) -> Source:
    """A backtest's returns (any strategy of the union: name, plugin, spec; a user strategy
    is checked for look-ahead first, as ``POST /backtest/run`` does)."""
    from serve_app.services import backtest as bts
    from serve_app.services import inputs
    from serve_app.services.strategy import check, frame_of

    resolved, params, required = bts.resolved_params(settings, bt)
    with sessions() as session:
        window = inputs.check_window(session, settings, bt)
        inputs.checked_count(session, window, required, resolved.label)
        data = inputs.load_series(session, window, with_funding=bt.funding)
    config = bts.engine_config(bt, window.interval)
    target = None if resolved.builtin else resolved.positions(frame_of(data), params)
    checks = check(resolved, frame_of(data), params, bt.lookahead, full=target)
    result = bts.run_engine(data, resolved.engine_strategy, params, config, target=target)
    returns = np.asarray(result.equity["returns"], dtype=np.float64)[1:]
    position = np.asarray(result.equity["position"], dtype=np.float64)
    extra = {"provenance": resolved.provenance} if not resolved.builtin else {}
    if checks is not None:
        extra["checks"] = checks
    return Source(
        returns=_checked_returns(returns, "the backtest's returns"),
        periods_per_year=periods_per_year(window.interval),
        origin={
            **origin,
            "strategy": resolved.label,
            "params": params,
            "coin": window.coin,
            "interval": window.interval,
            "data": data.used(),
            **extra,
        },
        fingerprint=data.fingerprint,
        turnover=float(np.mean(np.abs(np.diff(position)))) if position.size > 1 else 0.0,
        exposure=float(np.mean(np.abs(position))),
        coin=window.coin,
        interval=window.interval,
        strategy=resolved.label,
    )


def _from_portfolio(sessions: sessionmaker[Session], settings: Settings, rec: Any) -> Source:
    """A recorded portfolio run's equity returns, re-run from its request (bit-identical)."""
    from serve_app.services import portfolio

    out = portfolio.returns_of_run(sessions, settings, rec)
    return Source(
        returns=_checked_returns(out["returns"], f"portfolio run {rec.id}'s returns"),
        periods_per_year=out["periods_per_year"],
        origin={"kind": "run", "run_id": rec.id, "run_kind": "portfolio", **out["origin"]},
        fingerprint=out["fingerprint"],
        turnover=out["turnover"],
        exposure=out["exposure"],
        interval=out["interval"],
        strategy=out["strategy"],
    )


def resolve_source(
    sessions: sessionmaker[Session], settings: Settings, req: SimulateRequest
) -> Source:
    """The returns of the request's one source (422/404 with what to fix)."""
    if req.returns is not None:
        r = _checked_returns(req.returns, "returns")
        return Source(r, req.periods_per_year or 365.0, {"kind": "returns", "length": r.size})
    if req.backtest is not None:
        src = _from_backtest(sessions, settings, req.backtest, {"kind": "backtest"})
    else:
        with sessions() as session:
            rec = RunRepository(session).get(str(req.run_id), payload=False)
        if rec is None:
            raise NotFoundError(
                f"no run {req.run_id!r} in the registry; GET /backtest/runs lists them",
                code="run_not_found",
            )
        if rec.kind not in ("backtest", "portfolio") or rec.status != "succeeded":
            raise ConfigurationError(
                f"run {req.run_id} is a {rec.status} {rec.kind}; give a succeeded backtest or "
                "portfolio run",
                code="unusable_run",
            )
        if rec.kind == "portfolio":
            src = _from_portfolio(sessions, settings, rec)
        else:
            bt = BacktestRunRequest.model_validate(rec.request)
            src = _from_backtest(sessions, settings, bt, {"kind": "run", "run_id": rec.id})
    if req.periods_per_year:
        src.periods_per_year = req.periods_per_year
    return src


# ------------------------------------------------------------------------------- labels
def regime_labels(returns: np.ndarray, ppy: float) -> tuple[dict[str, Any], np.ndarray]:
    """Realized vol, vol regime and trend regime of the source (the analytics definitions on
    the price path ``cumprod(1 + r)``); returns the summary and the vol label per return."""
    from compute.core.labels import TrendRegime, VolRegime
    from compute.indicators import regimes

    close = np.concatenate([[1.0], np.cumprod(1.0 + returns)])
    vol = regimes.vol_regime(close)[1:]
    rv = regimes.realized_vol(close, 20, ppy)[1:]
    _, trend = regimes.trend(close, close, close)
    trend = trend[1:]

    def counts(codes: np.ndarray, enum: Any) -> dict[str, int]:
        return {m.name.lower(): int(np.sum(codes == m.value)) for m in enum}

    last_rv = float(rv[-1]) if np.isfinite(rv[-1]) else None
    return {
        "realized_vol_20": last_rv,
        "vol_regime": VolRegime(int(vol[-1])).name.lower(),
        "trend_regime": TrendRegime(int(trend[-1])).name.lower(),
        "vol_regime_counts": counts(vol, VolRegime),
        "trend_regime_counts": counts(trend, TrendRegime),
        "definitions": "vol_regime(n=20, lookback=250), trend(n=20, atr_n=14, slope=5, "
        "threshold=0.1) on the price path cumprod(1 + r); docs/indicators.md",
    }, vol


# ---------------------------------------------------------------------------- the job
def _shock_spec(req: SimulateRequest, src: Source) -> Any:
    from compute.simulation.shocks import ShockSpec

    s = req.shocks
    turnover = (
        s.turnover
        if s.turnover is not None
        else (src.turnover if src.turnover is not None else 1.0)
    )
    exposure = (
        s.exposure
        if s.exposure is not None
        else (src.exposure if src.exposure is not None else 1.0)
    )
    return ShockSpec(
        leverage=s.leverage,
        maintenance_margin=s.maintenance_margin,
        liquidation_penalty=s.liquidation_penalty,
        gap_size=s.gap_size,
        gap_prob=s.gap_prob,
        gap_at=tuple(s.gap_at),
        spike_mult=s.spike_mult,
        spike_len=s.spike_len,
        spike_prob=s.spike_prob,
        spike_at=tuple(s.spike_at),
        funding_rate=s.funding_rate,
        funding_len=s.funding_len,
        funding_prob=s.funding_prob,
        funding_at=tuple(s.funding_at),
        exposure=exposure,
        cost_per_turnover=s.cost_per_turnover,
        turnover=turnover,
        stress=tuple((int(a), int(b)) for a, b in s.stress_windows),
    )


def _bootstrap(
    req: SimulateRequest, src: Source, vol: np.ndarray
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    from compute.simulation import bootstrap

    b = req.bootstrap
    r = src.returns
    auto = bootstrap.politis_white(r)
    chosen = b.block_length or (auto[0] if b.kind == "stationary" else auto[1])
    block = float(max(1.0, chosen)) if b.kind == "stationary" else float(max(1, round(chosen)))
    weights, regime_used = None, None
    if b.regime_weighting != "none":
        if b.regime_weighting == "current":
            if vol[-1] < 0:
                raise InsufficientDataError(
                    "the current volatility regime is "
                    "undefined (needs 271 returns); use regime_weighting=none",
                )
            mix = {int(vol[-1]): 1.0}
        else:
            if not b.regime_mix:
                raise ConfigurationError(
                    "regime_weighting=mix needs regime_mix", code="invalid_request"
                )
            mix = {_VOL_NAMES[k]: v for k, v in b.regime_mix.items()}
        weights = bootstrap.regime_weights(vol, mix)
        names = {v: k for k, v in _VOL_NAMES.items()}
        regime_used = {
            "mode": b.regime_weighting,
            "mix": {names[k]: v for k, v in mix.items()},
            "labels": "volatility regime of the block's first bar",
        }
    scale, sigma_now = None, None
    if b.vol_scaling:
        sigma_now = b.sigma_now or bootstrap.rms(r[-b.now_window :])
        scale = bootstrap.block_scales(r, round(block), sigma_now)
    params = bootstrap.make_params(r, block, scale=scale, weights=weights)
    layout_kw = {"kind": b.kind, "weighted": weights is not None, "scaled": scale is not None}
    used = {
        "kind": b.kind,
        "block_length": block,
        "block_length_auto": {"stationary": auto[0], "circular": auto[1]},
        "block_length_given": b.block_length is not None,
        "regime_weighting": regime_used,
        "vol_scaling": None
        if sigma_now is None
        else {
            "sigma_now": sigma_now,
            "sigma_block": f"RMS of {round(block)} bars from the block start",
            "floor": "0.1 x RMS of the whole series",
        },
    }
    return params, used, layout_kw


def _regime(req: SimulateRequest, src: Source) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    from compute.simulation import hmm
    from compute.simulation import markov as regime_gen

    spec = req.regime
    fit = hmm.fit(
        src.returns,
        spec.n_states,
        emission=spec.emission,
        restarts=spec.restarts,
        seed=req.seed % 2**32,
    )
    student = spec.emission == "student_t"
    df = fit.df if student else spec.tail_df
    params = regime_gen.make_params(
        fit.mu,
        fit.sigma,
        fit.trans,
        fit.last_probs,
        df=df,
        alpha=spec.garch_alpha,
        beta=spec.garch_beta,
    )
    if student:  # fitted sigma is the t scale: the generator wants the regime's std
        params = params._replace(sigma=fit.volatility)
    used = {
        "model": fit.describe(),
        "innovations": "normal" if df is None else {"student_t_df": np.asarray(df).tolist()},
        "garch": {"alpha": spec.garch_alpha, "beta": spec.garch_beta},
        "start": "filtered regime probabilities at the last source bar",
    }
    return params, used, {"gaussian": df is None}


def prepare(sessions: sessionmaker[Session], settings: Settings, req: SimulateRequest) -> Prepared:
    """Everything up to the paths: source, labels, generator, shocks, layout (no tasks)."""
    from compute.simulation import paths as simulate
    from compute.simulation import prng

    t0 = time.perf_counter()
    src = resolve_source(sessions, settings, req)
    try:
        labels, vol = regime_labels(src.returns, src.periods_per_year)
        spec = _shock_spec(req, src)
        sparams = spec.params(req.horizon)
        if req.generator == "bootstrap":
            gparams, gen_used, kw = _bootstrap(req, src, vol)
            name = "bootstrap"
        else:
            gparams, gen_used, kw = _regime(req, src)
            name = "regime"
    except ComputeError as exc:
        raise ConfigurationError(f"{exc}; fix that field", code="invalid_simulation") from None
    layout = simulate.Layout(
        name,
        req.horizon,
        simulate.chunk_size(req.paths),
        simulate.fan_spacing(req.horizon, req.fan_points),
        shocks=spec.flags(),
        **kw,
    )
    job = simulate.Job(layout, gparams, sparams, req.ruin_threshold, req.seed, req.paths)
    used = {
        "source": {
            **src.origin,
            "returns": int(src.returns.size),
            "periods_per_year": src.periods_per_year,
            "labels": labels,
        },
        "generator": req.generator,
        req.generator: gen_used,
        "shocks": spec.describe(),
        "seed": req.seed,
        "paths": req.paths,
        "horizon": req.horizon,
        "ruin_threshold": req.ruin_threshold,
        "prng": {
            **prng.DESCRIPTION,
            "why": "counter-based: cheap on CPU (threefry ~20x "
            "slower), reproducible per chunk on any worker",
        },
        "chunking": {
            "chunk_paths": layout.chunk,
            "chunks": job.n_chunks,
            "rule": "power of two in [1024, 8192] from the path count only",
        },
        "bands": "per-step fixed histograms of log-equity merged exactly across chunks",
        "code_version": code_version(),
    }
    return Prepared(
        job,
        used,
        time.perf_counter() - t0,
        {
            "coin": src.coin,
            "interval": src.interval,
            "strategy": src.strategy,
            "fingerprint": src.fingerprint,
        },
    )


# ------------------------------------------------------------------------------ running
def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "paths": result["paths"],
        "var_99": result["horizon_return"]["var_99"],
        "es_99": result["horizon_return"]["es_99"],
        "max_drawdown_p50": result["max_drawdown"]["p50"],
        "max_drawdown_p95": result["max_drawdown"]["p5"],
        "ruin_probability": result["ruin_probability"],
        "liquidation_probability": result["liquidation_probability"],
        "terminal_return_mean": result["terminal_return"]["mean"],
    }


def start(
    sessions: sessionmaker[Session], req: SimulateRequest, prep: Prepared, *, status: str
) -> str:
    """Record the simulation run (``running`` here, or ``queued`` for a worker); its id."""
    now = int(time.time())
    with transaction(sessions) as session:
        return RunRepository(session).add(
            "simulation",
            req.model_dump(mode="json"),
            request_hash=request_hash(req),
            code_version=code_version(),
            status=status,
            created_at=now,
            started_at=now if status == "running" else None,
            heartbeat_at=now,
            seed=req.seed,
            coin=prep.extra["coin"],
            interval=prep.extra["interval"],
            strategy=prep.extra["strategy"],
            data_fingerprint=prep.extra["fingerprint"],
            progress={"done": 0, "total": req.paths, "unit": "paths"},
        )


def execute(
    sessions: sessionmaker[Session],
    run_id: str,
    req: SimulateRequest,
    prep: Prepared,
    ctx: RunContext,
    *,
    use_ray: bool | None = None,
) -> dict[str, Any]:
    """Run the paths, record the outcome; returns the response body."""
    from compute.simulation import paths as simulate
    from serve_app.execution import chunks

    t0 = time.perf_counter()
    try:
        acc, how = chunks.run(prep.job, tasks=req.tasks, use_ray=use_ray, ctx=ctx)
        t1 = time.perf_counter()
        result = simulate.finalize(acc, prep.job.layout)
    except BaseException as exc:
        cancelled = isinstance(exc, RunCancelledError)
        with transaction(sessions) as session:
            fields: dict[str, Any] = {
                "status": "cancelled" if cancelled else "failed",
                "error": "cancelled on request" if cancelled else f"{exc}"[:2000],
                "finished_at": int(time.time()),
            }
            if ctx.current is not None:  # keep how far it got (else the last beat's value)
                fields["progress"] = ctx.current
            RunRepository(session).update(run_id, **fields)
        raise
    timings = {
        "prepare_s": prep.prepare_s,
        "paths_s": t1 - t0,
        "reduce_s": time.perf_counter() - t1,
        "path_steps_per_s": req.paths * req.horizon / max(t1 - t0, 1e-9),
    }
    progress = {"done": req.paths, "total": req.paths, "unit": "paths"}
    body = {
        "run_id": run_id,
        "status": "succeeded",
        "progress": progress,
        "result": result,
        "used": prep.used,
        "timings": timings,
        "execution": how,
    }
    with transaction(sessions) as session:
        RunRepository(session).update(
            run_id,
            status="succeeded",
            summary=_summary(result),
            results={"result": result, "used": prep.used, "timings": timings, "execution": how},
            progress=progress,
            duration_s=prep.prepare_s + time.perf_counter() - t0,
            finished_at=int(time.time()),
        )
    return body


def is_async(req: SimulateRequest) -> bool:
    return req.mode == "async" or (req.mode == "auto" and req.paths * req.horizon > ASYNC_ABOVE)


DRIVER = "serve_app.services.simulation:drive"


def submit(
    sessions: sessionmaker[Session], settings: Settings, req: SimulateRequest
) -> tuple[int, dict[str, Any]]:
    """``(status code, body)``: 200 with the result, or 202 with the run id to poll."""
    prep = prepare(sessions, settings, req)
    if not is_async(req):
        run_id = start(sessions, req, prep, status="running")
        with RunContext(
            sessions, run_id, heartbeat_s=settings.run_heartbeat_s, unit="paths"
        ) as ctx:
            return 200, execute(sessions, run_id, req, prep, ctx)
    from serve_app.execution.submit import ensure_capacity, launch

    ensure_capacity(sessions, settings.max_active_runs)
    run_id = start(sessions, req, prep, status="queued")
    where = launch(DRIVER, settings.model_dump(mode="json"), run_id, req, prep)
    return 202, {
        "run_id": run_id,
        "status": "queued",
        "progress": {"done": 0, "total": req.paths, "unit": "paths"},
        "poll": f"/risk/simulations/{run_id}",
        "used": prep.used,
        "execution": {"where": where},
    }


def drive(
    settings_values: dict[str, Any], run_id: str, req: SimulateRequest, prep: Prepared
) -> None:
    """Execute a queued simulation (on a warm worker; see serve_app.execution.submit)."""
    from serve_app.execution.submit import claimed, sessions_for

    settings = Settings(**settings_values)
    sessions = sessions_for(settings.database_url)
    if not claimed(sessions, run_id):
        return
    with RunContext(sessions, run_id, heartbeat_s=settings.run_heartbeat_s, unit="paths") as ctx:
        try:
            execute(sessions, run_id, req, prep, ctx)
        except Exception as exc:  # recorded on the run by execute(); nobody waits here
            log.info("simulation %s ended: %s", run_id, exc)


def status(sessions: sessionmaker[Session], run_id: str) -> dict[str, Any]:
    """The body of ``GET /risk/simulations/{id}``: progress, and the result once done."""
    with sessions() as session:
        rec = RunRepository(session).get(run_id)
    if rec is None or rec.kind != "simulation":
        raise NotFoundError(
            f"no simulation run {run_id!r}; POST /risk/simulate starts one",
            code="simulation_not_found",
        )
    body: dict[str, Any] = {"run_id": rec.id, "status": rec.status, "progress": rec.progress}
    if rec.status == "succeeded" and rec.results:
        body.update(rec.results)
    if rec.status in ("failed", "cancelled"):
        body["error"] = rec.error
    return body
