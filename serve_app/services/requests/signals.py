"""The request of ``POST /signals``: any strategy of the union over a window of one series."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from serve_app.services.requests.backtest import (
    LOOKAHEAD_DOC,
    STRATEGY_DOC,
    LookaheadPolicy,
    Number,
    StrategyIn,
    TimeIn,
    _Body,
)


class SignalsRequest(_Body):
    """A strategy's target weight at each close of a window (the JSON twin of GET /signals,
    which takes a registry signal by name in its query string)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "coin": "BTC",
                    "interval": "1d",
                    "strategy": {"spec": {"long_entry": "ema:12 > ema:26 and rsi:14 < 70",
                                          "long_exit": "ema:12 <= ema:26"}},
                    "limit": 100,
                }
            ]
        },
    )  # fmt: skip

    coin: str = Field(description="base asset of the series", examples=["BTC"])
    interval: str = Field(description="bar interval", examples=["1d"])
    start: TimeIn | None = Field(
        None, description="first bar of the window (ISO-8601 or unix s); omitted: the latest"
    )
    end: TimeIn | None = Field(None, description="last bar of the window, inclusive")
    limit: int | None = Field(
        None, ge=1, description="most rows to return (default and cap are settings)"
    )
    strategy: StrategyIn = Field(description=STRATEGY_DOC, examples=["ema_cross"])
    params: dict[str, Number] = Field(
        default_factory=dict, description="parameters (or spec placeholder values)"
    )
    lookahead: LookaheadPolicy = Field("reject", description=LOOKAHEAD_DOC)
