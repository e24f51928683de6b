"""The portfolio backtest use case: several coins, a momentum rule or a strategy per coin, a
rebalancing schedule, recorded as a run of kind ``portfolio``.

Order, as for one coin: everything checkable without data first (interval, times, coins,
per-coin strategies and parameters, costs), then each coin's candles are *counted* (caps,
warm-ups: ``insufficient_data`` names the coin), then read with their funding
(``services/inputs.py``), aligned on the union or the intersection of their timestamps without
inventing a bar (``compute.backtest.portfolio.align``), the per-coin user strategies checked
for look-ahead on their coin's bars, and ``compute.backtest.portfolio.run_portfolio`` run in
this process (one ``lax.scan``; a daily portfolio of years of bars takes milliseconds).

The regime stats split the portfolio's returns by the vol / trend labels of one coin
(``regimes_of``, default the first), computed on that coin's own bars and carried over the
bars it lacks. :func:`returns_of_run` re-runs a recorded portfolio for ``POST /risk/simulate``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from compute.core.errors import ComputeError
from serve_app.execution.compiles import call_counted
from serve_app.services.backtest import MIN_TRADE_BARS
from serve_app.services.inputs import (
    MAX_BACKTEST_BARS,
    SeriesData,
    Window,
    check_interval,
    count_candles,
    insufficient,
    load_series,
    parse_range,
    resolve_coin,
    too_many_bars,
)
from serve_app.services.provenance import code_version, request_hash
from serve_app.services.requests.portfolio import PortfolioRequest
from serve_app.services.results import plain, thin_indices
from serve_app.services.runs import fail_run, start_run
from serve_app.services.strategy import Resolved, check, resolve
from serve_app.settings import Settings
from storage.engine import transaction
from storage.errors import ConfigurationError, DataIntegrityError, InsufficientDataError
from storage.intervals import periods_per_year
from storage.runs import RunRepository

MAX_CELLS = 20_000_000  # coins x aligned bars of one portfolio
EQUITY_KEYS = ("ts", "equity", "returns", "drawdown", "gross", "net", "turnover")
STORE_POINTS = 100_000


@dataclass
class Leg:
    """One coin of a portfolio: its window, data and (per-coin mode) strategy."""

    coin: str
    window: Window
    resolved: Resolved | None = None
    params: dict[str, Any] = field(default_factory=dict)
    required: int = 2
    data: SeriesData | None = None


@dataclass
class Prepared:
    """A checked portfolio with its data read and aligned: everything but the run."""

    req: PortfolioRequest
    interval: str
    legs: list[Leg]
    aligned: Any  # compute.backtest.portfolio.Aligned
    config: Any  # PortfolioConfig
    schedule: Any  # Schedule
    regimes_of: str

    @property
    def label(self) -> str:
        return "momentum" if self.req.strategy.momentum is not None else "per_coin"

    @property
    def fingerprint(self) -> str:
        joined = "|".join(f"{g.coin}:{g.data.fingerprint}" for g in self.legs if g.data)
        return "p-" + hashlib.sha256(joined.encode()).hexdigest()[:40]


# --------------------------------------------------------------------------------- checks
def _bps(value: float | dict[str, float], coins: list[str], name: str) -> Any:
    if not isinstance(value, dict):
        return float(value)
    out = {k.strip().upper(): float(v) for k, v in value.items()}
    unknown = sorted(set(out) - set(coins))
    if unknown:
        raise ConfigurationError(
            f"{name}: coin(s) {unknown} are not in the portfolio ({', '.join(coins)})",
            code="invalid_costs",
            parameter=name,
        )
    return out


def _legs(session: Session, settings: Settings, req: PortfolioRequest) -> list[Leg]:
    """Coins resolved (each once), with their windows and per-coin strategies."""
    start, end = parse_range(
        None if req.start is None else str(req.start), None if req.end is None else str(req.end)
    )
    interval = check_interval(req.interval)
    coins = [resolve_coin(session, settings, c) for c in req.coins]
    twice = sorted({c for c in coins if coins.count(c) > 1})
    if twice:
        raise ConfigurationError(
            f"coin(s) {twice} appear twice; give each coin once",
            code="duplicate_coin",
            parameter="coins",
        )
    legs = [Leg(c, Window(c, interval, start, end)) for c in coins]
    per_coin = req.strategy.per_coin
    if per_coin is not None:
        given = {k.strip().upper(): v for k, v in per_coin.items()}
        if set(given) != set(coins):
            raise ConfigurationError(
                f"per_coin names {sorted(given)}; every coin of the portfolio needs one "
                f"strategy: {coins}",
                code="invalid_strategy",
                parameter="strategy.per_coin",
            )
        for leg in legs:
            resolved, params = resolve(settings, given[leg.coin])
            leg.resolved, leg.params = resolved, resolved.validate(params)
            leg.required = resolved.required_bars(leg.params)
    else:
        assert req.strategy.momentum is not None
        check_momentum(req.strategy.momentum, len(coins))
    return legs


def check_momentum(rule: Any, coins: int) -> None:
    """top_k + short_k must fit the portfolio's coins."""
    top = rule.top_k + rule.short_k
    if top > coins:
        raise ConfigurationError(
            f"top_k + short_k = {top} exceeds the {coins} coins of the portfolio",
            code="invalid_parameter",
            parameter="strategy.momentum",
        )


def _config(req: PortfolioRequest, coins: list[str], interval: str) -> tuple[Any, Any]:
    from compute.backtest.portfolio import PortfolioConfig, Schedule

    try:
        config = PortfolioConfig(
            fee_bps=_bps(req.fee_bps, coins, "fee_bps"),
            slippage_bps=_bps(req.slippage_bps, coins, "slippage_bps"),
            max_gross=req.max_gross,
            resize=req.resize,
            periods_per_year=periods_per_year(interval),
        )
        config.rates(coins)
        return config, Schedule(req.rebalance.kind, req.rebalance.every)
    except ComputeError as exc:
        raise ConfigurationError(f"{exc}; fix that field", code="invalid_costs") from None


def _need_bars(prep_legs: list[Leg], aligned: Any, req: PortfolioRequest, interval: str) -> None:
    """The aligned bars hold every warm-up: the momentum lookback + 2 on the timeline, each
    per-coin strategy's warm-up + 2 on its coin's bars (``insufficient_data`` otherwise)."""
    length = int(aligned.ts.shape[0])
    if req.strategy.momentum is not None:
        need = req.strategy.momentum.lookback + MIN_TRADE_BARS
        if length < need:
            raise InsufficientDataError(
                f"momentum over {req.strategy.momentum.lookback} bars needs {need} aligned "
                f"{interval} bars ({req.align} of the coins' timestamps), the window holds "
                f"{length}; widen the window or shorten the lookback",
                parameter="start",
                required_candles=need,
                received_candles=length,
            )
    for i, leg in enumerate(prep_legs):
        have = int(aligned.present[i].sum())
        if have < leg.required:
            raise InsufficientDataError(
                f"{leg.coin}: {leg.resolved.label if leg.resolved else 'the portfolio'} needs "
                f"{leg.required} {interval} bars of {leg.coin} on the {req.align} timeline, "
                f"it has {have}; widen the window",
                parameter="start",
                coin=leg.coin,
                required_candles=leg.required,
                received_candles=have,
            )


def prepare(sessions: sessionmaker[Session], settings: Settings, req: PortfolioRequest) -> Prepared:
    """Check, count, read and align (see the module docstring)."""
    from compute.backtest.portfolio import align

    with sessions() as session:
        legs = _legs(session, settings, req)
        coins = [g.coin for g in legs]
        regimes_of = (req.regimes_of or coins[0]).strip().upper()
        if regimes_of not in coins:
            raise ConfigurationError(
                f"regimes_of {req.regimes_of!r} is not a coin of the portfolio ({coins})",
                code="invalid_parameter",
                parameter="regimes_of",
            )
        config, schedule = _config(req, coins, legs[0].window.interval)
        total = 0
        for leg in legs:
            n = count_candles(session, leg.window)
            if n > MAX_BACKTEST_BARS:
                raise too_many_bars(leg.window, n)
            if n < leg.required:
                what = f"{leg.coin} in the portfolio"
                raise insufficient(session, leg.window, leg.required, n, what)
            total = max(total, n)
        if total * len(legs) > MAX_CELLS:
            raise ConfigurationError(
                f"{len(legs)} coins x up to {total} bars exceed the cap of {MAX_CELLS:,} cells; "
                "narrow the window or use fewer coins",
                code="too_many_bars",
                parameter="start",
                cap=MAX_CELLS,
            )
        for leg in legs:
            leg.data = load_series(session, leg.window, with_funding=req.funding)
    try:
        aligned = align({g.coin: _candles(g.data) for g in legs if g.data}, req.align)
    except ComputeError as exc:
        raise DataIntegrityError(f"the stored candles cannot be aligned: {exc}") from None
    interval = legs[0].window.interval
    _need_bars(legs, aligned, req, interval)
    return Prepared(req, interval, legs, aligned, config, schedule, regimes_of)


def _candles(data: SeriesData) -> dict[str, np.ndarray]:
    out = data.candles()
    if np.isfinite(data.volume).all():
        out["volume"] = data.volume
    return out


# ------------------------------------------------------------------------------- the run
def on_timeline(aligned: Any, ts: np.ndarray, values: np.ndarray, fill: float) -> np.ndarray:
    """A coin's per-bar values placed on the aligned timeline (``fill`` where it has none)."""
    out = np.full(aligned.ts.shape[0], fill, dtype=np.float64)
    at = np.searchsorted(aligned.ts, ts)
    inside = (at < out.shape[0]) & (aligned.ts[np.minimum(at, out.shape[0] - 1)] == ts)
    out[at[inside]] = values[inside]
    return out


def _regimes(prep: Prepared) -> dict[str, np.ndarray]:
    """The regimes_of coin's vol and trend labels on the timeline, carried over its gaps."""
    from compute.indicators import regimes

    leg = next(g for g in prep.legs if g.coin == prep.regimes_of)
    assert leg.data is not None
    d = leg.data
    out = {}
    for kind, labels in (("vol", regimes.vol_regime(d.close)),
                         ("trend", regimes.trend(d.high, d.low, d.close)[1])):  # fmt: skip
        row = on_timeline(prep.aligned, d.ts, np.asarray(labels, np.float64), np.nan)
        idx = np.maximum.accumulate(np.where(np.isnan(row), -1, np.arange(row.shape[0])))
        carried = np.where(idx >= 0, row[np.maximum(idx, 0)], -1.0)
        out[kind] = carried.astype(np.int8)
    return out


def targets_of(prep: Prepared, momentum: Any = None) -> tuple[np.ndarray, dict[str, Any] | None]:
    """``(N, T)`` targets (``momentum`` overrides the request's rule: walk-forward grids) and
    the per-coin checks (None for the momentum rule)."""
    from compute.backtest.portfolio import momentum_targets, strategy_targets

    req, aligned = prep.req, prep.aligned
    rule = momentum or req.strategy.momentum
    try:
        if rule is not None:
            return momentum_targets(aligned, rule.lookback, rule.top_k, short_k=rule.short_k), None
        positions, checks = [], {}
        for i, leg in enumerate(prep.legs):
            assert leg.resolved is not None
            frame = aligned.frame(i)
            pos = np.asarray(leg.resolved.positions(frame, leg.params), dtype=np.float64)
            result = check(leg.resolved, frame, leg.params, req.lookahead, full=pos)
            if result is not None:
                checks[leg.coin] = result
            positions.append(pos)
        return strategy_targets(aligned, positions), checks or None
    except ComputeError as exc:
        raise DataIntegrityError(f"the stored data cannot be used: {exc}") from None


def funding_of(prep: Prepared) -> np.ndarray | None:
    """``(N, T)`` funding rates per leg and bar (None when not applied)."""
    if not prep.req.funding:
        return None
    rows = []
    for leg in prep.legs:
        d = leg.data
        assert d is not None
        rate = d.funding if d.funding is not None else np.zeros(len(d))
        rows.append(on_timeline(prep.aligned, d.ts, rate, 0.0))
    return np.vstack(rows)


def simulate(prep: Prepared, targets: np.ndarray, *, window: Any = None,
             regimes: bool = True) -> Any:  # fmt: skip
    """``run_portfolio`` of ``targets`` (bad stored data is a DataIntegrityError)."""
    from compute.backtest.portfolio import run_portfolio

    try:
        return run_portfolio(
            prep.aligned, targets, prep.schedule, prep.config, funding_rate=funding_of(prep),
            regimes=_regimes(prep) if regimes else None, window=window,
        )  # fmt: skip
    except ComputeError as exc:
        raise DataIntegrityError(f"the stored data cannot be used: {exc}") from None


def stored_equity(equity: dict[str, Any]) -> dict[str, Any]:
    """The portfolio equity columns the registry keeps (thinned beyond ``STORE_POINTS``)."""
    n = len(equity["ts"])
    idx, stride = thin_indices(n, STORE_POINTS)
    out = {k: plain(np.asarray(equity[k])[idx]) for k in EQUITY_KEYS}
    return {**out, "stride": stride, "total_points": n}


def used_block(prep: Prepared, checks: dict[str, Any] | None) -> dict[str, Any]:
    """What a portfolio run used: enough to reproduce it."""
    req = prep.req
    rule: dict[str, Any]
    if req.strategy.momentum is not None:
        rule = {"momentum": req.strategy.momentum.model_dump()}
        provenance = None
    else:
        rule = {"per_coin": {g.coin: {"strategy": g.resolved.label if g.resolved else "?",
                                      "params": g.params, "warmup_bars": g.required - 2}
                             for g in prep.legs}}  # fmt: skip
        provenance = {g.coin: g.resolved.provenance for g in prep.legs if g.resolved}
    return {
        "coins": [g.coin for g in prep.legs],
        "interval": prep.interval,
        "align": req.align,
        "strategy": prep.label,
        "rule": rule,
        "rebalance": req.rebalance.model_dump(),
        "bars": int(prep.aligned.ts.shape[0]),
        "regimes_of": prep.regimes_of,
        "data": {g.coin: g.data.used() for g in prep.legs if g.data},
        "seed": req.seed,
        "code_version": code_version(),
        "request_hash": request_hash(req),
        "periods_per_year": periods_per_year(prep.interval),
        "provenance": provenance,
        "checks": checks,
    }


@dataclass
class Recorded:
    """A finished portfolio run as stored (and as the response is built from)."""

    run_id: str
    created_at: int
    duration_s: float
    used: dict[str, Any]
    metrics: dict[str, Any]
    equity: dict[str, Any]
    assets: list[dict[str, Any]]
    regime_stats: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


def run_portfolio(
    sessions: sessionmaker[Session],
    settings: Settings,
    req: PortfolioRequest,
    *,
    rerun_of: str | None = None,
) -> Recorded:
    """Validate, cap, load, align, check, run and record one portfolio backtest."""
    prep = prepare(sessions, settings, req)
    targets, checks = targets_of(prep)
    run_id, created = start_run(
        sessions,
        "portfolio",
        req,
        coin=prep.legs[0].coin if len(prep.legs) == 1 else None,
        interval=prep.interval,
        strategy=prep.label,
        seed=req.seed,
        rerun_of=rerun_of,
    )
    started = time.perf_counter()
    try:
        result, cost = call_counted(simulate, prep, targets)
    except BaseException as exc:
        fail_run(sessions, run_id, exc, started)
        raise
    duration = time.perf_counter() - started
    used = used_block(prep, checks)
    rec = Recorded(
        run_id, created, duration, used, plain(result.metrics), stored_equity(result.equity),
        plain(result.assets), plain(result.regime_stats),
        {"execution": {"where": "in-process", **cost,
                       "warm": cost["compiles"] + cost["cache_loads"] == 0}},
    )  # fmt: skip
    with transaction(sessions) as session:
        RunRepository(session).update(
            run_id,
            status="succeeded",
            data_fingerprint=prep.fingerprint,
            duration_s=duration,
            finished_at=int(time.time()),
            summary=rec.metrics,
            equity=rec.equity,
            results={"used": used, "assets": rec.assets, "regime_stats": rec.regime_stats},
            progress={"done": 1, "total": 1, "unit": "backtests"},
        )
    return rec


def returns_of_run(sessions: sessionmaker[Session], settings: Settings, rec: Any) -> dict[str, Any]:
    """A recorded portfolio's per-bar returns (bar 0 excluded), re-run from its request: the
    source of ``POST /risk/simulate`` with ``run_id``."""
    req = PortfolioRequest.model_validate(rec.request)
    prep = prepare(sessions, settings, req)
    targets, _ = targets_of(prep)
    result = simulate(prep, targets, regimes=False)
    eq = result.equity
    return {
        "returns": np.asarray(eq["returns"], np.float64)[1:],
        "periods_per_year": periods_per_year(prep.interval),
        "origin": {
            "strategy": prep.label,
            "coins": [g.coin for g in prep.legs],
            "interval": prep.interval,
            "bars": int(prep.aligned.ts.shape[0]),
        },
        "fingerprint": prep.fingerprint,
        "turnover": float(np.mean(eq["turnover"][1:])) if len(eq["ts"]) > 1 else 0.0,
        "exposure": float(np.mean(eq["gross"])),
        "interval": prep.interval,
        "strategy": prep.label,
    }
