"""Request and response models of the HTTP API (the schema Swagger shows at ``/docs``).

Every time is given twice: ISO-8601 UTC (``ts``) and unix seconds (``ts_unix``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(ApiModel):
    """The one shape of every error response."""

    error: str = Field(description="machine-readable snake_case error code")
    message: str = Field(description="what went wrong and what to change, for a human")
    request_id: str | None = Field(None, description="the request's id (X-Request-ID)")
    details: Any = Field(None, description="per-field problems or the data that was missing")
    parameter: str | None = Field(None, description="the query parameter at fault")
    known_coins: list[str] | None = Field(None, description="coins this API knows")
    valid_intervals: list[str] | None = Field(None, description="intervals this API accepts")
    accepted_formats: list[str] | None = Field(None, description="time formats accepted")
    max_limit: int | None = Field(None, description="the cap on candles per request")
    retry_after_s: int | None = Field(None, description="seconds to wait before retrying")


# ---------------------------------------------------------------------------------- candles
class CandleOut(ApiModel):
    """One closed OHLCV bar."""

    ts: str = Field(description="bar open time, ISO-8601 UTC", examples=["2024-03-01T00:00:00Z"])
    ts_unix: int = Field(description="bar open time, unix seconds", examples=[1709251200])
    open: float = Field(description="first trade price, in the quote asset")
    high: float = Field(description="highest trade price, in the quote asset")
    low: float = Field(description="lowest trade price, in the quote asset")
    close: float = Field(description="last trade price, in the quote asset")
    volume_base: float = Field(description="traded volume in base-asset units")
    volume_quote: float | None = Field(
        description="traded notional in quote-asset units; null when the source lacks it"
    )
    trade_count: int | None = Field(description="number of trades; null when unknown")


class CandlesResponse(ApiModel):
    """Candles of one series, ascending by ``ts``."""

    coin: str = Field(description="base asset, upper case", examples=["BTC"])
    interval: str = Field(description="bar interval", examples=["1h"])
    quote_asset: str = Field(description="quote asset of every price", examples=["USDT"])
    count: int = Field(description="number of candles returned")
    candles: list[CandleOut] = Field(description="the candles, oldest first")


# ------------------------------------------------------------------------------------ coins
class SeriesCoverageOut(ApiModel):
    interval: str = Field(description="bar interval")
    configured: bool = Field(description="whether this interval is in the configured set")
    first_ts: str = Field(description="first stored bar open time, ISO-8601 UTC")
    first_ts_unix: int = Field(description="first stored bar open time, unix seconds")
    last_ts: str = Field(description="last stored bar open time, ISO-8601 UTC")
    last_ts_unix: int = Field(description="last stored bar open time, unix seconds")
    count: int = Field(description="number of stored candles")
    source: str | None = Field(
        description="the source the series belongs to: synthetic, file, binance:spot, ... "
        "(a series holds one source; null only for rows written outside squall)"
    )
    foreign_rows: int = Field(
        description="rows of other sources still in the series (0 when clean: see "
        "--replace-source in the data dictionary)"
    )


class CoinOut(ApiModel):
    coin: str = Field(description="base asset, upper case")
    configured: bool = Field(
        description="whether the coin is configured; false means stored but not tracked"
    )
    series: list[SeriesCoverageOut] = Field(description="stored series of this coin")


class CoinsResponse(ApiModel):
    quote_asset: str = Field(description="quote asset of every tracked pair")
    intervals: list[str] = Field(description="configured intervals")
    coins: list[CoinOut] = Field(description="configured coins, then stored-only coins")


# --------------------------------------------------------------------------------- snapshot
class SnapshotOut(ApiModel):
    """The latest point-in-time market view of one coin."""

    coin: str = Field(description="base asset, upper case")
    quote_asset: str = Field(description="quote asset of every price")
    ts: str = Field(description="snapshot time, ISO-8601 UTC")
    ts_unix: int = Field(description="snapshot time, unix seconds")
    last_price: float = Field(description="last trade price")
    bid: float | None = Field(description="best bid price")
    ask: float | None = Field(description="best ask price")
    mark_price: float | None = Field(description="derivatives mark price")
    index_price: float | None = Field(description="derivatives index price")
    volume_base_24h: float | None = Field(description="24h volume in base-asset units")
    volume_quote_24h: float | None = Field(description="24h notional in quote-asset units")
    funding_rate: float | None = Field(description="funding rate per funding period")
    open_interest: float | None = Field(description="open interest in base-asset units")
    source: str = Field(description="where the snapshot came from")
    ingested_at: str = Field(description="when squall stored it, ISO-8601 UTC")
    ingested_at_unix: int = Field(description="when squall stored it, unix seconds")


# ------------------------------------------------------------------------------------- gaps
class GapOut(ApiModel):
    """Missing candles from ``start`` to ``end`` inclusive (bar open times)."""

    start: str = Field(description="first missing bar open time, ISO-8601 UTC")
    start_unix: int = Field(description="first missing bar open time, unix seconds")
    end: str = Field(description="last missing bar open time, ISO-8601 UTC")
    end_unix: int = Field(description="last missing bar open time, unix seconds")
    missing: int = Field(description="number of missing candles in this gap")


class SeriesGapsOut(ApiModel):
    coin: str = Field(description="base asset")
    interval: str = Field(description="bar interval")
    first_ts: str = Field(description="first stored bar, ISO-8601 UTC")
    first_ts_unix: int = Field(description="first stored bar, unix seconds")
    last_ts: str = Field(description="last stored bar, ISO-8601 UTC")
    last_ts_unix: int = Field(description="last stored bar, unix seconds")
    expected: int = Field(description="bars between first and last inclusive")
    present: int = Field(description="bars stored")
    missing: int = Field(description="expected minus present")
    gaps: list[GapOut] = Field(description="each run of missing bars, oldest first")


class GapsResponse(ApiModel):
    reports: list[SeriesGapsOut] = Field(description="one report per matching stored series")


# ----------------------------------------------------------------------------------- health
class LiveResponse(ApiModel):
    status: Literal["ok"] = Field(description="always 'ok' while the process serves")


class ReadyResponse(ApiModel):
    status: Literal["ready"] = Field(description="the database answers and is migrated")
    revision: str | None = Field(description="the database's (= head) migration revision")


class NotReadyResponse(ApiModel):
    status: Literal["not_ready"] = Field(description="not ready to serve traffic")
    error: Literal["not_ready"] = Field(description="error code (uniform error shape)")
    message: str = Field(description="the reasons joined, for a human")
    reasons: list[str] = Field(description="each reason the API is not ready")
    request_id: str | None = Field(None, description="the request's id")


class RevisionOut(ApiModel):
    current: str | None = Field(description="the database's migration revision")
    head: str | None = Field(description="the newest migration this code ships")
    up_to_date: bool = Field(description="current == head")


class DatabaseHealth(ApiModel):
    ok: bool = Field(description="whether the database answered")
    backend: str = Field(description="sqlite or postgresql")
    url: str = Field(description="database URL with the password redacted")
    latency_ms: float | None = Field(description="round trip of SELECT 1, milliseconds")
    error: str | None = Field(description="why it did not answer, if it did not")
    revision: RevisionOut | None = Field(description="migration revisions, when reachable")


class SeriesHealth(ApiModel):
    coin: str = Field(description="configured coin")
    interval: str = Field(description="configured interval")
    latest_ts: str | None = Field(description="latest stored bar open time, ISO-8601 UTC")
    latest_ts_unix: int | None = Field(description="latest stored bar open time, unix s")
    source: str | None = Field(
        description="the source the series belongs to (synthetic, file, binance:spot, ...); "
        "null while it holds no candles"
    )
    age_s: int | None = Field(
        description="seconds since the latest stored bar closed (open time + interval)"
    )
    stale: bool = Field(
        description="no candles, or age_s above one interval plus SQUALL_INGEST_GRACE_S"
    )


class RayHealth(ApiModel):
    cluster_resources: dict[str, float] = Field(description="ray.cluster_resources()")
    available_resources: dict[str, float] = Field(description="ray.available_resources()")


class IngestionJobHealth(ApiModel):
    job: str = Field(description="job name: candles:COIN:INTERVAL or derivatives:COIN")
    kind: str = Field(description="candles or derivatives")
    coin: str = Field(description="base asset")
    interval: str | None = Field(description="bar interval (candle jobs)")
    last_run_ts: int | None = Field(description="last run start, unix seconds")
    last_success_ts: int | None = Field(description="last successful run end, unix seconds")
    last_error: str | None = Field(description="last error message")
    last_error_ts: int | None = Field(description="when the last error happened, unix seconds")
    consecutive_failures: int = Field(description="failed runs since the last success")
    runs: int = Field(description="runs since the supervisor started")
    written_total: int = Field(description="rows inserted or changed since start")
    written_last_run: int = Field(description="rows inserted or changed by the last run")
    latest_ts: int | None = Field(description="newest stored bar (open time), unix seconds")
    age_s: float | None = Field(description="seconds since the newest stored bar closed")
    allowed_age_s: float | None = Field(description="interval plus grace: the stall threshold")
    stalled_by_s: float = Field(description="seconds beyond the allowance (0 when healthy)")
    stalled: bool = Field(description="stalled_by_s > 0")
    extra: dict[str, Any] = Field(description="job-specific details")


class IngestionHealth(ApiModel):
    running: bool = Field(description="the supervisor runs its loops as the writer")
    role: str | None = Field(description="writer, standby (another holds the lock) or stopped")
    reason: str | None = Field(description="why the supervisor could not be asked, if so")
    data_source: str | None = Field(description="provider the loops read from")
    lock: str | None = Field(description="the cross-process writer lock")
    stalled: list[str] = Field(description="jobs stalled beyond their allowance")
    jobs: list[IngestionJobHealth] = Field(description="every job's stats and stall fields")
    gap_checks: list[dict[str, Any]] = Field(description="recent gap checks and their results")


class HealthResponse(ApiModel):
    status: Literal["ok", "degraded", "down"] = Field(
        description="ok; degraded (not migrated or a stale series); down (no database)"
    )
    version: str = Field(description="squall version")
    time: str = Field(description="server time, ISO-8601 UTC")
    time_unix: int = Field(description="server time, unix seconds")
    database: DatabaseHealth = Field(description="database reachability and revision")
    series: list[SeriesHealth] | None = Field(
        description="latest candle of each configured series (null if the DB is down)"
    )
    ray: RayHealth | None = Field(description="Ray resources; null outside a Ray runtime")
    ingestion: IngestionHealth | None = Field(
        None, description="the ingestion supervisor; null when disabled or outside Ray"
    )


# -------------------------------------------------------------------------------- analytics
#: one cell of an analytics row: a number, an ISO time or a label name; null when undefined
Cell = float | int | str | None


class InvalidSpecBody(ErrorBody):
    """422 ``invalid_spec``: an indicator, strategy or parameter the registry does not accept."""

    valid: list[str] = Field(description="every valid item: syntax, parameters, defaults, ranges")
    max_items: int | None = Field(None, description="the cap on items in one spec")


class InsufficientDataBody(ErrorBody):
    """422 ``insufficient_data``: too few stored candles for the requested warm-up."""

    required_candles: int = Field(description="candles needed up to the last requested bar")
    received_candles: int = Field(description="candles stored up to the last requested bar")
    required_lookback_s: int = Field(description="the warm-up as time: bars x interval seconds")
    first_available_ts: str | None = Field(description="first stored candle, ISO-8601 UTC")
    first_available_ts_unix: int | None = Field(description="first stored candle, unix seconds")
    suggested_start: str | None = Field(
        description="first available + the warm-up: the earliest start with a complete first row"
    )
    suggested_start_unix: int | None = Field(description="suggested_start in unix seconds")


class SpecItemOut(ApiModel):
    """One parsed spec item: what was computed and how many bars it needs first."""

    item: str = Field(description="the item with every parameter spelled out", examples=["ema:20"])
    kind: Literal["indicator", "label", "signal"] = Field(description="what the item produces")
    columns: list[str] = Field(description="the output columns of this item")
    warmup_bars: int = Field(
        description="leading bars (from the first candle used) without a defined value"
    )


class WarmupOut(ApiModel):
    """How much history the request needed before its window, and whether it was there."""

    required_candles: int = Field(
        description="candles needed for one row with every column defined: largest warm-up + 1"
    )
    lookback_candles: int = Field(description="candles read before the window for the warm-up")
    lookback_received: int = Field(
        description="how many of them are stored (fewer near the start of the series)"
    )
    complete: bool = Field(description="every row of the window has its warm-up covered")
    first_complete_ts: str | None = Field(
        description="first row with every column defined, ISO-8601 UTC (null: none in window)"
    )
    first_complete_ts_unix: int | None = Field(description="first_complete_ts in unix seconds")
    items: list[SpecItemOut] = Field(description="each item with its own warm-up")


class DataOut(ApiModel):
    """The candles a result was computed from: the warm-up lookback plus the window."""

    candles: int = Field(description="candles used (lookback and window)")
    first_ts: str | None = Field(description="first candle used, ISO-8601 UTC")
    first_ts_unix: int | None = Field(description="first candle used, unix seconds")
    last_ts: str | None = Field(description="last candle used, ISO-8601 UTC")
    last_ts_unix: int | None = Field(description="last candle used, unix seconds")
    missing_bars: int = Field(
        description="bars absent between first and last (gaps are spanned, never filled)"
    )
    fingerprint: str = Field(description="digest of exactly these candles, 16 hex digits")


class IndicatorsResponse(ApiModel):
    """Indicators of one series over a window, computed on request from stored candles."""

    coin: str = Field(description="base asset, upper case")
    interval: str = Field(description="bar interval")
    names: str = Field(description="the normalised spec", examples=["ema:20,rsi:14"])
    columns: list[str] = Field(description="output columns, in spec order")
    count: int = Field(description="rows returned")
    rows: list[dict[str, Cell]] = Field(
        description="per bar: ts, ts_unix and each column; null inside its warm-up"
    )
    warmup: WarmupOut = Field(description="the history needed before the window")
    data: DataOut = Field(description="the candles the values were computed from")


class SignalRowOut(ApiModel):
    """A strategy's target position at the close of one bar."""

    ts: str = Field(description="bar open time, ISO-8601 UTC")
    ts_unix: int = Field(description="bar open time, unix seconds")
    close: float = Field(description="the bar's close, the last price the decision saw")
    position: int = Field(description="-1 short, 0 flat, 1 long (flat inside the warm-up)")


class SignalSummaryOut(ApiModel):
    """Time in each position over the returned window."""

    long: float = Field(description="share of bars long")
    flat: float = Field(description="share of bars flat")
    short: float = Field(description="share of bars short")
    changes: int = Field(description="position changes between consecutive returned bars")


class SignalsResponse(ApiModel):
    """A strategy's position series, causal by construction."""

    coin: str = Field(description="base asset, upper case")
    interval: str = Field(description="bar interval")
    strategy: str = Field(description="strategy name", examples=["ema_cross"])
    item: str = Field(
        description="the strategy with every parameter", examples=["ema_cross:12:26:0:0"]
    )
    params: dict[str, float] = Field(description="every parameter by name, defaults included")
    causal: Literal[True] = Field(description="always true: no bar uses a later candle")
    note: str = Field(description="how to act on the positions without look-ahead")
    positions: dict[str, str] = Field(description="position code -> name")
    count: int = Field(description="rows returned")
    rows: list[SignalRowOut] = Field(description="one row per bar, oldest first")
    summary: SignalSummaryOut = Field(description="time in each position over the rows")
    warmup: WarmupOut = Field(description="the history needed before the window")
    data: DataOut = Field(description="the candles the positions were computed from")


class RegimeRowOut(ApiModel):
    """Volatility and trend state of one bar."""

    ts: str = Field(description="bar open time, ISO-8601 UTC")
    ts_unix: int = Field(description="bar open time, unix seconds")
    realized_vol: float | None = Field(description="annualised realized volatility (vol_n bars)")
    vol_of_vol: float | None = Field(description="std of realized_vol over vov_m bars")
    vol_regime: str = Field(description="LOW, NORMAL, HIGH or MISSING (warm-up)")
    vol_regime_code: int = Field(description="the vol regime's code (labels.VolRegime)")
    trend_score: float | None = Field(description="EMA slope per bar in ATR units")
    trend_regime: str = Field(description="DOWN, RANGE, UP or MISSING (warm-up)")
    trend_regime_code: int = Field(description="the trend regime's code (labels.TrendRegime)")


class RegimeSummaryOut(ApiModel):
    """Share of the returned bars in each regime (each map sums to 1 when bars > 0)."""

    bars: int = Field(description="bars summarised (the rows returned)")
    vol_regime: dict[str, float] = Field(description="vol regime name -> share of bars")
    trend_regime: dict[str, float] = Field(description="trend regime name -> share of bars")


class RegimesResponse(ApiModel):
    """Realized volatility, vol of vol and regime labels per bar."""

    coin: str = Field(description="base asset, upper case")
    interval: str = Field(description="bar interval")
    spec: str = Field(description="the registry items computed, every parameter spelled out")
    params: dict[str, float] = Field(description="the effective parameters, defaults included")
    labels: dict[str, dict[str, str]] = Field(description="label -> code -> name")
    count: int = Field(description="rows returned")
    rows: list[RegimeRowOut] = Field(description="one row per bar, oldest first")
    summary: RegimeSummaryOut = Field(description="share of bars per regime")
    warmup: WarmupOut = Field(description="the history needed before the window")
    data: DataOut = Field(description="the candles the labels were computed from")


class FundingOut(ApiModel):
    """Perpetual funding from the stored settlements."""

    available: bool = Field(description="a funding rate is stored for the coin")
    reason: str | None = Field(description="why a value below is null; null when none is")
    rate: float | None = Field(description="latest settled funding rate per period, fraction")
    ts: str | None = Field(description="its settlement time, ISO-8601 UTC")
    ts_unix: int | None = Field(description="its settlement time, unix seconds")
    interval_s: int | None = Field(description="seconds between settlements")
    interval_source: Literal["inferred", "assumed"] | None = Field(
        description="inferred from the stored settlements, or assumed 8h (fewer than two)"
    )
    settlements_per_year: float | None = Field(description="365 days / interval_s")
    annualized: float | None = Field(description="rate x settlements_per_year")
    window_mean_rate: float | None = Field(description="mean rate over the window to ts")
    window_mean_annualized: float | None = Field(description="window mean x settlements/year")
    window_observations: int = Field(description="settlements in the window")


class OpenInterestOut(ApiModel):
    """Open interest now and its change over the window."""

    available: bool = Field(description="an open-interest observation is stored")
    reason: str | None = Field(description="why a value below is null; null when none is")
    open_interest: float | None = Field(description="latest open interest, base-asset units")
    open_interest_quote: float | None = Field(description="latest open interest, quote notional")
    ts: str | None = Field(description="its observation time, ISO-8601 UTC")
    ts_unix: int | None = Field(description="its observation time, unix seconds")
    past_open_interest: float | None = Field(
        description="the last observation at or before ts - window"
    )
    past_ts: str | None = Field(description="that observation's time, ISO-8601 UTC")
    past_ts_unix: int | None = Field(description="that observation's time, unix seconds")
    change: float | None = Field(description="open_interest - past_open_interest (base units)")
    change_pct: float | None = Field(description="change / past_open_interest x 100")


class BasisOut(ApiModel):
    """Premium of the perpetual's mark price over the index, from the latest snapshot."""

    available: bool = Field(description="a snapshot with mark and index prices is stored")
    reason: str | None = Field(description="why the values are null; null when they are not")
    mark_price: float | None = Field(description="perpetual mark price")
    index_price: float | None = Field(description="spot index price")
    ts: str | None = Field(description="snapshot time, ISO-8601 UTC")
    ts_unix: int | None = Field(description="snapshot time, unix seconds")
    basis_bps: float | None = Field(description="(mark / index - 1) x 10,000")
    annualized: float | None = Field(
        description="(mark / index - 1) x funding settlements per year, a fraction"
    )


class VolatilityOut(ApiModel):
    """Realized volatility over the window from stored 1h candles."""

    available: bool = Field(description="realized_vol could be computed")
    reason: str | None = Field(description="why a value below is null; null when none is")
    bars: int = Field(description="1h bars in the window (the realized-vol window)")
    realized_vol: float | None = Field(description="annualised std of 1h log returns (x√8760)")
    vol_of_vol: float | None = Field(
        description="std over the window's bars of the 24-bar realized vol (annualised)"
    )
    candles_used: int = Field(description="1h candles read")
    last_ts: str | None = Field(description="last 1h candle used, ISO-8601 UTC")
    last_ts_unix: int | None = Field(description="last 1h candle used, unix seconds")


class LiquidationsOut(ApiModel):
    """Liquidations: not reported by any provider squall uses."""

    available: Literal[False] = Field(description="always false for now")
    value: None = Field(description="always null")
    reason: str = Field(description="why there is no value")


class MicrostructureResponse(ApiModel):
    """Derivatives microstructure of one coin from stored funding, OI, snapshots, candles."""

    coin: str = Field(description="base asset, upper case")
    window: str = Field(description="the window as given", examples=["1d"])
    window_s: int = Field(description="the window in seconds")
    end: str | None = Field(description="observations at or before this time; null: latest")
    end_unix: int | None = Field(description="end in unix seconds")
    funding: FundingOut = Field(description="funding rate, annualised, window mean")
    open_interest: OpenInterestOut = Field(description="open interest and its change")
    basis: BasisOut = Field(description="mark vs index premium")
    volatility: VolatilityOut = Field(description="realized vol and vol of vol, 1h candles")
    liquidations: LiquidationsOut = Field(description="always null, with the reason")


class FeaturesResponse(ApiModel):
    """Rows of the feature store, guaranteed fresh against the stored candles."""

    coin: str = Field(description="base asset, upper case")
    interval: str = Field(description="bar interval")
    version: str = Field(description="feature set key", examples=["v1:1h"])
    spec: str = Field(description="the feature set's indicator spec")
    columns: list[str] = Field(description="feature columns, in order")
    count: int = Field(description="rows returned")
    rows: list[dict[str, Cell]] = Field(
        description="per bar: ts, ts_unix and each feature; null inside its warm-up"
    )
    recomputed: int = Field(
        description="rows recomputed for this answer because stored ones were stale or absent "
        "(whole blocks: may exceed count)"
    )
    freshness: str = Field(description="the guarantee: stale rows are never served")
