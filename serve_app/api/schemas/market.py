"""Responses of ``/market/...``: candles, coins and coverage, snapshots, gaps, microstructure."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from serve_app.api.schemas.common import ApiModel


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
