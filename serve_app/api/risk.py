"""Risk routes: ``POST /risk/report`` (VaR/ES by three methods, drawdown, vol targeting,
rolling VaR, portfolio VaR/ES) and ``GET /risk/correlation`` (Pearson or Spearman, rolling,
Ledoit-Wolf shrinkage) on close-to-close returns aligned across coins.

Thin by design: validate and cap the request before any read (coins, rows, levels, windows),
load aligned returns (``serve_app.risk_service``), call ``compute``, map. Methods are named in
every answer; definitions are in ``docs/risk.md``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compute.core.errors import ComputeError
from compute.risk import correlation as corr
from compute.risk.var import InsufficientReturnsError
from serve_app import risk_service as svc
from serve_app.api.deps import SessionDep, SettingsDep
from serve_app.api.errors import ApiError
from serve_app.api.market import check_interval, parse_range, resolve_coin
from serve_app.api.models import ErrorBody
from serve_app.api.timefmt import iso

router = APIRouter(prefix="/risk", tags=["risk"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown coin or run id"},
    422: {
        "model": ErrorBody,
        "description": "invalid parameter, a cap exceeded (the message says what to lower), or "
        "insufficient_data (details: required and received returns, dropped timestamps)",
    },
    503: {"model": ErrorBody, "description": "the database is down or not migrated"},
}
METHODS_NOTE = {
    "historical": "alpha-quantile of returns with linear interpolation (numpy 'linear'); "
    "ES = mean of returns at or below it",
    "normal": "mean + std * z_alpha (std ddof=1); ES = mean - std * phi(z_alpha) / alpha",
    "cornish_fisher": "Cornish-Fisher expansion with population skewness and excess "
    "kurtosis; ES = exact tail mean of the expanded normal",
}
Shrinkage = Literal["constant_correlation", "identity"]


class RiskReportRequest(BaseModel):
    """What to report on: ``coins`` (aligned on common timestamps) or one ``run_id``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "coins": ["BTC", "ETH"],
                    "interval": "1d",
                    "window": 365,
                    "levels": [0.95, 0.99],
                    "weights": {"BTC": 0.6, "ETH": 0.4},
                },
                {"run_id": "6f1c...", "levels": [0.99]},
            ]
        },
    )

    coins: list[str] | None = Field(
        None,
        min_length=1,
        max_length=svc.MAX_COINS,
        description=f"coins (base assets), 1 to {svc.MAX_COINS}; or give run_id instead",
    )
    run_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="a run in the registry: its equity curve's returns are reported",
    )
    interval: str = Field("1d", description="bar interval of the candles (coins only)")
    window: int = Field(
        365,
        ge=2,
        le=svc.MAX_ROWS_PER_COIN,
        description="latest N returns up to `end` (used when `start` is omitted)",
    )
    start: str | None = Field(None, description="first bar (ISO-8601 or unix s); overrides window")
    end: str | None = Field(None, description="last bar, inclusive (ISO-8601 or unix s)")
    levels: list[float] = Field(
        [0.95, 0.99],
        min_length=1,
        max_length=6,
        description="confidence levels strictly between 0.5 and 1",
    )
    weights: dict[str, float] | None = Field(
        None, description="portfolio weights by coin (missing coins weigh 0; shorts allowed)"
    )
    shrinkage: Shrinkage | None = Field(
        None, description="Ledoit-Wolf target for the portfolio's normal VaR covariance"
    )
    rolling_window: int | None = Field(
        None,
        ge=3,
        le=100_000,
        description="returns per rolling VaR window (default: min(250, half the returns))",
    )
    rolling_level: float = Field(0.99, gt=0.5, lt=1.0, description="level of the rolling VaR")
    target_vol: float = Field(0.2, gt=0, le=10, description="annualised vol to target")
    vol_lookback: int = Field(30, ge=2, le=10_000, description="returns estimating the vol")
    max_leverage: float = Field(3.0, gt=0, le=100, description="cap on the vol-target scale")

    @model_validator(mode="after")
    def _check(self) -> RiskReportRequest:
        if (self.coins is None) == (self.run_id is None):
            raise ValueError("give exactly one of coins or run_id")
        if self.run_id is not None and self.weights is not None:
            raise ValueError("weights need coins; a run is a single series")
        bad = [v for v in self.levels if not 0.5 < v < 1.0 or math.isnan(v)]
        if bad:
            raise ValueError(f"levels must lie strictly between 0.5 and 1 (e.g. 0.99), got {bad}")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError("levels must be distinct")
        if self.weights is not None and not all(math.isfinite(v) for v in self.weights.values()):
            raise ValueError("weights must be finite numbers")
        return self


# ------------------------------------------------------------------------------- helpers
def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(_clean(body)), media_type="application/json")


def _clean(value: Any) -> Any:
    """NaN/inf -> None, NumPy -> plain (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _coins(session: Any, settings: Any, coins: list[str]) -> list[str]:
    names = [resolve_coin(session, settings, c) for c in coins]
    if len(set(names)) != len(names):
        raise ApiError(422, "duplicate_coins", f"coins repeat: {names}", parameter="coins")
    return names


def _compute_errors(exc: Exception) -> ApiError:
    if isinstance(exc, InsufficientReturnsError):
        return ApiError(
            422,
            "insufficient_data",
            f"{exc}; widen the window or lower the rolling/lookback windows",
            details={"required_returns": exc.needed, "received_returns": exc.got},
        )
    if isinstance(exc, svc.RiskLimitError):
        return ApiError(422, exc.code, str(exc), **exc.extra)
    return ApiError(422, "invalid_parameter", str(exc))


def _span(ts: np.ndarray) -> dict[str, Any]:
    if ts.size == 0:
        return {"first_ts": None, "first_ts_unix": None, "last_ts": None, "last_ts_unix": None}
    return {
        "first_ts": iso(int(ts[0])),
        "first_ts_unix": int(ts[0]),
        "last_ts": iso(int(ts[-1])),
        "last_ts_unix": int(ts[-1]),
    }


# --------------------------------------------------------------------------------- report
@router.post(
    "/report", summary="VaR/ES, drawdown, vol targeting of coins or a run", responses=_ERRORS
)
def post_report(body: RiskReportRequest, session: SessionDep, settings: SettingsDep) -> Response:
    """Per series (each coin, or the run) and for the weighted portfolio: VaR and ES at each
    level by the historical, normal and Cornish-Fisher methods; moments; drawdown; causal
    vol-targeting scale; rolling VaR with breach counts and Kupiec's test."""
    try:
        if body.run_id is not None:
            series = svc.run_series(session, body.run_id)
            interval = series.source.get("interval")
        else:
            interval = check_interval(body.interval)
            assert body.coins is not None
            coins = _coins(session, settings, body.coins)
            if body.weights is not None:
                unknown = sorted({c.upper() for c in body.weights} - set(coins))
                if unknown:
                    raise ApiError(
                        422,
                        "invalid_weights",
                        f"weights name coins not requested: {unknown}; requested: {coins}",
                        parameter="weights",
                    )
            start, end = parse_range(body.start, body.end)
            series, aligned = svc.coins_series(
                session, coins, interval, start=start, end=end, window=body.window
            )
            needed = max(svc.MIN_RETURNS, body.vol_lookback + 1, (body.rolling_window or 3) + 1)
            svc.require_returns(aligned, needed, "this report")
        n = series.returns.shape[1]
        if n < max(svc.MIN_RETURNS, body.vol_lookback + 1):
            raise InsufficientReturnsError(
                "this report", max(svc.MIN_RETURNS, body.vol_lookback + 1), n
            )
        rolling = body.rolling_window or max(3, min(250, n // 2))
        params = svc.ReportParams(
            levels=tuple(body.levels),
            rolling_window=rolling,
            rolling_level=body.rolling_level,
            target_vol=body.target_vol,
            vol_lookback=body.vol_lookback,
            max_leverage=body.max_leverage,
            periods_per_year=series.periods_per_year,
        )
        reports, how = svc.series_reports(series, params)
        out_series = [
            {"label": lab, **rep} for lab, rep in zip(series.labels, reports, strict=True)
        ]
        if series.position is not None:
            out_series[0]["exposure"] = svc.risk.exposure(series.position)
        portfolio = None
        if body.weights is not None:
            weights = {c.upper(): v for c, v in body.weights.items()}
            portfolio = svc.portfolio_report(series, weights, tuple(body.levels), body.shrinkage)
    except (ComputeError, svc.RiskLimitError) as exc:
        raise _compute_errors(exc) from None
    except svc.RunUnavailableError as exc:
        code = "run_not_found" if exc.status == 404 else "run_without_equity"
        raise ApiError(exc.status, code, str(exc), parameter="run_id") from None
    return _json(
        {
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
    )


# ---------------------------------------------------------------------------- correlation
@router.get(
    "/correlation", summary="Correlation matrix of coins on aligned returns", responses=_ERRORS
)
def get_correlation(
    session: SessionDep,
    settings: SettingsDep,
    coins: Annotated[
        str, Query(description="comma-separated coins, 2 to 50", examples=["BTC,ETH,SOL"])
    ],
    interval: Annotated[str, Query(description="bar interval", examples=["1d"])] = "1d",
    window: Annotated[
        int,
        Query(
            ge=3, le=svc.MAX_ROWS_PER_COIN, description="latest N returns (when start is omitted)"
        ),
    ] = 365,
    start: Annotated[str | None, Query(description="first bar (ISO-8601 or unix s)")] = None,
    end: Annotated[str | None, Query(description="last bar, inclusive")] = None,
    method: Annotated[
        Literal["pearson", "spearman"], Query(description="pearson or spearman")
    ] = "pearson",
    rolling_window: Annotated[
        int | None,
        Query(ge=3, description="returns per rolling window; omitted: no rolling matrices"),
    ] = None,
    rolling_step: Annotated[
        int | None,
        Query(ge=1, description="bars between rolling windows (default: rolling_window)"),
    ] = None,
    shrinkage: Annotated[
        Shrinkage | None, Query(description="Ledoit-Wolf target: constant_correlation or identity")
    ] = None,
) -> Response:
    """Correlation and covariance (ddof=1) of one-bar close-to-close returns on the
    timestamps every coin has (how many were dropped is reported), optionally Ledoit-Wolf
    shrunk and as rolling matrices anchored at the last bar."""
    names = [c for c in (p.strip() for p in coins.split(",")) if c]
    if not 2 <= len(names) <= svc.MAX_COINS:
        raise ApiError(
            422,
            "invalid_coins",
            f"give 2 to {svc.MAX_COINS} comma-separated coins, got {len(names)}",
            parameter="coins",
        )
    interval = check_interval(interval)
    start_s, end_s = parse_range(start, end)
    try:
        resolved = _coins(session, settings, names)
        aligned = svc.load_returns(
            session, resolved, interval, start=start_s, end=end_s, window=window
        )
        needed = max(corr.MIN_CORRELATION, rolling_window or 0)
        svc.require_returns(aligned, needed, "a correlation")
        x = aligned.returns
        matrix = corr.correlation(x, method)
        cov = corr.covariance(x)
        shrunk = None
        if shrinkage is not None:
            lw = corr.ledoit_wolf(x, shrinkage)
            shrunk = {
                "target": lw.target,
                "intensity": lw.shrinkage,
                "correlation": lw.corr,
                "covariance": lw.cov,
                "normalisation": "1/n (as in Ledoit-Wolf)",
            }
        rolling = None
        how: dict[str, Any] = {"ray": False}
        if rolling_window is not None:
            step = rolling_step or rolling_window
            ends, mats, how = svc.rolling_matrices(x, rolling_window, step, method)
            ts = aligned.ts[ends]
            rolling = {
                "window": rolling_window,
                "step": step,
                "count": int(ends.size),
                "end_ts": [iso(int(t)) for t in ts],
                "end_ts_unix": ts.tolist(),
                "matrices": mats,
            }
    except (ComputeError, svc.RiskLimitError) as exc:
        raise _compute_errors(exc) from None
    return _json(
        {
            "coins": list(resolved),
            "interval": interval,
            "method": method,
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
    )
