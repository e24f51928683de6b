"""Responses of ``GET /strategies`` and ``POST /signals``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from serve_app.api.schemas.analytics import DataOut, WarmupOut
from serve_app.api.schemas.backtest import ProvenanceOut
from serve_app.api.schemas.common import ApiModel


class StrategyParamOut(ApiModel):
    """One parameter of a strategy: type, default and inclusive range."""

    name: str = Field(description="parameter name")
    type: str = Field(description="int or float")
    default: float | int | None = Field(description="its default (null: none)")
    min: float | int | None = Field(description="smallest valid value")
    max: float | int | None = Field(description="largest valid value")
    doc: str = Field(description="what it does")


class StrategyOut(ApiModel):
    """A strategy usable by name in every route that takes one."""

    name: str = Field(description="the name to send as strategy", examples=["ema_cross"])
    version: str = Field(description="its version (built-ins: builtin)")
    summary: str = Field(description="what it does")
    held_from_start: bool = Field(description="positions known before the data (buy and hold)")
    params: list[StrategyParamOut] = Field(description="its parameters")
    provenance: ProvenanceOut = Field(description="where it was loaded from, its source hash")


class StrategiesResponse(ApiModel):
    """Every strategy by name: the built-ins and the plugins found (entry points, modules)."""

    strategies: list[StrategyOut] = Field(description="sorted by name")
    modules: list[str] = Field(description="the module paths of SQUALL_STRATEGY_MODULES")
    entry_point_group: str = Field(description="the entry point group plugins register in")
    specs: str = Field(description="how to send a declarative spec instead of a name")


class WeightRowOut(ApiModel):
    """A strategy's target weight at the close of one bar."""

    ts: str = Field(description="bar open time, ISO-8601 UTC")
    ts_unix: int = Field(description="bar open time, unix seconds")
    close: float = Field(description="the bar's close, the last price the decision saw")
    position: float = Field(description="target weight: -1 short .. 1 long, fractions too")


class WeightSummaryOut(ApiModel):
    """Time in each side over the returned window."""

    long: float = Field(description="share of bars with a positive weight")
    flat: float = Field(description="share of bars flat")
    short: float = Field(description="share of bars with a negative weight")
    changes: int = Field(description="weight changes between consecutive returned bars")
    mean_abs_weight: float = Field(description="mean |weight| over the rows")


class StrategySignalsResponse(ApiModel):
    """Any strategy's target weights per bar, causal, with its look-ahead check."""

    coin: str = Field(description="base asset, upper case")
    interval: str = Field(description="bar interval")
    strategy: str = Field(description="the strategy's name (spec:<name> for a spec)")
    params: dict[str, Any] = Field(description="every parameter, defaults included")
    provenance: ProvenanceOut = Field(description="where the strategy came from")
    causal: Literal[True] = Field(description="always true: no bar uses a later candle")
    note: str = Field(description="how to act on the positions without look-ahead")
    count: int = Field(description="rows returned")
    rows: list[WeightRowOut] = Field(description="one row per bar, oldest first")
    summary: WeightSummaryOut = Field(description="time in each side over the rows")
    warmup: WarmupOut = Field(description="the history needed before the window")
    data: DataOut = Field(description="the candles the positions were computed from")
    checks: dict[str, Any] | None = Field(
        description="a user strategy's look-ahead / recursion check on these candles (null for "
        "a built-in)"
    )
