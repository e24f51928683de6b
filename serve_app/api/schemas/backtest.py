"""Responses of ``/backtest/...`` (a run, a walk-forward, a rerun) and their error bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serve_app.api.schemas.common import ErrorBody
from serve_app.api.schemas.portfolio import PortfolioRunResponse

MetricValue = bool | int | float | None


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
    source: str | None = Field(
        None,
        description="the source the series belongs to (synthetic, file, binance:spot, ...): "
        "a series holds one source",
    )


class ProvenanceOut(_Out):
    """Where a strategy came from: what the registry records so a rerun can tell whether its
    code or spec changed."""

    name: str = Field(description="strategy name")
    version: str = Field(description="its version (a spec: spec-<fingerprint>)")
    origin: str = Field(description="builtin, entry_point, module or spec")
    source: str = Field(description="where it was loaded from; a spec: its canonical JSON")
    module: str = Field(description="the module defining its positions")
    source_hash: str = Field(description="sha256 of that module's source (a spec: of its JSON)")


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
    provenance: ProvenanceOut | None = Field(None, description="the strategy's provenance")
    checks: dict[str, Any] | None = Field(
        None,
        description="a user strategy's look-ahead and recursion checks on the run's candles "
        "(passed, lookahead {flagged, first_bar, cut, ...}, recursion {...}, policy); null "
        "for a built-in",
    )


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
    execution: dict[str, Any] | None = Field(
        None,
        description="where it ran and whether warm: pid, compiles (XLA compilations it "
        "caused; 0 = warm)",
    )


class MetricDiffOut(_Out):
    metric: str = Field(description="metric name")
    original: MetricValue = Field(description="value of the original run")
    rerun: MetricValue = Field(description="value of the rerun")


class RerunResponse(_Out):
    original_id: str = Field(description="the run that was re-run")
    run: BacktestRunResponse | PortfolioRunResponse = Field(
        description="the new run (recorded with rerun_of): a backtest or a portfolio"
    )
    same_strategy: bool = Field(
        description="the strategy's provenance (version, source hash, a spec's text) equals "
        "the original's"
    )
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


class InvalidStrategyBody(ErrorBody):
    """422 ``invalid_strategy``: a spec that does not parse or validate; the fields of
    ``RuleError.as_dict()`` point at the offending token."""

    field: str | None = Field(description="the spec field (long_entry, stop_loss.pct, grid ...)")
    token: str = Field(description="the offending text")
    position: int = Field(description="its 0-based character offset in the field's rule")
    valid: list[str] = Field(description="what would have been accepted there")


class LookaheadBody(ErrorBody):
    """422 ``lookahead_detected`` / ``recursion_detected``: a user strategy whose past
    positions change when later bars are added (or that depends on where its history starts);
    send ``"lookahead": "flag"`` to run it anyway."""

    first_bar: int = Field(description="index of the first bar whose position changed")
    first_bar_ts_unix: int | None = Field(description="its open time, unix seconds")
    cut: int | None = Field(description="the history length that showed it (look-ahead)")
    check: dict[str, Any] = Field(description="the whole check")
