"""The small-int codes of regime labels and positions (numpy ``int8`` arrays).

Kept free of JAX so an API can render label names without importing the kernels.
``-1`` always means *missing* (warm-up: the label is not defined yet); a position, by
contrast, is never missing: a signal is flat (``0``) until it is defined.
"""

from __future__ import annotations

from enum import IntEnum


class VolRegime(IntEnum):
    """Volatility regime of a bar (see ``docs/indicators.md``, *vol_regime*)."""

    MISSING = -1
    LOW = 0
    NORMAL = 1
    HIGH = 2


class TrendRegime(IntEnum):
    """Trend regime of a bar (see ``docs/indicators.md``, *trend*)."""

    MISSING = -1
    DOWN = 0
    RANGE = 1
    UP = 2


class Position(IntEnum):
    """A signal's target position at the close of a bar."""

    SHORT = -1
    FLAT = 0
    LONG = 1


# The volatility regime a signal with ``vol_gate=1`` consults (compute.indicators.signals), and the
# regimes it may hold a position in. Its warm-up, n + lookback bars, extends the signal's.
GATE_N = 20
GATE_LOOKBACK = 250
GATE_Z = 0.6745  # the standard-normal quartile
GATE_ALLOWED = (VolRegime.LOW, VolRegime.NORMAL)
GATE_WARMUP = GATE_N + GATE_LOOKBACK
