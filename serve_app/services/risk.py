"""The risk use cases: a VaR/ES report of coins or of a run, and correlation matrices.

Aligned returns come from the candle store (or a run's equity from the registry), caps are
checked before any read, and per-coin / per-window work is spread over the warm workers when
it is large (in-process otherwise, with the same results): the returns matrix is ``ray.put``
once (``serve_app.execution.fanout``) and items are groups of coins or of window ends sized so
that a call does ~``TASK_CELLS`` of work (>= ~100 ms). Small requests never leave the
process: a round trip costs more than it saves. Methods are named in every answer;
definitions are in ``docs/risk.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from compute.core.errors import ComputeError
from compute.risk import correlation as corr
from compute.risk import var as risk
from serve_app.execution.fanout import fan_out, ray_running
from serve_app.services.inputs import check_interval, parse_range, read_columns, resolve_coin
from serve_app.services.requests.risk import MAX_COINS, MAX_ROWS_PER_COIN, RiskReportRequest
from serve_app.settings import Settings
from serve_app.timefmt import iso
from storage.candles import CandleRepository
from storage.errors import (
    ConfigurationError,
    InsufficientDataError,
    LimitExceededError,
    NotFoundError,
)
from storage.intervals import interval_seconds, periods_per_year
from storage.series import SeriesRepository

MAX_CELLS = 5_000_000  # coins x candles read by one request
MAX_ROLLING_CELLS = 50_000_000  # window values a rolling computation touches
MAX_ROLLING_MATRICES = 1_000
TASK_CELLS = 2_000_000  # work per Ray task (~100-300 ms of kernels)
FANOUT_MIN_CELLS = 4_000_000  # below this everything runs in-process
MIN_RETURNS = 10
MAX_READ = MAX_ROWS_PER_COIN + 1  # candles one coin's read may return (the cap is checked first)


@dataclass(frozen=True)
class Series:
    """What a report is computed on: aligned returns (K, T), their labels and provenance."""

    labels: tuple[str, ...]
    ts: np.ndarray
    returns: np.ndarray
    periods_per_year: float
    source: dict[str, Any]
    position: np.ndarray | None = None


# ---------------------------------------------------------------------------------- caps
def check_size(coins: int, rows: int) -> None:
    """Cap coins, rows per coin and coins x rows before anything is read."""
    if coins > MAX_COINS:
        raise LimitExceededError(
            f"at most {MAX_COINS} coins per request, got {coins}",
            code="too_many_coins",
            max_coins=MAX_COINS,
        )
    if rows > MAX_ROWS_PER_COIN or coins * rows > MAX_CELLS:
        raise LimitExceededError(
            f"{coins} coins x {rows} candles = {coins * rows} values is above the cap "
            f"({MAX_ROWS_PER_COIN} candles per coin, {MAX_CELLS} in all); narrow start/end, "
            "lower window, or ask for fewer coins",
            code="request_too_large",
            max_cells=MAX_CELLS,
            max_rows_per_coin=MAX_ROWS_PER_COIN,
        )


def planned_rows(
    session: Session,
    coins: list[str],
    interval: str,
    start: int | None,
    end: int | None,
    window: int,
) -> int:
    """Candles per coin the request will read (from the range, else ``window + 1``)."""
    if start is None:
        return window + 1
    step = interval_seconds(interval)
    if end is None:
        repo = CandleRepository(session)
        latest = [t for c in coins if (t := repo.latest_ts(c, interval)) is not None]
        end = max(latest) if latest else start
    return max(0, (end - start) // step + 1)


# ---------------------------------------------------------------------------- loading
def load_returns(
    session: Session,
    coins: list[str],
    interval: str,
    *,
    start: int | None,
    end: int | None,
    window: int,
) -> corr.AlignedReturns:
    """Close-to-close one-bar returns of ``coins`` inner-joined on their timestamps: with
    ``start``, every bar in ``[start, end]``; without, the latest ``window + 1`` bars of each
    coin up to ``end``. Caps are checked first."""
    check_size(len(coins), planned_rows(session, coins, interval, start, end, window))
    closes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for coin in coins:
        if start is None:
            c = read_columns(session, coin, interval, end=end, limit=window + 1, latest=True)
        else:
            c = read_columns(session, coin, interval, start=start, end=end, limit=MAX_READ)
        closes[coin] = (c.ts, c.close)
    return corr.align_returns(closes, interval_seconds(interval))


def require_returns(aligned: corr.AlignedReturns, needed: int, why: str) -> None:
    """InsufficientDataError (422 ``insufficient_data``) with counts when too few returns."""
    got = int(aligned.ts.size)
    if got >= needed:
        return
    raise InsufficientDataError(
        f"{why} needs at least {needed} aligned returns, found {got} "
        f"({aligned.dropped_timestamps} timestamps dropped because not every coin has them); "
        "widen the window or start/end, or choose coins with common history",
        details={
            "required_returns": needed,
            "received_returns": got,
            "candles_read": aligned.bars,
            "dropped_timestamps": aligned.dropped_timestamps,
            "gaps_skipped": aligned.gaps,
        },
    )


def coins_series(
    session: Session,
    coins: list[str],
    interval: str,
    *,
    start: int | None,
    end: int | None,
    window: int,
) -> tuple[Series, corr.AlignedReturns]:
    aligned = load_returns(session, coins, interval, start=start, end=end, window=window)
    owners = SeriesRepository(session)
    source = {
        "kind": "candles",
        "sources": {c: owners.source_of(c, interval) for c in coins},
        "candles_read": aligned.bars,
        "dropped_timestamps": aligned.dropped_timestamps,
        "dropped_per_coin": aligned.dropped,
        "gaps_skipped": aligned.gaps,
    }
    return (
        Series(tuple(coins), aligned.ts, aligned.returns, periods_per_year(interval), source),
        aligned,
    )


def run_series(session: Session, run_id: str) -> Series:
    """Returns and position of a registry run's stored equity curve (``storage.runs``)."""
    from storage.runs import RunRepository

    record = RunRepository(session).get(run_id)
    if record is None:
        raise NotFoundError(
            f"no run {run_id!r} in the registry", code="run_not_found", parameter="run_id"
        )
    equity = record.equity if isinstance(record.equity, dict) else None
    if not equity or not equity.get("equity"):
        raise ConfigurationError(
            f"run {run_id!r} ({record.kind}, {record.status}) has no equity curve; "
            "pass a succeeded backtest or walk-forward run, or coins",
            code="run_without_equity",
            parameter="run_id",
        )
    values = np.asarray([np.nan if v is None else v for v in equity["equity"]], np.float64)
    stride = int(equity.get("stride", 1) or 1)
    ppy = periods_per_year(record.interval or "1d") / stride
    returns = values[1:] / values[:-1] - 1.0
    ts = np.asarray(equity.get("ts", []), np.int64)[1:]
    position = equity.get("position")
    pos = None
    if position is not None:
        pos = np.asarray([0.0 if v is None else v for v in position], np.float64)
    source = {
        "kind": "run",
        "run_id": run_id,
        "run_kind": record.kind,
        "coin": record.coin,
        "interval": record.interval,
        "equity_points": int(values.size),
        "stride": stride,
        "note": "returns between consecutive stored equity points"
        + (f" ({stride} bars apart: the curve was thinned)" if stride > 1 else ""),
    }
    return Series((f"run:{run_id}",), ts, returns[None, :], ppy, source, pos)


# ------------------------------------------------------------------------------- fan-out
def _groups(n_items: int, cells_per_item: int) -> list[list[int]]:
    per = max(1, TASK_CELLS // max(cells_per_item, 1))
    return [list(range(i, min(i + per, n_items))) for i in range(0, n_items, per)]


def _spread(fn: Any, items: list[Any], shared: Any, cells: int) -> tuple[list[Any], dict]:
    use_ray = ray_running() and cells >= FANOUT_MIN_CELLS and len(items) > 1
    return fan_out(fn, items, shared, use_ray=use_ray)


# ----------------------------------------------------------------------------- reports
@dataclass(frozen=True)
class ReportParams:
    levels: tuple[float, ...]
    rolling_window: int
    rolling_level: float
    target_vol: float
    vol_lookback: int
    max_leverage: float
    periods_per_year: float


def _level_rows(levels: tuple[float, ...], var: dict, es: dict) -> list[dict[str, Any]]:
    return [
        {
            "level": lev,
            "var": {m: float(var[m][j]) for m in var},
            "es": {m: float(es[m][j]) for m in es},
        }
        for j, lev in enumerate(levels)
    ]


def _one_series(x: np.ndarray, p: ReportParams) -> dict[str, Any]:
    levels = list(p.levels)
    mom = risk.moments(x)
    var: dict[str, np.ndarray] = {}
    es: dict[str, np.ndarray] = {}
    var["historical"], es["historical"] = risk.historical_var_es(x, levels)
    for method in ("normal", "cornish_fisher"):
        var[method], es[method] = risk.parametric_var_es(x, levels, method=method, stats=mom)
    dd = risk.drawdown(x)
    vt = risk.vol_target(
        x,
        target_vol=p.target_vol,
        periods_per_year=p.periods_per_year,
        lookback=p.vol_lookback,
        max_leverage=p.max_leverage,
    )
    roll = risk.rolling_var_es(x, p.rolling_window, p.rolling_level)
    live = roll.var[~np.isnan(roll.var)]
    return {
        "n_returns": int(x.size),
        "mean": float(mom.mean),
        "std": float(mom.std),
        "vol_annualised": float(mom.std * math.sqrt(p.periods_per_year)),
        "skewness": float(mom.skew),
        "excess_kurtosis": float(mom.kurt),
        "levels": _level_rows(p.levels, var, es),
        "drawdown": {
            "max": dd.max,
            "peak_index": dd.peak,
            "trough_index": dd.trough,
            "recovery_index": dd.recovery,
            "duration_bars": dd.duration,
            "open": dd.is_open,
            "current": dd.current,
            "longest_under_water_bars": dd.longest_under_water,
        },
        "vol_target": {
            "target_vol": vt.target_vol,
            "max_leverage": vt.max_leverage,
            "lookback": vt.lookback,
            "next_scale": vt.next_scale,
            "static_scale": vt.static_scale,
            "realised_vol": vt.realised_vol,
            "scaled_vol": vt.scaled_vol,
            "capped_fraction": vt.capped_fraction,
        },
        "rolling": {
            "window": roll.window,
            "level": roll.level,
            "method": roll.method,
            "windows": int(live.size),
            "latest_var": float(live[-1]),
            "latest_es": float(roll.es[-1]),
            "min_var": float(live.min()),
            "max_var": float(live.max()),
            "mean_var": float(live.mean()),
            "breaches": roll.breaches,
            "tested": roll.tested,
            "breach_rate": roll.breach_rate,
            "expected_rate": 1.0 - roll.level,
            "kupiec_p_value": roll.kupiec_p_value(),
        },
    }


def _series_task(shared: tuple[np.ndarray, ReportParams], rows: list[int]) -> list[dict]:
    returns, params = shared
    return [_one_series(returns[i], params) for i in rows]


def series_reports(series: Series, params: ReportParams) -> tuple[list[dict], dict]:
    """One report per row of ``series.returns`` (coins fanned out as Ray tasks if large)."""
    k, n = series.returns.shape
    cells = n * (params.rolling_window + 8)
    groups = _groups(k, cells)
    parts, how = _spread(_series_task, groups, (series.returns, params), k * cells)
    return [r for part in parts for r in part], how


def portfolio_report(
    series: Series, weights: dict[str, float], levels: tuple[float, ...], shrinkage: str | None
) -> dict[str, Any]:
    w = np.array([weights.get(c, 0.0) for c in series.labels])
    cov = None
    intensity = None
    if shrinkage is not None:
        shrunk = corr.ledoit_wolf(series.returns, shrinkage)  # type: ignore[arg-type]
        n = series.returns.shape[1]
        cov, intensity = shrunk.cov * n / (n - 1), shrunk.shrinkage
    out = corr.portfolio_var_es(series.returns, w, list(levels), cov=cov)
    return {
        "weights": dict(zip(series.labels, w.tolist(), strict=True)),
        "levels": _level_rows(levels, out.var, out.es),
        "sigma": out.sigma,
        "covariance": "sample" if shrinkage is None else f"ledoit_wolf:{shrinkage}",
        "shrinkage_intensity": intensity,
        "contributions": [
            {
                "level": lev,
                "var": dict(zip(series.labels, out.var_contributions[j].tolist(), strict=True)),
                "es": dict(zip(series.labels, out.es_contributions[j].tolist(), strict=True)),
            }
            for j, lev in enumerate(levels)
        ],
    }


def _rolling_task(shared: tuple[np.ndarray, int, str], ends: list[int]) -> np.ndarray:
    returns, window, method = shared
    return corr.rolling_correlation(returns, window, method=method, ends=ends)[1]  # type: ignore[arg-type]


def rolling_matrices(
    returns: np.ndarray, window: int, step: int, method: str
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Correlation matrices of trailing windows every ``step`` bars (capped, fanned out)."""
    k, n = returns.shape
    ends = corr.window_ends(n, window, step)
    if ends.size > MAX_ROLLING_MATRICES or ends.size * window * k > MAX_ROLLING_CELLS:
        least = max(
            math.ceil(n / MAX_ROLLING_MATRICES),
            math.ceil(n * window * k / MAX_ROLLING_CELLS),
        )
        raise LimitExceededError(
            f"{ends.size} rolling windows of {window} is above the cap "
            f"({MAX_ROLLING_MATRICES} matrices, {MAX_ROLLING_CELLS} values); "
            f"raise rolling_step to at least {least} or shorten the range",
            code="too_many_windows",
            max_windows=MAX_ROLLING_MATRICES,
        )
    groups = _groups(int(ends.size), window * k)
    items = [ends[g].tolist() for g in groups]
    parts, how = _spread(_rolling_task, items, (returns, window, method), ends.size * window * k)
    mats = np.concatenate(parts) if parts else np.empty((0, k, k))
    return ends, mats, how


# ------------------------------------------------------------------------------ use cases
METHODS_NOTE = {
    "historical": "alpha-quantile of returns with linear interpolation (numpy 'linear'); "
    "ES = mean of returns at or below it",
    "normal": "mean + std * z_alpha (std ddof=1); ES = mean - std * phi(z_alpha) / alpha",
    "cornish_fisher": "Cornish-Fisher expansion with population skewness and excess "
    "kurtosis; ES = exact tail mean of the expanded normal",
}


def _span(ts: np.ndarray) -> dict[str, Any]:
    if ts.size == 0:
        return {"first_ts": None, "first_ts_unix": None, "last_ts": None, "last_ts_unix": None}
    return {
        "first_ts": iso(int(ts[0])),
        "first_ts_unix": int(ts[0]),
        "last_ts": iso(int(ts[-1])),
        "last_ts_unix": int(ts[-1]),
    }


def _coins(session: Session, settings: Settings, coins: list[str]) -> list[str]:
    names = [resolve_coin(session, settings, c) for c in coins]
    if len(set(names)) != len(names):
        raise ConfigurationError(
            f"coins repeat: {names}", code="duplicate_coins", parameter="coins"
        )
    return names


def _compute_error(exc: ComputeError) -> InsufficientDataError | ConfigurationError:
    if isinstance(exc, risk.InsufficientReturnsError):
        return InsufficientDataError(
            f"{exc}; widen the window or lower the rolling/lookback windows",
            details={"required_returns": exc.needed, "received_returns": exc.got},
        )
    return ConfigurationError(str(exc), code="invalid_parameter")


def report(session: Session, settings: Settings, body: RiskReportRequest) -> dict[str, Any]:
    """Per series (each coin, or the run) and for the weighted portfolio: VaR and ES at each
    level by three methods; moments; drawdown; causal vol targeting; rolling VaR with
    Kupiec's test."""
    try:
        if body.run_id is not None:
            series = run_series(session, body.run_id)
            interval = series.source.get("interval")
        else:
            interval = check_interval(body.interval)
            assert body.coins is not None
            coins = _coins(session, settings, body.coins)
            if body.weights is not None:
                unknown = sorted({c.upper() for c in body.weights} - set(coins))
                if unknown:
                    raise ConfigurationError(
                        f"weights name coins not requested: {unknown}; requested: {coins}",
                        code="invalid_weights",
                        parameter="weights",
                    )
            start, end = parse_range(body.start, body.end)
            series, aligned = coins_series(
                session, coins, interval, start=start, end=end, window=body.window
            )
            needed = max(MIN_RETURNS, body.vol_lookback + 1, (body.rolling_window or 3) + 1)
            require_returns(aligned, needed, "this report")
        n = series.returns.shape[1]
        if n < max(MIN_RETURNS, body.vol_lookback + 1):
            raise risk.InsufficientReturnsError(
                "this report", max(MIN_RETURNS, body.vol_lookback + 1), n
            )
        params = ReportParams(
            levels=tuple(body.levels),
            rolling_window=body.rolling_window or max(3, min(250, n // 2)),
            rolling_level=body.rolling_level,
            target_vol=body.target_vol,
            vol_lookback=body.vol_lookback,
            max_leverage=body.max_leverage,
            periods_per_year=series.periods_per_year,
        )
        reports, how = series_reports(series, params)
        out_series = [
            {"label": lab, **rep} for lab, rep in zip(series.labels, reports, strict=True)
        ]
        if series.position is not None:
            out_series[0]["exposure"] = risk.exposure(series.position)
        portfolio = None
        if body.weights is not None:
            weights = {c.upper(): v for c, v in body.weights.items()}
            portfolio = portfolio_report(series, weights, tuple(body.levels), body.shrinkage)
    except ComputeError as exc:
        raise _compute_error(exc) from None
    return {
        "interval": interval,
        "periods_per_year": series.periods_per_year,
        "n_returns": n,
        **_span(series.ts),
        "source": series.source,
        "methods": METHODS_NOTE,
        "levels": body.levels,
        "series": out_series,
        "portfolio": portfolio,
        "execution": how,
    }


@dataclass(frozen=True)
class CorrelationQuery:
    """What ``GET /risk/correlation`` (and ``squall risk correlation``) asks."""

    coins: str
    interval: str = "1d"
    window: int = 365
    start: str | None = None
    end: str | None = None
    method: str = "pearson"
    rolling_window: int | None = None
    rolling_step: int | None = None
    shrinkage: str | None = None


def correlation(session: Session, settings: Settings, q: CorrelationQuery) -> dict[str, Any]:
    """Correlation and covariance (ddof=1) of one-bar close-to-close returns on the timestamps
    every coin has, optionally Ledoit-Wolf shrunk and as rolling matrices."""
    names = [c for c in (p.strip() for p in q.coins.split(",")) if c]
    if not 2 <= len(names) <= MAX_COINS:
        raise ConfigurationError(
            f"give 2 to {MAX_COINS} comma-separated coins, got {len(names)}",
            code="invalid_coins",
            parameter="coins",
        )
    interval = check_interval(q.interval)
    start_s, end_s = parse_range(q.start, q.end)
    try:
        resolved = _coins(session, settings, names)
        aligned = load_returns(
            session, resolved, interval, start=start_s, end=end_s, window=q.window
        )
        needed = max(corr.MIN_CORRELATION, q.rolling_window or 0)
        require_returns(aligned, needed, "a correlation")
        x = aligned.returns
        matrix = corr.correlation(x, q.method)  # type: ignore[arg-type]
        cov = corr.covariance(x)
        shrunk = None
        if q.shrinkage is not None:
            lw = corr.ledoit_wolf(x, q.shrinkage)  # type: ignore[arg-type]
            shrunk = {
                "target": lw.target,
                "intensity": lw.shrinkage,
                "correlation": lw.corr,
                "covariance": lw.cov,
                "normalisation": "1/n (as in Ledoit-Wolf)",
            }
        rolling = None
        how: dict[str, Any] = {"ray": False, "where": "in-process"}
        if q.rolling_window is not None:
            step = q.rolling_step or q.rolling_window
            ends, mats, how = rolling_matrices(x, q.rolling_window, step, q.method)
            ts = aligned.ts[ends]
            rolling = {
                "window": q.rolling_window,
                "step": step,
                "count": int(ends.size),
                "end_ts": [iso(int(t)) for t in ts],
                "end_ts_unix": ts.tolist(),
                "matrices": mats,
            }
    except ComputeError as exc:
        raise _compute_error(exc) from None
    return {
        "coins": list(resolved),
        "interval": interval,
        "method": q.method,
        "n_returns": int(x.shape[1]),
        **_span(aligned.ts),
        "dropped_timestamps": aligned.dropped_timestamps,
        "dropped_per_coin": aligned.dropped,
        "gaps_skipped": aligned.gaps,
        "candles_read": aligned.bars,
        "labels": list(resolved),
        "matrix": matrix,
        "covariance": cov,
        "shrinkage": shrunk,
        "rolling": rolling,
        "execution": how,
    }
