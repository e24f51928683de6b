"""Request and response models of the backtest API (``/backtest/...``).

Requests are JSON bodies only, ``extra="forbid"``: a misspelt field is a 422 naming it, never
silently ignored. Every time in a response is given as ISO-8601 UTC and as unix seconds.
Caps (bars, grid size, folds) are the constants of :mod:`serve_app.backtests`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.api.models import ErrorBody

TimeIn = str | int
Number = float | int | bool
MetricValue = bool | int | float | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------- requests
class CostsAndSizing(_Body):
    """Costs, sizing and seed: what a backtest, a walk-forward and a sweep share."""

    fee_bps: float = Field(
        10.0, ge=0, le=1000, description="fee per side, basis points of notional", examples=[10]
    )
    slippage_bps: float = Field(
        0.0, ge=0, le=1000, description="slippage per side, basis points of price", examples=[2]
    )
    slippage_range_frac: float = Field(
        0.0,
        ge=0,
        le=1,
        description="extra slippage per side as a fraction of the execution bar's high-low "
        "range (0.1 = a tenth of the range)",
        examples=[0.0],
    )
    funding: bool = Field(
        True,
        description="charge (or credit) the stored perpetual funding rates while a position "
        "is held; a coin without stored funding pays none and the response says so",
    )
    sizing: Literal["fixed", "vol_target"] = Field(
        "fixed",
        description="fixed: position x fraction; vol_target: scaled so that the trailing "
        "realised vol hits target_vol (capped at max_leverage), from past bars only",
    )
    fraction: float = Field(1.0, gt=0, le=10, description="fixed sizing: fraction of equity")
    target_vol: float = Field(
        0.2, gt=0, le=5, description="vol_target sizing: annualised target volatility"
    )
    vol_lookback: int = Field(
        30, ge=2, le=10_000, description="vol_target sizing: bars of trailing realised vol"
    )
    max_leverage: float = Field(
        1.0, gt=0, le=10, description="vol_target sizing: cap on |position| x fraction"
    )
    seed: int = Field(
        0, ge=0, le=2**63 - 1, description="recorded with the run (the engine is deterministic)"
    )


class _DataAndCosts(CostsAndSizing):
    """What every single-series request shares: the series, the window, costs and sizing."""

    coin: str = Field(description="base asset of the series", examples=["BTC"])
    interval: str = Field(description="bar interval of the series", examples=["1h"])
    start: TimeIn | None = Field(
        None,
        description="first bar open time (ISO-8601 or unix seconds); omitted: the first "
        "stored bar. The strategy's warm-up bars must be stored from here on",
        examples=["2024-01-01T00:00:00Z"],
    )
    end: TimeIn | None = Field(
        None,
        description="last bar open time, inclusive (ISO-8601 or unix seconds); omitted: latest",
        examples=["2024-06-30T23:00:00Z"],
    )


class BacktestRunRequest(_DataAndCosts):
    """One strategy with one parameter set on one series."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "coin": "BTC",
                    "interval": "1h",
                    "start": "2024-01-01T00:00:00Z",
                    "strategy": "ema_cross",
                    "params": {"fast": 12, "slow": 26, "long_only": True},
                    "fee_bps": 10,
                    "slippage_bps": 2,
                }
            ]
        },
    )

    strategy: str = Field(
        description="strategy name (see the 422 for the list)", examples=["ema_cross"]
    )
    params: dict[str, Number] = Field(
        default_factory=dict,
        description="strategy parameters; omitted ones take their defaults",
        examples=[{"fast": 12, "slow": 26}],
    )
    equity_points: int = Field(
        1000,
        ge=2,
        le=100_000,
        description="most equity points in the response (evenly spaced, first and last kept); "
        "the registry stores every bar",
    )
    max_trades: int = Field(
        1000, ge=0, le=100_000, description="most trades in the response (the first ones)"
    )


class FoldSpec(_Body):
    """How walk-forward cuts the data into folds and chooses parameters on each train window."""

    objective: Literal["sharpe", "sortino", "calmar", "total_return"] = Field(
        "sharpe", description="what the train window maximises to choose parameters"
    )
    train_bars: int = Field(ge=2, description="bars per train window", examples=[2000])
    test_bars: int = Field(ge=2, description="bars per test window", examples=[500])
    step_bars: int | None = Field(
        None, ge=1, description="bars between fold starts; omitted: test_bars (adjacent tests)"
    )
    purge_bars: int = Field(
        0, ge=0, description="bars dropped between train and test (no leakage across)"
    )
    anchored: bool = Field(
        False, description="anchored: every train window starts at bar 0; else rolling"
    )
    min_regime_bars: int = Field(
        30, ge=1, description="a regime with fewer OOS bars in a fold is flagged"
    )
    min_regime_trades: int = Field(
        5, ge=0, description="a regime with fewer OOS trades in a fold is flagged"
    )


class WalkForwardRequest(FoldSpec, _DataAndCosts):
    """Walk-forward validation: per fold choose parameters on train, evaluate on test."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "coin": "BTC",
                    "interval": "1h",
                    "strategy": "ema_cross",
                    "grid": {"fast": [5, 10, 20], "slow": [50, 100]},
                    "objective": "sharpe",
                    "train_bars": 2000,
                    "test_bars": 500,
                    "purge_bars": 24,
                }
            ]
        },
    )

    strategy: str = Field(description="strategy name", examples=["ema_cross"])
    grid: dict[str, list[Number]] = Field(
        description="parameter -> candidate values; the grid is their Cartesian product",
        examples=[{"fast": [5, 10, 20], "slow": [50, 100]}],
    )
    fixed_params: dict[str, Number] = Field(
        default_factory=dict, description="parameters held fixed (not searched)"
    )
    equity_points: int = Field(
        1000, ge=2, le=100_000, description="most points of the stitched OOS equity returned"
    )


# ------------------------------------------------------------------------------ responses
class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataUsedOut(_Out):
    """The candles (and funding) a run used."""

    candles: int = Field(description="candles used, warm-up included")
    first_ts: str = Field(description="first candle open time, ISO-8601 UTC")
    first_ts_unix: int = Field(description="first candle open time, unix seconds")
    last_ts: str = Field(description="last candle open time, ISO-8601 UTC")
    last_ts_unix: int = Field(description="last candle open time, unix seconds")
    missing_bars: int = Field(description="bars absent between first and last (exchange gaps)")
    fingerprint: str = Field(description="digest of the candles (and funding) used")
    funding_rows: int = Field(description="funding settlements applied (0: none stored/asked)")


class UsedOut(_Out):
    """What the run used: enough to reproduce it."""

    coin: str = Field(description="base asset")
    interval: str = Field(description="bar interval")
    strategy: str = Field(description="strategy name")
    params: dict[str, Any] = Field(description="the parameters, defaults spelled out")
    warmup_bars: int = Field(description="leading bars the strategy needs before its first signal")
    data: DataUsedOut = Field(description="the candles used")
    seed: int = Field(description="the run's seed")
    code_version: str = Field(description="git commit (-dirty when modified) or package version")
    request_hash: str = Field(description="sha256 of the canonical request")
    periods_per_year: float = Field(description="annualisation factor (365-day year)")


class EquityOut(_Out):
    """The equity curve, column-wise; possibly thinned for the response (see ``stride``)."""

    ts: list[str] = Field(description="bar open time, ISO-8601 UTC")
    ts_unix: list[int] = Field(description="bar open time, unix seconds")
    equity: list[float | None] = Field(description="equity at the bar's close (start = 1)")
    drawdown: list[float | None] = Field(description="equity / running peak - 1 (<= 0)")
    position: list[float | None] = Field(description="position held over the bar")
    total_points: int = Field(description="points in the full curve (stored in the registry)")
    stride: int = Field(description="every stride-th point is shown (1: all of them)")


class _RunHeaderOut(_Out):
    """What every completed run's response starts with."""

    run_id: str = Field(description="registry id (GET /backtest/runs/{run_id})")
    kind: str = Field(description="backtest or walkforward")
    created_at: str = Field(description="when the run was recorded, ISO-8601 UTC")
    created_at_unix: int = Field(description="when the run was recorded, unix seconds")
    duration_s: float = Field(description="wall seconds the run took")
    used: UsedOut = Field(
        description="what the run used (for walk-forward, params are the fixed ones)"
    )


class BacktestRunResponse(_RunHeaderOut):
    """A completed backtest, recorded in the registry under ``run_id``."""

    metrics: dict[str, Any] = Field(
        description="summary metrics (docs/api.md); times as *_ts (ISO) and *_ts_unix"
    )
    equity: EquityOut = Field(description="the equity curve")
    trades: list[dict[str, Any]] = Field(
        description="trades: entry/exit ts (ISO + unix) and price, side, size, pnl, costs, "
        "bars held, regime at entry"
    )
    trades_total: int = Field(description="trades in the full run (the registry has them all)")
    regime_stats: list[dict[str, Any]] = Field(description="per-regime statistics")


class RunSummaryOut(_Out):
    """One registry row without its large parts."""

    run_id: str = Field(description="registry id")
    kind: str = Field(description="backtest, walkforward, sweep or simulation")
    status: str = Field(description="queued, running, succeeded or failed")
    created_at: str = Field(description="ISO-8601 UTC")
    created_at_unix: int = Field(description="unix seconds")
    finished_at: str | None = Field(description="ISO-8601 UTC")
    finished_at_unix: int | None = Field(description="unix seconds")
    coin: str | None = Field(description="base asset (null for multi-series runs)")
    interval: str | None = Field(description="bar interval")
    strategy: str | None = Field(description="strategy name")
    seed: int | None = Field(description="the run's seed")
    code_version: str = Field(description="code version that produced it")
    data_fingerprint: str | None = Field(description="digest of the data used")
    request_hash: str = Field(description="sha256 of the canonical request")
    duration_s: float | None = Field(description="wall seconds")
    progress: dict[str, Any] | None = Field(description='e.g. {"done": 40, "total": 100}')
    metrics: dict[str, Any] | None = Field(description="summary metrics")
    job_id: str | None = Field(description="Ray job submission id (sweeps)")
    rerun_of: str | None = Field(description="the run this one re-ran")
    error: str | None = Field(description="why it failed")


class RunsPage(_Out):
    """A page of runs, newest first."""

    total: int = Field(description="runs matching the filters")
    limit: int = Field(description="page size")
    offset: int = Field(description="runs skipped")
    next_offset: int | None = Field(description="offset of the next page; null on the last")
    runs: list[RunSummaryOut] = Field(description="the page")


class RunDetailOut(RunSummaryOut):
    """One registry row with its request and its stored results."""

    request: dict[str, Any] = Field(description="the request exactly as recorded")
    equity: EquityOut | None = Field(description="the equity curve (thinned to equity_points)")
    trades: list[dict[str, Any]] | None = Field(description="trades (first max_trades)")
    trades_total: int | None = Field(description="trades stored")
    results: dict[str, Any] | None = Field(
        description="kind-specific detail: regime stats, folds, sweep table"
    )


class CompareMetricOut(_Out):
    metric: str = Field(description="metric name")
    values: list[MetricValue] = Field(description="one value per run, in the order of ids")


class ParamDiffOut(_Out):
    field: str = Field(description="request field (dotted for nested)", examples=["params.fast"])
    values: list[Any] = Field(description="one value per run (null: absent)")


class CompareEquityOut(_Out):
    """Equity curves on one time axis: the union of every run's bar times."""

    ts: list[str] = Field(description="ISO-8601 UTC")
    ts_unix: list[int] = Field(description="unix seconds")
    series: dict[str, list[float | None]] = Field(
        description="run id -> equity at each time (null where that run has no bar)"
    )
    stride: int = Field(description="every stride-th time is shown")


class CompareResponse(_Out):
    runs: list[RunSummaryOut] = Field(description="the runs, in the order asked")
    metrics: list[CompareMetricOut] = Field(description="metrics side by side")
    param_diffs: list[ParamDiffOut] = Field(description="request fields that differ")
    equity: CompareEquityOut = Field(description="equity curves on one time axis")


class MetricDiffOut(_Out):
    metric: str = Field(description="metric name")
    original: MetricValue = Field(description="value of the original run")
    rerun: MetricValue = Field(description="value of the rerun")


class RerunResponse(_Out):
    original_id: str = Field(description="the run that was re-run")
    run: BacktestRunResponse = Field(description="the new run (recorded with rerun_of)")
    identical: bool = Field(
        description="metrics, equity and trades bit-for-bit equal to the original's"
    )
    same_data: bool = Field(description="the data fingerprint is unchanged")
    same_code: bool = Field(description="the code version is unchanged")
    differences: list[MetricDiffOut] = Field(description="metrics that differ (empty if none)")
    equity_identical: bool = Field(description="the stored equity curves are equal")
    trades_identical: bool = Field(description="the stored trade lists are equal")


class WalkForwardResponse(_RunHeaderOut):
    """Walk-forward validation of one strategy on one series, recorded under ``run_id``."""

    grid_size: int = Field(description="parameter sets evaluated per fold")
    folds: list[dict[str, Any]] = Field(
        description="per fold: train/test ranges (bars, ISO + unix), chosen parameters, "
        "in-sample and out-of-sample metrics, OOS/IS ratio, regime sample sizes"
    )
    oos: dict[str, Any] = Field(description="stitched out-of-sample equity and its metrics")
    decay: dict[str, Any] = Field(
        description="OOS/IS ratio per fold, trend of OOS performance, whether the edge fades"
    )
    regime_checks: dict[str, Any] = Field(
        description="each regime's OOS bars and trades per fold, flagged below the minimum"
    )
    execution: dict[str, Any] = Field(description="how the folds ran (Ray tasks or in-process)")


# --------------------------------------------------------------------------------- errors
class UseJsonBody(ErrorBody):
    """400 ``use JSON body``: parameters were sent in the query string."""

    query_parameters: list[str] | None = Field(None, description="the parameters received")
    example: dict[str, Any] | None = Field(None, description="a valid JSON body")


class BacktestInsufficientBody(ErrorBody):
    """422 ``insufficient_data``: too few candles for the strategy's warm-up plus one trade."""

    required_candles: int = Field(description="candles the request needs")
    received_candles: int = Field(description="candles stored in the requested window")
    required_lookback_s: int = Field(description="the warm-up as time: bars x interval s")
    latest_ts: str | None = Field(description="the latest stored candle, ISO-8601 UTC")
    latest_ts_unix: int | None = Field(description="the latest stored candle, unix seconds")
    suggested_start: str | None = Field(description="a start that would have enough candles")
    suggested_start_unix: int | None = Field(description="suggested_start in unix seconds")


class InvalidBacktestBody(ErrorBody):
    """422 with what to fix: unknown strategy/parameter, empty or oversized grid, folds that
    do not fit the data."""

    valid: Any = Field(None, description="what is valid (strategies, parameters, bounds)")
    cap: int | None = Field(None, description="the cap that was exceeded")
