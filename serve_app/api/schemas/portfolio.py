"""Responses of ``/backtest/portfolio`` (a portfolio run) and its walk-forward."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from serve_app.api.schemas.common import ApiModel


class PortfolioEquityOut(ApiModel):
    """The portfolio's equity curve, column-wise; thinned for the response (``stride``)."""

    ts: list[str] = Field(description="bar open time, ISO-8601 UTC")
    ts_unix: list[int] = Field(description="bar open time, unix seconds")
    equity: list[float | None] = Field(description="equity at the bar's close (start = 1)")
    returns: list[float | None] = Field(description="the bar's return (0 on the first bar)")
    drawdown: list[float | None] = Field(description="equity / running peak - 1 (<= 0)")
    gross: list[float | None] = Field(description="sum |position value| / equity at the close")
    net: list[float | None] = Field(description="sum position value / equity at the close")
    turnover: list[float | None] = Field(description="traded notional / equity at the open")
    total_points: int = Field(description="points in the full curve (stored in the registry)")
    stride: int = Field(description="every stride-th point is shown (1: all of them)")


class PortfolioUsedOut(ApiModel):
    """What a portfolio run used: enough to reproduce it."""

    coins: list[str] = Field(description="the legs, in order")
    interval: str = Field(description="bar interval")
    align: str = Field(description="union or intersection of the coins' timestamps")
    strategy: str = Field(description="momentum or per_coin")
    rule: dict[str, Any] = Field(
        description="the momentum rule, or per coin its strategy, parameters and warm-up"
    )
    rebalance: dict[str, Any] = Field(description="the schedule")
    bars: int = Field(description="bars of the aligned timeline")
    regimes_of: str = Field(description="the coin whose regime labels split the regime stats")
    data: dict[str, Any] = Field(description="per coin: the candles used (counts, fingerprint)")
    seed: int = Field(description="the run's seed")
    code_version: str = Field(description="git commit (-dirty when modified) or package version")
    request_hash: str = Field(description="sha256 of the canonical request")
    periods_per_year: float = Field(description="annualisation factor")
    provenance: dict[str, Any] | None = Field(
        description="per coin: its strategy's provenance (null for the momentum rule)"
    )
    checks: dict[str, Any] | None = Field(
        description="per coin: a user strategy's look-ahead / recursion check (null if none)"
    )
    grid: dict[str, list[int]] | None = Field(
        None, description="walk-forward: the momentum parameters searched"
    )


class PortfolioRunResponse(ApiModel):
    """A completed portfolio backtest, recorded in the registry (kind ``portfolio``)."""

    run_id: str = Field(description="registry id (GET /runs/{run_id})")
    kind: str = Field(description="portfolio")
    created_at: str = Field(description="when the run was recorded, ISO-8601 UTC")
    created_at_unix: int = Field(description="when the run was recorded, unix seconds")
    duration_s: float = Field(description="wall seconds the run took")
    used: PortfolioUsedOut = Field(description="what the run used")
    metrics: dict[str, Any] = Field(
        description="return metrics of the equity, turnover, exposure, costs, funding; times "
        "as *_ts (ISO) and *_ts_unix"
    )
    equity: PortfolioEquityOut = Field(description="equity, returns, drawdown, exposure")
    assets: list[dict[str, Any]] = Field(
        description="per coin: pnl, contribution (its per-bar pnl / equity, summed: the legs "
        "sum to the portfolio's return), costs, funding, turnover, average weight, bars held"
    )
    turnover: dict[str, Any] = Field(description="total and annualised turnover, rebalances")
    exposure: dict[str, Any] = Field(description="average and peak gross, average net, in market")
    regime_stats: list[dict[str, Any]] = Field(
        description="per regime (of regimes_of): bars, in market, return, Sharpe, hit rate"
    )
    execution: dict[str, Any] | None = Field(
        None, description="where it ran and whether warm (compiles: 0)"
    )


class PortfolioWalkForwardResponse(ApiModel):
    """Walk-forward of a momentum portfolio, recorded under ``run_id`` (kind walkforward)."""

    run_id: str = Field(description="registry id")
    kind: str = Field(description="walkforward")
    created_at: str = Field(description="ISO-8601 UTC")
    created_at_unix: int = Field(description="unix seconds")
    duration_s: float = Field(description="wall seconds")
    used: PortfolioUsedOut = Field(description="what the run used (the rule: its defaults)")
    grid_size: int = Field(description="momentum parameter sets evaluated per fold")
    folds: list[dict[str, Any]] = Field(
        description="per fold: train/test ranges (bars, ISO + unix), chosen parameters, "
        "in-sample and out-of-sample metrics, OOS/IS ratio"
    )
    oos: dict[str, Any] = Field(description="stitched out-of-sample equity and its metrics")
    decay: dict[str, Any] = Field(description="OOS/IS ratio per fold and whether the edge fades")
