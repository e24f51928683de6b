"""A slow, plain-Python portfolio ledger of the rules of :mod:`compute.backtest.portfolio`.

Shares no code with the kernel: its own alignment (a sorted set of timestamps and per-coin
dicts), calendar periods from a civil-date formula, momentum ranks by sorting, and the post-cost
equity of a rebalance found by fixed-point iteration (``E' = E_o - sum c |w E' - N|``) instead
of the kernel's closed form. For tests only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Candles = Mapping[str, Mapping[str, Sequence[Any]]]


def timeline(candles: Candles) -> list[int]:
    """The union of the coins' timestamps, sorted."""
    return sorted({int(t) for c in candles.values() for t in c["ts"]})


def _bars(candles: Candles) -> dict[str, dict[int, dict[str, float]]]:
    out: dict[str, dict[int, dict[str, float]]] = {}
    for coin, c in candles.items():
        out[coin] = {
            int(c["ts"][i]): {k: float(c[k][i]) for k in ("open", "close")}
            for i in range(len(c["ts"]))
        }
    return out


def strategy_targets(candles: Candles, positions: Mapping[str, Sequence[float]]) -> dict:
    """Per coin, the target at every union bar: its own position where it has a bar, the last
    one over its gaps, 0 before its first bar."""
    out = {}
    for coin, c in candles.items():
        own = {int(t): float(p) for t, p in zip(c["ts"], positions[coin], strict=True)}
        last, row = 0.0, []
        for t in timeline(candles):
            last = own.get(t, last)
            row.append(last)
        out[coin] = row
    return out


def momentum_targets(candles: Candles, lookback: int, top_k: int, short_k: int = 0) -> dict:
    """Rank coins present at bar i and at bar i - lookback by close ratio; top_k long at
    1/top_k, then the short_k lowest of the rest short at -1/short_k."""
    ts = timeline(candles)
    bars = _bars(candles)
    coins = list(candles)
    out = {c: [0.0] * len(ts) for c in coins}
    for i in range(lookback, len(ts)):
        scores = []
        for k, coin in enumerate(coins):
            now, then = bars[coin].get(ts[i]), bars[coin].get(ts[i - lookback])
            if now is not None and then is not None:
                scores.append((-(now["close"] / then["close"] - 1.0), k, coin))
        scores.sort()
        for _, _, coin in scores[:top_k]:
            out[coin][i] = 1.0 / top_k
        rest = scores[top_k:]
        for _, _, coin in rest[len(rest) - short_k :] if short_k else []:
            out[coin][i] = -1.0 / short_k
    return out


def _civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a count of days since 1970-01-01 (the proleptic Gregorian
    calendar; H. Hinnant's civil_from_days)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _period(t: int, kind: str) -> tuple[int, int]:
    days = t // 86_400
    if kind == "monthly":
        year, month, _ = _civil(days)
        return year, month
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday: Monday = 0
    return days - weekday, 0  # the week's Monday


def run_portfolio_reference(
    candles: Candles,
    targets: Mapping[str, Sequence[float]],
    *,
    schedule: str = "bars",
    every: int = 1,
    fee_bps: Mapping[str, float] | None = None,
    slippage_bps: float = 0.0,
    max_gross: float = 1.0,
    resize: bool = True,
    funding: Mapping[str, Sequence[float]] | None = None,
    capital: float = 1.0,
) -> dict[str, Any]:
    """The ledger bar by bar; ``targets`` and ``funding`` per coin on the union timeline."""
    ts = timeline(candles)
    bars = _bars(candles)
    coins = list(candles)
    cash, units = capital, dict.fromkeys(coins, 0.0)
    in_force = dict.fromkeys(coins, 0.0)
    last_close: dict[str, float] = {}
    equity: list[float] = []
    contributions: dict[str, list[float]] = {c: [] for c in coins}
    pending: dict[str, float] | None = None
    rate = {c: ((fee_bps or {}).get(c, 0.0) + slippage_bps) * 1e-4 for c in coins}
    prev_equity = capital
    for i, t in enumerate(ts):
        # prices of this bar: its own, or the last close for a coin without a bar
        p_open = {c: bars[c][t]["open"] if t in bars[c] else last_close.get(c, 0.0)
                  for c in coins}  # fmt: skip
        p_close = {c: bars[c][t]["close"] if t in bars[c] else last_close.get(c, 0.0)
                   for c in coins}  # fmt: skip
        prev_close = {c: last_close.get(c, 0.0) for c in coins}
        units_before = dict(units)
        e_open = cash + sum(units[c] * p_open[c] for c in coins)
        orders = dict.fromkeys(coins, 0.0)
        if pending is not None and e_open > 0:
            legs = [c for c in coins if t in bars[c] and (resize or pending[c] != in_force[c])]
            held = {c: units[c] * p_open[c] for c in coins}
            e_net = e_open
            for _ in range(200):  # fixed point of E' = E_o - sum c |w E' - N|
                nxt = e_open - sum(rate[c] * abs(pending[c] * e_net - held[c]) for c in legs)
                if nxt == e_net:
                    break
                e_net = nxt
            for c in legs:
                orders[c] = pending[c] * e_net - held[c]
                units[c] = (held[c] + orders[c]) / p_open[c]
                in_force[c] = pending[c]
        costs = {c: rate[c] * abs(orders[c]) for c in coins}
        paid = {c: (funding[c][i] if funding else 0.0) * units[c] * p_close[c]
                if t in bars[c] else 0.0 for c in coins}  # fmt: skip
        cash -= sum(orders.values()) + sum(costs.values()) + sum(paid.values())
        e_close = cash + sum(units[c] * p_close[c] for c in coins)
        for c in coins:
            pnl = (units_before[c] * (p_open[c] - prev_close[c]) + units[c] * (p_close[c]
                   - p_open[c]) - costs[c] - paid[c])  # fmt: skip
            contributions[c].append(pnl / prev_equity if i and prev_equity > 0 else 0.0)
        if e_close <= 0:
            cash, e_close = 0.0, 0.0
            units = dict.fromkeys(coins, 0.0)
        equity.append(e_close)
        prev_equity = e_close
        for c in coins:
            if t in bars[c]:
                last_close[c] = bars[c][t]["close"]
        # the decision at this close, executed at the next open
        if schedule == "bars":
            decide = i % every == 0
        else:
            decide = i + 1 < len(ts) and _period(ts[i + 1], schedule) != _period(t, schedule)
        pending = None
        if decide:
            wanted = {c: float(targets[c][i]) for c in coins}
            gross = sum(abs(w) for w in wanted.values())
            scale = max_gross / gross if gross > max_gross else 1.0
            pending = {c: w * scale for c, w in wanted.items()}
    return {"ts": ts, "equity": equity, "contributions": contributions}


__all__ = ["momentum_targets", "run_portfolio_reference", "strategy_targets",
           "timeline"]  # fmt: skip
