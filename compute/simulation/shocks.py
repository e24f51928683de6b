"""Black-swan and liquidity shocks applied to generated price returns, and leverage with a
liquidation threshold: one time step for a vector of paths (see :mod:`compute.simulation.paths`).

Order inside step ``t`` of a path, with ``r`` the generated return of the (unlevered)
strategy (definitions also in ``docs/risk-simulation.md``):

1. **volatility spike**: a spike starts when scheduled (``spike_at``) or, per path, with
   probability ``spike_prob``; it lasts ``spike_len`` steps (a start inside a running spike
   restarts the count); while it runs ``r <- r * spike_mult``.
2. **gap move**: scheduled (``gap_at``) or, per path, with probability ``gap_prob``:
   ``r <- (1 + r) * (1 + gap_size) - 1`` (compounded on top of the step's return).
3. **funding squeeze**: a window of ``funding_len`` steps, scheduled (``funding_at``) or
   started per path with probability ``funding_prob``; while it runs the position pays
   ``funding_rate`` per step on its notional: cost ``leverage * exposure * funding_rate``.
4. **stress windows** are the steps with a running spike, a gap, a running squeeze, or inside
   an explicit ``stress`` window; in them trading costs ``cost_per_turnover`` per unit of
   turnover, ``turnover`` units per step, on the levered notional:
   cost ``leverage * turnover * cost_per_turnover``.
5. **leverage**: the equity return is ``leverage * r - costs`` (constant leverage, rebalanced
   every step). **Liquidation**: with maintenance margin ``m > 0``, the position is
   liquidated when the equity after the step falls below ``m`` times the notional,
   ``1 + leverage * r - costs < m * leverage * (1 + r)``; the equity left then loses
   ``liquidation_penalty`` (a fraction) and stays flat for the rest of the horizon.
   Equity never goes below zero (a loss beyond it is capped at -100 %).

Random onsets use slots 2 (gap: high word, spike: low word) and 3 (funding) of the step's
draws, so switching a shock on never changes the generated returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from compute.core.errors import SpecError
from compute.core.jaxconf import jax, jnp
from compute.simulation import prng

Array = jax.Array
Field = Any  # a pytree leaf: a jax array in kernels, a NumPy array or scalar on the host


@dataclass(frozen=True)
class Flags:
    """Which shocks are on (static: the kernel compiles only the parts in use)."""

    spike: bool = False
    gap: bool = False
    funding: bool = False
    stress: bool = False  # explicit stress windows or stressed costs in use
    costs: bool = False
    liquidation: bool = False
    random: bool = False  # any random onset
    levered: bool = False  # leverage != 1

    @property
    def any(self) -> bool:
        """Whether the step does anything (else the equity return is the generated one)."""
        return any((self.spike, self.gap, self.funding, self.stress, self.costs,
                    self.liquidation, self.levered))  # fmt: skip


@dataclass(frozen=True)
class ShockSpec:
    """A validated shock specification (host side); steps are 0-based within the horizon."""

    leverage: float = 1.0
    maintenance_margin: float = 0.0
    liquidation_penalty: float = 0.0
    gap_size: float = 0.0
    gap_prob: float = 0.0
    gap_at: tuple[int, ...] = ()
    spike_mult: float = 1.0
    spike_len: int = 0
    spike_prob: float = 0.0
    spike_at: tuple[int, ...] = ()
    funding_rate: float = 0.0
    funding_len: int = 0
    funding_prob: float = 0.0
    funding_at: tuple[int, ...] = ()
    exposure: float = 1.0
    cost_per_turnover: float = 0.0
    turnover: float = 1.0
    stress: tuple[tuple[int, int], ...] = field(default=())  # [start, end) windows

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (0 < self.leverage <= 125, "leverage must be in (0, 125]"),
            (0 <= self.maintenance_margin < 1, "maintenance_margin must be in [0, 1)"),
            (0 <= self.liquidation_penalty <= 1, "liquidation_penalty must be in [0, 1]"),
            (-1 < self.gap_size <= 10, "gap_size must be in (-1, 10] (a fraction of price)"),
            (0 <= self.gap_prob <= 1, "gap_prob must be in [0, 1]"),
            (0 <= self.spike_mult <= 100, "spike_mult must be in [0, 100]"),
            (self.spike_len >= 0, "spike_len must be >= 0"),
            (0 <= self.spike_prob <= 1, "spike_prob must be in [0, 1]"),
            (-1 < self.funding_rate < 1, "funding_rate must be in (-1, 1) per step"),
            (self.funding_len >= 0, "funding_len must be >= 0"),
            (0 <= self.funding_prob <= 1, "funding_prob must be in [0, 1]"),
            (0 <= self.exposure <= 10, "exposure must be in [0, 10]"),
            (0 <= self.cost_per_turnover < 1, "cost_per_turnover must be in [0, 1)"),
            (0 <= self.turnover <= 100, "turnover must be in [0, 100] per step"),
        ]
        for ok, message in checks:
            if not ok:
                raise SpecError(message)
        if (self.spike_at or self.spike_prob > 0) and self.spike_len == 0:
            raise SpecError("a volatility spike needs spike_len >= 1")
        if (self.funding_at or self.funding_prob > 0) and self.funding_len == 0:
            raise SpecError("a funding squeeze needs funding_len >= 1")
        for start, end in self.stress:
            if not 0 <= start < end:
                raise SpecError(f"stress window [{start}, {end}) must have 0 <= start < end")

    def flags(self) -> Flags:
        spike = bool(self.spike_at or self.spike_prob > 0)
        gap = bool(self.gap_at or self.gap_prob > 0)
        funding = bool(self.funding_at or self.funding_prob > 0)
        return Flags(
            spike=spike,
            gap=gap,
            funding=funding,
            stress=bool(self.stress),
            costs=self.cost_per_turnover > 0 and self.turnover > 0,
            liquidation=self.maintenance_margin > 0,
            random=self.gap_prob > 0 or self.spike_prob > 0 or self.funding_prob > 0,
            levered=self.leverage != 1.0,
        )

    def check_horizon(self, horizon: int) -> None:
        """Every scheduled step must fall inside the horizon."""
        for name in ("gap_at", "spike_at", "funding_at"):
            bad = [s for s in getattr(self, name) if not 0 <= s < horizon]
            if bad:
                raise SpecError(f"{name} steps must be in [0, {horizon - 1}], got {bad}")
        for start, _ in self.stress:
            if start >= horizon:
                raise SpecError(f"stress window starting at {start} is beyond the horizon")

    def params(self, horizon: int) -> ShockParams:
        """Kernel parameters; schedules become per-step masks of length ``horizon``."""
        self.check_horizon(horizon)

        def mask(steps: Sequence[int]) -> np.ndarray:
            m = np.zeros(horizon, dtype=bool)
            m[list(steps)] = True
            return m

        stress = np.zeros(horizon, dtype=bool)
        for start, end in self.stress:
            stress[start : min(end, horizon)] = True
        f = np.float64
        return ShockParams(
            leverage=f(self.leverage),
            maintenance=f(self.maintenance_margin),
            penalty=f(self.liquidation_penalty),
            gap_size=f(self.gap_size),
            gap_prob=f(self.gap_prob),
            gap_at=mask(self.gap_at),
            spike_mult=f(self.spike_mult),
            spike_len=np.int32(self.spike_len),
            spike_prob=f(self.spike_prob),
            spike_at=mask(self.spike_at),
            funding_cost=f(self.leverage * self.exposure * self.funding_rate),
            funding_len=np.int32(self.funding_len),
            funding_prob=f(self.funding_prob),
            funding_at=mask(self.funding_at),
            stress_cost=f(self.leverage * self.turnover * self.cost_per_turnover),
            stress_at=stress,
        )

    def describe(self) -> dict[str, Any]:
        """What was used, for the result (only the shocks that are on)."""
        fl = self.flags()
        out: dict[str, Any] = {"leverage": self.leverage}
        if fl.liquidation:
            out["liquidation"] = {
                "maintenance_margin": self.maintenance_margin,
                "penalty": self.liquidation_penalty,
            }
        if fl.gap:
            out["gap"] = {"size": self.gap_size, "prob": self.gap_prob, "at": list(self.gap_at)}
        if fl.spike:
            out["vol_spike"] = {
                "mult": self.spike_mult,
                "len": self.spike_len,
                "prob": self.spike_prob,
                "at": list(self.spike_at),
            }
        if fl.funding:
            out["funding_squeeze"] = {
                "rate": self.funding_rate,
                "len": self.funding_len,
                "prob": self.funding_prob,
                "at": list(self.funding_at),
                "exposure": self.exposure,
            }
        if fl.costs:
            out["stress_costs"] = {
                "cost_per_turnover": self.cost_per_turnover,
                "turnover": self.turnover,
                "windows": [list(w) for w in self.stress],
            }
        return out


class ShockParams(NamedTuple):
    """Array inputs of :func:`step` (a pytree)."""

    leverage: Field
    maintenance: Field
    penalty: Field
    gap_size: Field
    gap_prob: Field
    gap_at: Field  # (H,) bool
    spike_mult: Field
    spike_len: Field
    spike_prob: Field
    spike_at: Field  # (H,) bool
    funding_cost: Field  # leverage * exposure * funding_rate
    funding_len: Field
    funding_prob: Field
    funding_at: Field  # (H,) bool
    stress_cost: Field  # leverage * turnover * cost_per_turnover
    stress_at: Field  # (H,) bool


Carry = tuple[Array, Array, Array]  # spike steps left, funding steps left, liquidated


def init(n_paths: int) -> Carry:
    z = jnp.zeros(n_paths, jnp.int32)
    return z, z, jnp.zeros(n_paths, bool)


def step(
    carry: Carry, t: Array, streams: Array, r: Array, p: ShockParams, *, flags: Flags
) -> tuple[Carry, Array]:
    """``(carry, equity_return)`` of every path at step ``t`` from its generated return
    (which the generators keep >= -1: with no shock and no leverage it passes unchanged)."""
    if not flags.any:
        return carry, r
    spike_left, fund_left, liquidated = carry
    if flags.random:
        w2 = prng.draw(streams, t, 2)
        u_gap, u_spike = prng.hi_uniform(w2), prng.lo_uniform(w2)
        u_fund = prng.hi_uniform(prng.draw(streams, t, 3))
    stressed = jnp.zeros(r.shape, bool) | p.stress_at[t]
    if flags.spike:
        start = p.spike_at[t] | (u_spike < p.spike_prob) if flags.random else p.spike_at[t]
        spike_left = jnp.where(start, p.spike_len, spike_left)
        in_spike = spike_left > 0
        r = jnp.where(in_spike, r * p.spike_mult, r)
        spike_left = jnp.maximum(spike_left - 1, 0)
        stressed = stressed | in_spike
    if flags.gap:
        gap = p.gap_at[t] | (u_gap < p.gap_prob) if flags.random else p.gap_at[t]
        r = jnp.where(gap, (1.0 + r) * (1.0 + p.gap_size) - 1.0, r)
        stressed = stressed | gap
    cost = jnp.zeros_like(r)
    if flags.funding:
        start = p.funding_at[t] | (u_fund < p.funding_prob) if flags.random else p.funding_at[t]
        fund_left = jnp.where(start, p.funding_len, fund_left)
        in_fund = fund_left > 0
        cost = jnp.where(in_fund, p.funding_cost, 0.0)
        fund_left = jnp.maximum(fund_left - 1, 0)
        stressed = stressed | in_fund
    if flags.costs:
        cost = cost + jnp.where(stressed, p.stress_cost, 0.0)
    eq_ret = p.leverage * r - cost
    if flags.liquidation:
        hit = ~liquidated & (1.0 + eq_ret < p.maintenance * p.leverage * jnp.maximum(1.0 + r, 0))
        after = jnp.maximum(1.0 + eq_ret, 0.0) * (1.0 - p.penalty) - 1.0
        eq_ret = jnp.where(liquidated, 0.0, jnp.where(hit, after, eq_ret))
        liquidated = liquidated | hit
    return (spike_left, fund_left, liquidated), jnp.maximum(eq_ret, -1.0)
