"""The entry/exit state machine of a spec: one per-bar step, run as one ``lax.scan``.

Timing (the engine's, :mod:`compute.backtest.engine`): the target decided at the close of bar
``t`` fills at the open of bar ``t + 1``. The machine's state during bar ``t`` is the side
decided at ``t - 1`` (the position held in ``t``), the fill price of its entry, the running
extreme since the fill and the stop distances. At the close of bar ``t``, in this order:

1. **Fill.** A side entered at the close of ``t - 1`` filled at ``open[t]``: that is its entry
   price and the start of its extreme.
2. **Stops** (only while a position is held in bar ``t``, the fill bar included), from bar
   ``t``'s high and low, known at its close:

   * stop-loss: long when ``low[t] <= entry - d``, short when ``high[t] >= entry + d``;
   * take-profit: long when ``high[t] >= entry + d``, short when ``low[t] <= entry - d``;
   * trailing stop: long when ``low[t] <= peak - d`` where ``peak`` is the highest price since
     the fill *before* bar ``t`` (the fill price, then earlier highs; the order of bar ``t``'s
     own high and low is unknown, so its high only raises the peak for later bars); short
     mirrored with the lowest low;

   with ``d = pct x entry`` (stop-loss, take-profit; ``pct x peak`` for the trailing stop) or
   ``d = atr_multiple x ATR(n)`` at the close of the entry decision bar, fixed for the trade.
   A triggered stop is **decided at the close of bar t and fills at the open of t + 1**, like
   every other target change (a gap through the stop fills at that open, not at the stop
   price: the engine trades only at opens). Stop-loss wins over trailing stop over take-profit
   in the reported reason when several trigger on one bar.
3. **Exits.** A held long exits on its stop, on ``long_exit``, or on an unambiguous opposite
   entry (``short_entry`` and not ``long_entry``); shorts mirrored.
4. **Entries.** Once flat (before or after this bar's exits) and from bar ``warmup`` on:
   long on ``long_entry``, short on ``short_entry``; both at once cancel (stay flat). A side
   that exited on this bar is not re-entered on the same bar; the opposite side may be (a
   reversal: the engine turns the position at the next open).

The target is ``long_weight`` while long, ``-short_weight`` while short, 0 when flat; exit
reasons are :data:`REASONS` codes. Rules that are unknown (three-valued logic) never fire.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from compute.core.jaxconf import F64, jax, jnp

Array = jax.Array

NONE, RULE, STOP_LOSS, TAKE_PROFIT, TRAILING, REVERSE = 0, 1, 2, 3, 4, 5
REASONS = {
    NONE: "none",
    RULE: "exit_rule",
    STOP_LOSS: "stop_loss",
    TAKE_PROFIT: "take_profit",
    TRAILING: "trailing_stop",
    REVERSE: "opposite_entry",
}
#: stop kinds: static per compiled machine
OFF, PCT, ATR = 0, 1, 2
STOPS = ("stop_loss", "take_profit", "trailing_stop")


class State(NamedTuple):
    side: Array  # -1 / 0 / 1 held during the bar (decided at the previous close)
    entry: Array  # fill price of the current trade
    ext: Array  # running extreme since the fill (before the current bar)
    d_sl: Array  # stop distances in price units
    d_tp: Array
    d_tr: Array
    fresh: Array  # 1.0 when the side was entered at the previous close (fills at this open)


class Bar(NamedTuple):
    open: Array
    high: Array
    low: Array
    atr_sl: Array
    atr_tp: Array
    atr_tr: Array
    long_entry: Array  # bool
    long_exit: Array
    short_entry: Array
    short_exit: Array
    ok: Array  # bool: at or past the warm-up


class Params(NamedTuple):
    long_weight: Array
    short_weight: Array
    sl: Array  # stop values (pct fraction or ATR multiple)
    tp: Array
    tr: Array


def flat_state(shape: Sequence[int] = ()) -> State:
    """The state before the first bar (and the guess for a segment's entry state)."""
    z = jnp.zeros(tuple(shape), F64)
    return State(z, z, z, z, z, z, z)


def step(
    s: State, b: Bar, p: Params, kinds: tuple[int, int, int]
) -> tuple[State, tuple[Array, Array]]:
    """One bar (elementwise: scalars, or lanes of many series / parameter sets).

    Returns the next state and ``(target, reason)`` decided at this bar's close.
    """
    k_sl, k_tp, k_tr = kinds
    stops = (k_sl, k_tp, k_tr) != (OFF, OFF, OFF)  # without stops: side is the only state
    fresh = s.fresh > 0.0
    entry = jnp.where(fresh, b.open, s.entry) if k_sl != OFF or k_tp != OFF else s.entry
    ext = jnp.where(fresh, b.open, s.ext) if k_tr != OFF else s.ext
    d_sl = jnp.where(fresh, p.sl * b.open, s.d_sl) if k_sl == PCT else s.d_sl
    d_tp = jnp.where(fresh, p.tp * b.open, s.d_tp) if k_tp == PCT else s.d_tp
    held_long, held_short = s.side > 0.0, s.side < 0.0
    false = jnp.zeros(jnp.shape(held_long), bool)
    hit_sl = hit_tp = hit_tr = false
    if k_sl != OFF:
        hit_sl = (held_long & (b.low <= entry - d_sl)) | (held_short & (b.high >= entry + d_sl))
    if k_tp != OFF:
        hit_tp = (held_long & (b.high >= entry + d_tp)) | (held_short & (b.low <= entry - d_tp))
    if k_tr != OFF:
        d_tr = p.tr * ext if k_tr == PCT else s.d_tr
        hit_tr = (held_long & (b.low <= ext - d_tr)) | (held_short & (b.high >= ext + d_tr))
    if k_tr != OFF:
        ext = jnp.where(held_long, jnp.maximum(ext, b.high), jnp.where(held_short,
                        jnp.minimum(ext, b.low), ext))  # fmt: skip
    by_rule = (held_long & b.long_exit) | (held_short & b.short_exit)
    opposite = (held_long & b.short_entry & ~b.long_entry) | (
        held_short & b.long_entry & ~b.short_entry
    )
    stopped = hit_sl | hit_tp | hit_tr
    exiting = stopped | by_rule | opposite
    flat = ~(held_long | held_short) | exiting
    go_long = flat & b.ok & b.long_entry & ~(exiting & held_long)
    go_short = flat & b.ok & b.short_entry & ~(exiting & held_short)
    base = jnp.where(exiting, 0.0, s.side)
    side = jnp.where(go_long & ~go_short, 1.0, jnp.where(go_short & ~go_long, -1.0, base))
    entered = (side != 0.0) & (side != s.side)
    d_sl = jnp.where(entered, p.sl * b.atr_sl, d_sl) if k_sl == ATR else d_sl
    d_tp = jnp.where(entered, p.tp * b.atr_tp, d_tp) if k_tp == ATR else d_tp
    d_tr_next = jnp.where(entered, p.tr * b.atr_tr, s.d_tr) if k_tr == ATR else s.d_tr
    reason = jnp.where(
        hit_sl, STOP_LOSS, jnp.where(hit_tr, TRAILING, jnp.where(hit_tp, TAKE_PROFIT,
        jnp.where(by_rule, RULE, jnp.where(opposite, REVERSE, NONE)))),
    )  # fmt: skip
    target = jnp.where(side > 0.0, p.long_weight, jnp.where(side < 0.0, -p.short_weight, 0.0))
    state = State(
        side, entry, ext, d_sl, d_tp, d_tr_next, entered.astype(F64) if stops else s.fresh
    )
    return state, (target + 0.0, reason.astype(jnp.int8))
