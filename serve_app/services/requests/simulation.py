"""The request of a stress simulation (``POST /risk/simulate``, ``squall simulate``).

Caps (paths, horizon, path-steps, source length) are checked by the model itself, so nothing
is computed or submitted for a request beyond them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app.services.requests.backtest import BacktestRunRequest

MAX_PATHS = 10_000_000
MAX_HORIZON = 3_650
MAX_PATH_STEPS = 5_000_000_000  # paths x horizon of one request (~10 s of kernel time)
ASYNC_ABOVE = 1_000_000_000  # path-steps above which "auto" answers 202 and runs in background
MAX_SOURCE = 1_000_000  # returns in a source series
MIN_SOURCE = 30
MAX_SCHEDULED = 64


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BootstrapSpec(_Body):
    """Block-bootstrap generator (``generator: "bootstrap"``)."""

    kind: Literal["circular", "stationary"] = Field(
        "circular",
        description="circular: blocks of exactly block_length; stationary: geometric block "
        "lengths with mean block_length (Politis-Romano)",
    )
    block_length: float | None = Field(
        None,
        ge=1,
        le=10_000,
        description="block length in bars (mean length for stationary); omitted: "
        "Politis-White automatic choice for the kind",
        examples=[None],
    )
    regime_weighting: Literal["none", "current", "mix"] = Field(
        "none",
        description="none: block starts uniform; current: blocks only from bars in the "
        "current volatility regime; mix: blocks from each regime with the shares of regime_mix",
    )
    regime_mix: dict[Literal["low", "normal", "high"], float] | None = Field(
        None,
        description="with regime_weighting=mix: share of blocks drawn from each volatility "
        "regime (normalised)",
        examples=[{"low": 0.2, "normal": 0.3, "high": 0.5}],
    )
    vol_scaling: bool = Field(
        False,
        description="multiply each block by sigma_now / sigma_block (RMS of the block's own "
        "returns, block_length bars from its start)",
    )
    sigma_now: float | None = Field(
        None,
        gt=0,
        le=10,
        description="per-bar volatility blocks are scaled to; omitted: RMS of the last "
        "now_window source returns",
    )
    now_window: int = Field(30, ge=2, le=10_000, description="bars behind the default sigma_now")


class RegimeSpec(_Body):
    """Regime-switching generator (``generator: "regime_switching"``): an HMM fitted to the
    source, simulated with heavy tails and GARCH-type clustering."""

    n_states: int = Field(2, ge=2, le=4, description="number of regimes of the HMM")
    emission: Literal["gaussian", "student_t"] = Field(
        "student_t", description="emission law of each regime in the fit"
    )
    restarts: int = Field(4, ge=1, le=16, description="EM starts (the best is kept)")
    tail_df: float | None = Field(
        5.0,
        gt=2,
        le=1000,
        description="Student-t degrees of freedom of simulated innovations when the fit is "
        "gaussian (null: normal); a student_t fit uses its fitted df",
    )
    garch_alpha: float = Field(0.05, ge=0, lt=1, description="GARCH(1,1) alpha of the clustering")
    garch_beta: float = Field(0.90, ge=0, lt=1, description="GARCH(1,1) beta of the clustering")

    @model_validator(mode="after")
    def _stationary(self) -> RegimeSpec:
        if self.garch_alpha + self.garch_beta >= 1:
            raise ValueError("garch_alpha + garch_beta must be < 1")
        return self


class ShocksSpec(_Body):
    """Black-swan and liquidity shocks (steps are 0-based within the horizon)."""

    leverage: float = Field(1.0, gt=0, le=125, description="constant leverage on the strategy")
    maintenance_margin: float = Field(
        0.0, ge=0, lt=1, description="liquidated when equity < this x notional (0: never)"
    )
    liquidation_penalty: float = Field(
        0.0, ge=0, le=1, description="fraction of the remaining equity lost at liquidation"
    )
    gap_size: float = Field(0.0, gt=-1, le=10, description="gap move, fraction of price")
    gap_prob: float = Field(0.0, ge=0, le=1, description="per-step probability of a gap")
    gap_at: list[int] = Field([], max_length=MAX_SCHEDULED, description="scheduled gap steps")
    spike_mult: float = Field(1.0, ge=0, le=100, description="return multiplier in a vol spike")
    spike_len: int = Field(0, ge=0, le=MAX_HORIZON, description="steps a vol spike lasts")
    spike_prob: float = Field(0.0, ge=0, le=1, description="per-step probability a spike starts")
    spike_at: list[int] = Field([], max_length=MAX_SCHEDULED, description="scheduled spikes")
    funding_rate: float = Field(
        0.0, gt=-1, lt=1, description="funding paid per step on the notional in a squeeze"
    )
    funding_len: int = Field(0, ge=0, le=MAX_HORIZON, description="steps a squeeze lasts")
    funding_prob: float = Field(0.0, ge=0, le=1, description="per-step squeeze probability")
    funding_at: list[int] = Field([], max_length=MAX_SCHEDULED, description="scheduled squeezes")
    exposure: float | None = Field(
        None,
        ge=0,
        le=10,
        description="average |position| paying funding; omitted: the "
        "backtest's mean |position|, or 1 for a returns series",
    )
    cost_per_turnover: float = Field(
        0.0, ge=0, lt=1, description="slippage + spread per unit of turnover in stress windows"
    )
    turnover: float | None = Field(
        None,
        ge=0,
        le=100,
        description="turnover per step in stress windows; omitted: the "
        "backtest's mean |change of position|, or 1 (a full unwind) for a returns series",
    )
    stress_windows: list[tuple[int, int]] = Field(
        [], max_length=MAX_SCHEDULED, description="extra stress windows [start, end) in steps"
    )


class SimulateRequest(_Body):
    """A stress simulation of one strategy's returns."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "returns": [0.01, -0.02, 0.005, 0.013, -0.007] * 20,
                    "horizon": 365,
                    "paths": 100_000,
                    "seed": 7,
                    "generator": "bootstrap",
                    "bootstrap": {"kind": "stationary", "vol_scaling": True},
                    "shocks": {
                        "leverage": 2,
                        "maintenance_margin": 0.05,
                        "gap_size": -0.3,
                        "gap_prob": 0.002,
                    },
                },
                {
                    "run_id": "8f0c1f7e-3c1e-4bd6-9a43-2f1f5b9f2e10",
                    "horizon": 90,
                    "paths": 10_000,
                    "generator": "regime_switching",
                    "regime": {"n_states": 3},
                },
            ]
        },
    )

    returns: list[float] | None = Field(
        None,
        description="source: per-bar simple returns of the strategy, oldest first",
        max_length=MAX_SOURCE,
    )
    run_id: str | None = Field(
        None, description="source: a recorded backtest run; it is re-run from its request"
    )
    backtest: BacktestRunRequest | None = Field(
        None, description="source: a strategy spec, backtested first (as POST /backtest/run)"
    )
    periods_per_year: float | None = Field(
        None,
        gt=0,
        le=1e7,
        description="bars per year of the source (default: from the backtest's interval, else 365)",
    )
    horizon: int = Field(365, ge=1, le=MAX_HORIZON, description="steps (bars) of every path")
    paths: int = Field(10_000, ge=1, le=MAX_PATHS, description="number of Monte Carlo paths")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed; same request, same bits")
    generator: Literal["bootstrap", "regime_switching"] = Field(
        "bootstrap", description="path generator"
    )
    bootstrap: BootstrapSpec = Field(
        default_factory=BootstrapSpec, description="block-bootstrap settings"
    )
    regime: RegimeSpec = Field(
        default_factory=RegimeSpec, description="regime-switching settings (HMM, tails, GARCH)"
    )
    shocks: ShocksSpec = Field(
        default_factory=ShocksSpec, description="black-swan and liquidity shocks, leverage"
    )
    ruin_threshold: float = Field(
        0.5, gt=0, le=1, description="ruined when equity falls below this fraction of the start"
    )
    fan_points: int = Field(52, ge=1, le=MAX_HORIZON, description="points of the equity fan")
    mode: Literal["auto", "sync", "async"] = Field(
        "auto",
        description=f"auto: asynchronous (202) above {ASYNC_ABOVE:.0e} path-steps; sync: wait "
        "for the result; async: always 202 with a run id",
    )
    tasks: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Ray tasks to spread the chunks over (results do not "
        "depend on it); omitted: chosen from the cluster's CPUs",
    )

    @model_validator(mode="after")
    def _one_source_and_caps(self) -> SimulateRequest:
        given = [n for n in ("returns", "run_id", "backtest") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one source of returns: returns, run_id or backtest (got {given})"
            )
        if self.paths * self.horizon > MAX_PATH_STEPS:
            raise ValueError(
                f"paths x horizon = {self.paths * self.horizon:,} exceeds the cap of "
                f"{MAX_PATH_STEPS:,} path-steps; ask for fewer paths or a shorter horizon"
            )
        return self
