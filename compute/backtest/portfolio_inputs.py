"""Portfolio inputs: coins aligned on one timeline, target weights, rebalancing schedules.

See :mod:`compute.backtest.portfolio` for the rules (alignment without invented bars, targets
read at decision bars, normalisation to a gross cap); this module builds its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from compute.core import inputs
from compute.core.errors import InputDataError, SpecError

MAX_COINS = 200
SCHEDULES = ("bars", "weekly", "monthly")
SECONDS_PER_DAY = 86_400
MONDAY_EPOCH_OFFSET = 3  # 1970-01-01 was a Thursday: (days + 3) // 7 counts Monday weeks


@dataclass(frozen=True)
class Aligned:
    """Several coins on one timeline: ``(N, T)`` arrays, NaN where a coin has no bar."""

    coins: tuple[str, ...]
    ts: np.ndarray  # (T,) unix seconds
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    present: np.ndarray  # (N, T) bool
    mark: np.ndarray  # (N, T) last close at or before t (NaN before the first bar)

    def frame(self, i: int) -> dict[str, np.ndarray]:
        """Coin ``i``'s own bars (present ones only), as a strategy frame (``volume`` only
        when the coin's candles had it)."""
        keep = self.present[i]
        out = {"ts": self.ts[keep], **{k: getattr(self, k)[i, keep] for k in
                                       ("open", "high", "low", "close")}}  # fmt: skip
        volume = self.volume[i, keep]
        if not np.isnan(volume).all():
            out["volume"] = volume
        return out


def align(candles: Mapping[str, Mapping[str, npt.ArrayLike]], how: str = "union") -> Aligned:
    """Coins' candles (``{coin: {"ts", "open", "high", "low", "close"[, "volume"]}}``, each on
    its own strictly increasing timestamps) on the union or intersection of their timestamps."""
    if how not in ("union", "intersection"):
        raise SpecError(f"how must be 'union' or 'intersection', got {how!r}")
    if not candles or len(candles) > MAX_COINS:
        raise SpecError(f"a portfolio holds 1 to {MAX_COINS} coins, got {len(candles)}")
    own: dict[str, dict[str, np.ndarray]] = {}
    for coin, c in candles.items():
        try:
            o, h, lo, cl = inputs.ohlc(
                open=c["open"], high=c["high"], low=c["low"], close=c["close"]
            )
            if o.ndim != 1:
                raise InputDataError(f"one series per coin, got shape {o.shape}")
            secs = inputs.unix_seconds(c["ts"], o.shape[0])
            vol = inputs.volume("volume", c["volume"]) if c.get("volume") is not None else None
        except KeyError as exc:
            raise InputDataError(f"{coin}: missing {exc.args[0]!r}") from None
        except InputDataError as exc:
            raise InputDataError(f"{coin}: {exc}") from None
        own[coin] = {"ts": secs, "open": o, "high": h, "low": lo, "close": cl,
                     "volume": vol if vol is not None else np.full(o.shape, np.nan)}  # fmt: skip
    stamps = [v["ts"] for v in own.values()]
    if how == "union":
        ts = np.unique(np.concatenate(stamps))
    else:
        ts = stamps[0]
        for s in stamps[1:]:
            ts = np.intersect1d(ts, s)
    if ts.size < 2:
        raise InputDataError(f"the {how} of the coins' timestamps has {ts.size} bar(s)")
    n, t = len(own), ts.size
    arrays = {k: np.full((n, t), np.nan) for k in ("open", "high", "low", "close", "volume")}
    present = np.zeros((n, t), bool)
    for i, v in enumerate(own.values()):
        at = np.searchsorted(ts, v["ts"])
        inside = (at < t) & (ts[np.minimum(at, t - 1)] == v["ts"])
        for k, rows in arrays.items():
            rows[i, at[inside]] = v[k][inside]
        present[i, at[inside]] = True
    mark = _carry(arrays["close"], present)
    return Aligned(tuple(own), ts, **arrays, present=present, mark=mark)


def _carry(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Each row's last present value at or before each bar (NaN before the first)."""
    idx = np.where(present, np.arange(values.shape[1])[None, :], -1)
    idx = np.maximum.accumulate(idx, axis=1)
    out = np.take_along_axis(values, np.maximum(idx, 0), axis=1)
    return np.where(idx >= 0, out, np.nan)


# --- targets --------------------------------------------------------------------------------


def strategy_targets(aligned: Aligned, positions: Sequence[npt.ArrayLike]) -> np.ndarray:
    """``(N, T)`` targets from per-coin positions, each on the coin's own bars (what a
    strategy returns for :meth:`Aligned.frame`); carried over missing bars, 0 before listing."""
    if len(positions) != len(aligned.coins):
        raise SpecError(f"{len(positions)} position series for {len(aligned.coins)} coins")
    out = np.full(aligned.present.shape, np.nan)
    for i, pos in enumerate(positions):
        p = np.asarray(pos, dtype=np.float64)
        keep = aligned.present[i]
        if p.shape != (int(keep.sum()),):
            raise InputDataError(
                f"{aligned.coins[i]}: {p.shape[0] if p.ndim else 0} positions for "
                f"{int(keep.sum())} bars"
            )
        out[i, keep] = p
    carried = _carry(out, aligned.present)
    return np.where(np.isnan(carried), 0.0, carried)


def momentum_targets(
    aligned: Aligned, lookback: int, top_k: int, *, short_k: int = 0
) -> np.ndarray:
    """Hold the ``top_k`` coins with the highest trailing return over ``lookback`` bars at
    ``1 / top_k`` each (and short the ``short_k`` lowest at ``-1 / short_k``, when given).

    A coin ranks at ``t`` only if it has a bar at ``t`` and at ``t - lookback`` (its own
    return over the window, no invented prices); ties go to the earlier coin. Fewer eligible
    coins than ``top_k + short_k``: the longs are filled first, the shorts from what is left.
    """
    n, t = aligned.present.shape
    lookback = inputs.window("lookback", lookback)
    for name, k, low in (("top_k", top_k, 1), ("short_k", short_k, 0)):
        if isinstance(k, bool) or not isinstance(k, int) or not low <= k <= n:
            raise SpecError(f"{name} must be an integer in [{low}, {n}], got {k!r}")
    score = np.full((n, t), np.nan)
    if lookback < t:
        both = aligned.present[:, lookback:] & aligned.present[:, :-lookback]
        ratio = aligned.close[:, lookback:] / aligned.close[:, :-lookback] - 1.0
        score[:, lookback:] = np.where(both, ratio, np.nan)
    eligible = ~np.isnan(score)
    # rank: descending score, ties by coin index (stable), ineligible last
    key = np.where(eligible, -score, np.inf)
    order = np.argsort(key, axis=0, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n)[:, None].repeat(t, axis=1), axis=0)
    count = eligible.sum(axis=0)
    longs = eligible & (rank < top_k)
    shorts = eligible & (rank >= np.maximum(count - short_k, top_k)) & (short_k > 0)
    out = np.where(longs, 1.0 / top_k, 0.0)
    if short_k:
        out = np.where(shorts, -1.0 / short_k, out)
    return out


# --- schedule ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """When targets are read: ``"bars"`` every ``every`` bars (bars 0, n, 2n, ...), or the last
    bar of each UTC ``"weekly"`` (Monday-based) / ``"monthly"`` period."""

    kind: str = "bars"
    every: int = 1

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise SpecError(f"schedule must be one of {SCHEDULES}, got {self.kind!r}")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise SpecError(f"every must be a positive integer, got {self.every!r}")


def _period(ts: np.ndarray, kind: str) -> np.ndarray:
    days = np.floor_divide(ts, SECONDS_PER_DAY)
    if kind == "weekly":
        return np.floor_divide(days + MONDAY_EPOCH_OFFSET, 7)
    months = ts.astype("datetime64[s]").astype("datetime64[M]")
    return months.astype(np.int64)


def decision_bars(ts: np.ndarray, schedule: Schedule) -> np.ndarray:
    """``(T,)`` bool: the bars at whose close the targets are read."""
    length = ts.shape[0]
    if schedule.kind == "bars":
        return np.arange(length) % schedule.every == 0
    period = _period(ts, schedule.kind)
    out = np.zeros(length, bool)
    out[:-1] = period[1:] != period[:-1]
    return out


def normalise(targets: np.ndarray, max_gross: float) -> np.ndarray:
    """Scale each bar's weights down to ``max_gross`` when their gross exceeds it."""
    gross = np.abs(targets).sum(axis=0)
    scale = np.where(gross > max_gross, max_gross / np.where(gross > 0, gross, 1.0), 1.0)
    return targets * scale[None, :] + 0.0
