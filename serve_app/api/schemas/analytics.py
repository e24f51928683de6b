"""Responses of ``/indicators``, ``/signals``, ``/regimes`` and ``/features``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from serve_app.api.schemas.common import ApiModel

Cell = float | int | str | None


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
