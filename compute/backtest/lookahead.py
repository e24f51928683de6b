"""Look-ahead and recursion checks for any strategy: recompute on cut histories, compare.

Two checks, as freqtrade's ``lookahead-analysis`` and ``recursive-analysis`` do, but automatic
and on the run's own candles:

* **Look-ahead** - the positions of the first ``k`` bars recomputed from those ``k`` bars only
  must equal the full run's first ``k`` positions, for several cuts ``k`` (``T - 1``, which
  catches "the next bar's close", and cuts past the warm-up chosen among two compiled lengths
  so a jitted strategy compiles at most once more: see :func:`default_cuts`). Any
  difference is flagged (exact comparison: a causal strategy gets bitwise the same inputs up to
  each bar) with the first bar that changed and the cut that revealed it.
* **Recursion** - positions computed from histories that *start* later (offsets ``s``) must
  equal the full run's on the bars where both have settled: from ``s + settle`` on, with
  ``settle = settle_spans x (warmup + 1)`` bars past the later start. A recursion that forgets
  its start (an EMA of span ``n`` forgets to ``(1 - 2/(n+1))^(10n)`` ~ 2e-9 in ten spans,
  Wilder's ``1/n`` smoothing to ~5e-5) passes; one that remembers it (a running maximum since
  the first bar, a cumulative sum, an unseeded state) is flagged when the share of compared
  bars whose positions differ exceeds ``tolerance``.

:func:`check_strategy` returns a :class:`StrategyCheck` (JSON-ready with :meth:`as_dict`)
that the service stores with the run; ``passed`` is False when either check is flagged.
Pure: the strategy is a function of a frame, called on slices of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from compute.core.errors import SpecError
from compute.core.inputs import bucket

Frame = Mapping[str, np.ndarray]
PositionsOf = Callable[[Frame], np.ndarray]

DEFAULT_CUTS = 5
DEFAULT_OFFSETS = (0.2, 0.25)  # later starts, about these fractions of the history
SETTLE_SPANS = 10
TOLERANCE = 0.001  # share of compared bars whose positions may differ (recursion check)
MIN_COMPARED = 20  # fewer settled bars than this: the recursion check is not run


@dataclass(frozen=True)
class LookaheadResult:
    """flagged: some past position changed when later bars were added; ``first_bar`` the
    earliest such bar (index in the full history), ``cut`` the history length that showed it."""

    flagged: bool
    cuts: list[int]
    first_bar: int | None = None
    cut: int | None = None
    changed_bars: int = 0


@dataclass(frozen=True)
class RecursionResult:
    """flagged: positions depend on where the history starts beyond ``tolerance`` (share of
    compared bars that differ); ``checked`` False when the history was too short to compare."""

    flagged: bool
    checked: bool
    offsets: list[int]
    settle: int
    tolerance: float
    compared_bars: int = 0
    differing_bars: int = 0
    share: float = 0.0
    first_bar: int | None = None
    offset: int | None = None


@dataclass(frozen=True)
class StrategyCheck:
    """Both checks of one strategy on one history."""

    passed: bool
    lookahead: LookaheadResult
    recursion: RecursionResult
    bars: int
    warmup: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _slice(frame: Frame, lo: int, hi: int) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[lo:hi] for k, v in frame.items()}


def _differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise "not the same value" (NaN equals NaN)."""
    return ~((a == b) | (np.isnan(a) & np.isnan(b)))


def same_compiled_lengths(length: int) -> tuple[int, int]:
    """The range ``[lo, hi]`` of history lengths padded to the same compiled length as
    ``length`` (:func:`compute.core.inputs.bucket`): cutting within it costs no compilation."""
    target = bucket(length)
    lo, hi = 1, length
    while lo < hi:  # the smallest length with the same bucket (bucket is non-decreasing)
        mid = (lo + hi) // 2
        if bucket(mid) < target:
            lo = mid + 1
        else:
            hi = mid
    top = length
    while bucket(top + 1) == target:
        top += 1
    return lo, top


def default_cuts(length: int, warmup: int, count: int = DEFAULT_CUTS) -> list[int]:
    """History lengths for the look-ahead check: ``length - 1`` (catches "the next bar"),
    then cuts spread over two compiled lengths - the full one's and the one around 3/4 of the
    history - so the jitted strategies compile at most once more. All past the warm-up."""
    low = warmup + 2
    if length - 1 <= low:
        return [length - 1] if length > 1 else []
    top_lo, _ = same_compiled_lengths(length)
    mid_lo, mid_hi = same_compiled_lengths(max(low, (3 * length) // 4))
    picks = {length - 1}
    for lo, hi, n in ((max(top_lo, low), length - 1, count - count // 2),
                      (max(mid_lo, low), min(mid_hi, length - 1), count // 2)):  # fmt: skip
        if lo <= hi:
            picks.update(np.linspace(lo, hi, n + 1)[:-1].round().astype(int).tolist())
    return sorted(picks)


def default_offsets(length: int, count: int = len(DEFAULT_OFFSETS)) -> list[int]:
    """Later starts for the recursion check whose remaining histories share the compiled
    length around 3/4 of the history (the look-ahead check's), so nothing compiles again."""
    lo, hi = same_compiled_lengths(max(3, (3 * length) // 4))
    hi = min(hi, length - 1)
    remaining = np.linspace(lo, hi, count).round().astype(int)
    return sorted({length - int(r) for r in remaining if 0 < length - int(r) < length})


def check_lookahead(
    positions_of: PositionsOf, frame: Frame, full: np.ndarray, cuts: Sequence[int]
) -> LookaheadResult:
    """Recompute on ``frame[:k]`` for each cut ``k`` and compare with ``full[:k]``."""
    first: int | None = None
    at: int | None = None
    changed = 0
    for k in sorted(set(int(c) for c in cuts)):
        part = np.asarray(positions_of(_slice(frame, 0, k)), dtype=np.float64)
        diff = _differs(part, full[:k])
        if diff.any():
            changed = max(changed, int(diff.sum()))
            bar = int(np.argmax(diff))
            if first is None or bar < first:
                first, at = bar, k
    return LookaheadResult(first is not None, sorted(set(int(c) for c in cuts)), first, at,
                           changed)  # fmt: skip


def check_recursion(
    positions_of: PositionsOf,
    frame: Frame,
    full: np.ndarray,
    offsets: Sequence[int],
    settle: int,
    tolerance: float,
) -> RecursionResult:
    """Recompute on ``frame[s:]`` for each offset ``s`` and compare from ``s + settle`` on."""
    length = full.shape[0]
    compared = differing = 0
    first: int | None = None
    where: int | None = None
    used = []
    for s in sorted(set(int(o) for o in offsets if 0 < int(o) < length)):
        start = s + settle
        if length - start < MIN_COMPARED:
            continue
        used.append(s)
        part = np.asarray(positions_of(_slice(frame, s, length)), dtype=np.float64)
        diff = _differs(part[start - s :], full[start:])
        compared += diff.size
        differing += int(diff.sum())
        if diff.any() and (first is None or start + int(np.argmax(diff)) < first):
            first, where = start + int(np.argmax(diff)), s
    share = differing / compared if compared else 0.0
    return RecursionResult(
        flagged=bool(compared) and share > tolerance, checked=bool(compared), offsets=used,
        settle=settle, tolerance=tolerance, compared_bars=compared, differing_bars=differing,
        share=share, first_bar=first, offset=where,
    )  # fmt: skip


def check_strategy(
    positions_of: PositionsOf,
    frame: Frame,
    warmup: int,
    *,
    cuts: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
    settle_spans: int = SETTLE_SPANS,
    tolerance: float = TOLERANCE,
    full: np.ndarray | None = None,
) -> StrategyCheck:
    """Run both checks of ``positions_of`` (frame -> target weights) on ``frame``.

    ``warmup`` is the strategy's declared warm-up (bars). ``full`` may pass the positions of the
    whole frame when the caller has them already (the run's own). Defaults: ``T - 1`` and five
    cuts past the warm-up (:func:`default_cuts`); two later starts near 20-25 % of the history
    (:func:`default_offsets`); ``settle = 10 x (warmup + 1)`` bars; tolerance 0.1 % of the
    compared bars.
    """
    length = int(np.asarray(frame["close"]).shape[0])
    if length < 3:
        raise SpecError(f"the checks need at least 3 bars, got {length}")
    if not 0.0 <= tolerance < 1.0 or settle_spans < 1:
        raise SpecError("tolerance must be in [0, 1) and settle_spans >= 1")
    base = full if full is not None else positions_of(frame)
    base = np.asarray(base, dtype=np.float64)
    cut_list = list(cuts) if cuts is not None else default_cuts(length, warmup)
    off_list = list(offsets) if offsets is not None else default_offsets(length)
    settle = settle_spans * (int(warmup) + 1)
    look = check_lookahead(positions_of, frame, base, cut_list)
    rec = check_recursion(positions_of, frame, base, off_list, settle, tolerance)
    notes = []
    if not rec.checked:
        notes.append(
            f"recursion check skipped: fewer than {MIN_COMPARED} bars past the later starts "
            f"plus the settle window ({settle} bars)"
        )
    return StrategyCheck(not (look.flagged or rec.flagged), look, rec, length, int(warmup), notes)


def check_plugin(
    plugin: Any, frame: Frame, params: Mapping[str, Any] | None = None, **options: Any
) -> StrategyCheck:
    """:func:`check_strategy` of a :class:`compute.backtest.plugins.StrategyPlugin`."""

    def positions_of(f: Frame) -> np.ndarray:
        return np.asarray(plugin.positions(f, params), dtype=np.float64)

    return check_strategy(positions_of, frame, plugin.warmup(params), **options)
