"""Requests of the backtest family: one backtest, a walk-forward, the costs a sweep shares.

Caps on bars and grid sizes are checked by the services (they need the stored candles);
everything a request can get wrong on its own is checked here.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

TimeIn = str | int


Number = float | int | bool


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: fields added after requests of this kind were first recorded: left out of a dump while
    #: at their default, so an old request's canonical JSON (and its request_hash) is unchanged
    LATER_FIELDS: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_later_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        fields = type(self).model_fields
        for name in self.LATER_FIELDS:
            if name in out and getattr(self, name) == fields[name].default:
                del out[name]
        return out


class NamedStrategy(_Body):
    """A built-in or plugin strategy by name, with its parameters (``GET /strategies``)."""

    name: str = Field(
        min_length=1, max_length=80, description="strategy name", examples=["donchian"]
    )
    params: dict[str, Number] = Field(
        default_factory=dict,
        description="its parameters; omitted ones take their defaults",
        examples=[{"n": 55}],
    )


class SpecStrategy(_Body):
    """A declarative strategy spec (docs/strategies.md) and values of its placeholders."""

    spec: dict[str, Any] = Field(
        description="the spec: long_entry / long_exit / short_entry / short_exit rules, "
        "weights, stops, params (docs/strategies.md)",
        examples=[{"long_entry": "ema:{fast} > ema:{slow}", "long_exit": "ema:{fast} <= ema:{slow}",
                   "params": {"fast": 12, "slow": 26}}],
    )  # fmt: skip
    params: dict[str, Number] = Field(
        default_factory=dict,
        description="values of the spec's {placeholders} (over the spec's own params)",
        examples=[{"fast": 10}],
    )


#: what a ``strategy`` field accepts: a name, a name with parameters, or a spec
StrategyIn = str | NamedStrategy | SpecStrategy
STRATEGY_DOC = (
    'a built-in or plugin name ("ema_cross"; GET /strategies lists them), {"name": ..., '
    '"params": {...}}, or a declarative spec {"spec": {...}, "params": {...}} '
    "(docs/strategies.md)"
)
LookaheadPolicy = Literal["reject", "flag"]
LOOKAHEAD_DOC = (
    "a user strategy (spec or plugin) is checked for look-ahead and start dependence on the "
    "run's candles before it runs: reject answers 422 lookahead_detected (or "
    "recursion_detected) with the first bar that changed; flag runs it anyway and reports the "
    "check in used.checks. Built-ins are not checked"
)


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


class SeriesAndCosts(CostsAndSizing):
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


class BacktestRunRequest(SeriesAndCosts):
    """One strategy with one parameter set on one series."""

    LATER_FIELDS = ("lookahead",)
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

    strategy: StrategyIn = Field(description=STRATEGY_DOC, examples=["ema_cross"])
    params: dict[str, Number] = Field(
        default_factory=dict,
        description="strategy parameters (or spec placeholder values); omitted ones take their "
        "defaults. Give them here or inside the strategy object, not both",
        examples=[{"fast": 12, "slow": 26}],
    )
    lookahead: LookaheadPolicy = Field("reject", description=LOOKAHEAD_DOC)
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
    mode: Literal["sync", "async"] = Field(
        "sync",
        description="sync: answer with the result; async: answer 202 with the run id at once "
        "and run it on a warm worker (follow and cancel it at /runs/{run_id})",
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


class WalkForwardRequest(FoldSpec, SeriesAndCosts):
    """Walk-forward validation: per fold choose parameters on train, evaluate on test."""

    LATER_FIELDS = ("lookahead",)
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

    strategy: StrategyIn = Field(description=STRATEGY_DOC, examples=["ema_cross"])
    grid: dict[str, list[Number]] = Field(
        description="parameter (a spec: placeholder) -> candidate values; the grid is their "
        "Cartesian product",
        examples=[{"fast": [5, 10, 20], "slow": [50, 100]}],
    )
    fixed_params: dict[str, Number] = Field(
        default_factory=dict,
        description="parameters held fixed (not searched); a strategy object's params count "
        "as fixed too",
    )
    lookahead: LookaheadPolicy = Field(
        "reject", description=LOOKAHEAD_DOC + " (on the grid's first parameter set)"
    )
    equity_points: int = Field(
        1000, ge=2, le=100_000, description="most points of the stitched OOS equity returned"
    )
    mode: Literal["sync", "async"] = Field(
        "sync",
        description="sync: answer with the result; async: answer 202 with the run id at once "
        "and run the folds on the warm workers (follow and cancel it at /runs/{run_id})",
    )
