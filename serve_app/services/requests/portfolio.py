"""Requests of portfolio backtests: several coins, one rule or a strategy per coin, a schedule.

Everything a body can get wrong on its own is checked here (one of ``momentum`` / ``per_coin``,
ranges); the coins, the candles and the caps are checked by ``services/portfolio.py``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from serve_app.services.requests.backtest import (
    LOOKAHEAD_DOC,
    STRATEGY_DOC,
    FoldSpec,
    LookaheadPolicy,
    StrategyIn,
    TimeIn,
    _Body,
)

MAX_PORTFOLIO_COINS = 50
Bps = float | dict[str, float]


class MomentumRule(_Body):
    """Rank the coins by trailing return over ``lookback`` bars; hold the top ``top_k`` at
    ``1/top_k`` each (and short the bottom ``short_k`` at ``-1/short_k``)."""

    lookback: int = Field(ge=1, le=100_000, description="bars of trailing return", examples=[30])
    top_k: int = Field(1, ge=1, le=MAX_PORTFOLIO_COINS, description="coins held long")
    short_k: int = Field(0, ge=0, le=MAX_PORTFOLIO_COINS, description="coins held short")


class PortfolioStrategy(_Body):
    """Exactly one of: a cross-sectional ``momentum`` rule, or a strategy ``per_coin``."""

    momentum: MomentumRule | None = Field(None, description="one rule over every coin")
    per_coin: dict[str, StrategyIn] | None = Field(
        None,
        description="coin -> its strategy (each: " + STRATEGY_DOC + "), run on the coin's own "
        "bars; every coin of the portfolio needs one",
        examples=[{"BTC": "ema_cross", "ETH": {"name": "rsi_mr", "params": {"n": 14}}}],
    )

    @model_validator(mode="after")
    def _one(self) -> PortfolioStrategy:
        if (self.momentum is None) == (self.per_coin is None):
            raise ValueError("give exactly one of momentum or per_coin")
        return self


class Rebalance(_Body):
    """When the targets are read: every ``every`` bars, or the last bar of each UTC week or
    month (a calendar fact of the timestamps)."""

    kind: Literal["bars", "weekly", "monthly"] = Field("bars", description="the schedule")
    every: int = Field(1, ge=1, le=100_000, description='"bars": every n bars (0, n, 2n, ...)')


class PortfolioRequest(_Body):
    """A portfolio backtest: several coins on one timeline, rebalanced on a schedule."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "coins": ["BTC", "ETH", "SOL"],
                    "interval": "1d",
                    "strategy": {"momentum": {"lookback": 30, "top_k": 2}},
                    "rebalance": {"kind": "monthly"},
                    "fee_bps": {"BTC": 10, "ETH": 10, "SOL": 20},
                }
            ]
        },
    )

    coins: list[str] = Field(
        min_length=1, max_length=MAX_PORTFOLIO_COINS, description="base assets, one leg each"
    )
    interval: str = Field(description="bar interval of every coin", examples=["1d"])
    start: TimeIn | None = Field(None, description="first bar open time (ISO-8601 or unix s)")
    end: TimeIn | None = Field(None, description="last bar open time, inclusive")
    align: Literal["union", "intersection"] = Field(
        "union",
        description="the timeline: every coin's bars (a coin without a bar is not traded "
        "there, marked at its last close) or only the bars every coin has; no bar is invented",
    )
    strategy: PortfolioStrategy = Field(description="momentum rule or per-coin strategies")
    rebalance: Rebalance = Field(default_factory=Rebalance, description="the schedule")
    max_gross: float = Field(
        1.0, gt=0, le=10, description="cap on sum |weight|; larger targets are scaled down"
    )
    resize: bool = Field(
        True,
        description="every rebalance resets every present leg to its weight (true) or trades "
        "only legs whose target changed (false)",
    )
    fee_bps: Bps = Field(10.0, description="per side, bps of notional: one number or per coin")
    slippage_bps: Bps = Field(0.0, description="per side, bps of price: one number or per coin")
    funding: bool = Field(True, description="charge the stored funding of each leg")
    regimes_of: str | None = Field(
        None, description="coin whose vol / trend regime labels split the regime stats "
        "(default: the first coin)",
    )  # fmt: skip
    equity_points: int = Field(
        1000, ge=2, le=100_000, description="most equity points in the response"
    )
    seed: int = Field(0, ge=0, le=2**63 - 1, description="recorded (the run is deterministic)")
    lookahead: LookaheadPolicy = Field(
        "reject", description=LOOKAHEAD_DOC + " (each per-coin user strategy on its coin)"
    )


class PortfolioWalkForwardRequest(FoldSpec, PortfolioRequest):
    """Walk-forward of a momentum portfolio: per fold choose lookback / top_k / short_k on
    the train bars, evaluate out of sample (each window flat, with fresh capital)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "coins": ["BTC", "ETH", "SOL"],
                    "interval": "1d",
                    "strategy": {"momentum": {"lookback": 30, "top_k": 1}},
                    "grid": {"lookback": [20, 30, 60], "top_k": [1, 2]},
                    "rebalance": {"kind": "weekly"},
                    "train_bars": 730,
                    "test_bars": 180,
                }
            ]
        },
    )

    grid: dict[Literal["lookback", "top_k", "short_k"], list[int]] = Field(
        description="momentum parameter -> candidate values (the strategy's values fill the rest)",
        examples=[{"lookback": [20, 30, 60], "top_k": [1, 2]}],
    )
    strategy: PortfolioStrategy = Field(description="a momentum rule (its values: the defaults)")


__all__ = [
    "MAX_PORTFOLIO_COINS",
    "MomentumRule",
    "PortfolioRequest",
    "PortfolioStrategy",
    "PortfolioWalkForwardRequest",
    "Rebalance",
]
