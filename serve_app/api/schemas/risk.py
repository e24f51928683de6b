"""Responses of ``/risk/...``: the report, correlation matrices, simulation runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimulationResponse(_Body):
    """A simulation run: status, progress and (once done) the result."""

    run_id: str = Field(description="registry id (kind simulation)")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] = Field(
        description="run state"
    )
    progress: dict[str, Any] | None = Field(None, description="paths done / total (unit: paths)")
    poll: str | None = Field(None, description="where to poll an asynchronous run")
    result: dict[str, Any] | None = Field(None, description="statistics (docs/risk-simulation.md)")
    used: dict[str, Any] | None = Field(
        None,
        description="what was used: source, seed, block length, regime model, shocks, "
        "PRNG, chunking, code version",
    )
    timings: dict[str, float] | None = Field(None, description="seconds per phase")
    execution: dict[str, Any] | None = Field(
        None,
        description="where the paths ran (in-process or warm workers: pids, nodes) and "
        "whether warm (compiles: XLA compilations it caused; 0 = warm)",
    )
    error: str | None = Field(None, description="why a failed run failed")


Num = float | None  # JSON has no NaN: an undefined value is null


class _Span(_Body):
    first_ts: str | None = Field(description="first return's bar open time, ISO-8601 UTC")
    first_ts_unix: int | None = Field(description="first_ts in unix seconds")
    last_ts: str | None = Field(description="last return's bar open time, ISO-8601 UTC")
    last_ts_unix: int | None = Field(description="last_ts in unix seconds")


class LevelRiskOut(_Body):
    """VaR and ES at one level, per method (returns: negative is a loss)."""

    level: float = Field(description="confidence level, e.g. 0.99")
    var: dict[str, Num] = Field(description="method -> VaR (historical, normal, cornish_fisher)")
    es: dict[str, Num] = Field(description="method -> expected shortfall")


class RiskSeriesOut(_Body):
    """The report of one series: a coin, or a run's equity curve."""

    label: str = Field(description="the coin, or run:<id>")
    n_returns: int = Field(description="returns used")
    mean: Num = Field(description="mean per-bar return")
    std: Num = Field(description="sample std of per-bar returns (ddof=1)")
    vol_annualised: Num = Field(description="std x sqrt(periods per year)")
    skewness: Num = Field(description="population skewness")
    excess_kurtosis: Num = Field(description="population excess kurtosis")
    levels: list[LevelRiskOut] = Field(description="VaR/ES per level and method")
    drawdown: dict[str, Any] = Field(description="max drawdown, peak/trough/recovery, open")
    vol_target: dict[str, Any] = Field(description="causal vol-targeting scale and its effect")
    rolling: dict[str, Any] = Field(description="rolling VaR/ES, breaches, Kupiec's test")
    exposure: dict[str, float] | None = Field(
        None, description="time in market, long/short shares, gross/net exposure (runs)"
    )


class ContributionOut(_Body):
    level: float = Field(description="confidence level")
    var: dict[str, Num] = Field(description="coin -> contribution to the portfolio VaR")
    es: dict[str, Num] = Field(description="coin -> contribution to the portfolio ES")


class PortfolioRiskOut(_Body):
    """VaR/ES of the weighted portfolio and each coin's contribution."""

    weights: dict[str, float] = Field(description="coin -> weight (missing coins weigh 0)")
    levels: list[LevelRiskOut] = Field(description="portfolio VaR/ES per level and method")
    sigma: Num = Field(description="portfolio std per bar")
    covariance: str = Field(description="sample or ledoit_wolf:<target>")
    shrinkage_intensity: Num = Field(description="Ledoit-Wolf intensity (null: sample)")
    contributions: list[ContributionOut] = Field(description="Euler contributions per level")


class RiskReportResponse(_Span):
    """``POST /risk/report``: VaR/ES by three methods, drawdown, vol targeting, rolling VaR."""

    interval: str | None = Field(description="bar interval of the returns")
    periods_per_year: float = Field(description="annualisation factor (365-day year)")
    n_returns: int = Field(description="aligned returns used")
    source: dict[str, Any] = Field(description="where the returns came from, what was dropped")
    methods: dict[str, str] = Field(description="each method's definition")
    levels: list[float] = Field(description="the levels asked")
    series: list[RiskSeriesOut] = Field(description="one report per coin (or the run)")
    portfolio: PortfolioRiskOut | None = Field(description="the weighted portfolio (weights)")
    execution: dict[str, Any] = Field(description="where the work ran (in-process or workers)")


class CorrelationResponse(_Span):
    """``GET /risk/correlation``: correlation and covariance of aligned returns."""

    coins: list[str] = Field(description="the coins, in matrix order")
    interval: str = Field(description="bar interval")
    method: Literal["pearson", "spearman"] = Field(description="correlation method")
    n_returns: int = Field(description="aligned returns used")
    dropped_timestamps: int = Field(description="timestamps dropped: not every coin has them")
    dropped_per_coin: dict[str, int] = Field(description="coin -> its returns dropped")
    gaps_skipped: dict[str, int] = Field(description="coin -> returns spanning a hole, skipped")
    candles_read: dict[str, int] = Field(description="coin -> candles read")
    labels: list[str] = Field(description="row/column labels of the matrices")
    matrix: list[list[Num]] = Field(description="correlation matrix")
    covariance: list[list[Num]] = Field(description="covariance matrix (ddof=1)")
    shrinkage: dict[str, Any] | None = Field(description="Ledoit-Wolf shrunk matrices")
    rolling: dict[str, Any] | None = Field(description="rolling matrices, anchored at the end")
    execution: dict[str, Any] = Field(description="where the work ran")
