"""The request of a risk report (``POST /risk/report``, ``squall risk``), and the caps of risk
reads (coins, rows) that the correlation route shares."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_COINS = 50
MAX_ROWS_PER_COIN = 500_000


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
        max_length=MAX_COINS,
        description=f"coins (base assets), 1 to {MAX_COINS}; or give run_id instead",
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
        le=MAX_ROWS_PER_COIN,
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
