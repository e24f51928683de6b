"""``POST /signals``: any strategy's target weights over a window, causal, with its checks.

The window is read as ``/indicators`` reads it (the latest ``limit`` bars, or from ``start``),
plus the strategy's warm-up before it; the positions are computed on both and the window's are
returned. A user strategy (spec or plugin) is checked for look-ahead and start dependence on
those candles (``lookahead``: reject or flag), as a backtest is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from serve_app.services.analytics import CAUSAL_NOTE, concat, data_out, window_of
from serve_app.services.inputs import check_interval, resolve_coin
from serve_app.services.requests.signals import SignalsRequest
from serve_app.services.strategy import check, resolve
from serve_app.settings import Settings
from serve_app.timefmt import iso
from storage.candle_reads import CandleColumns, read_candle_columns
from storage.candles import CandleRepository
from storage.errors import InsufficientDataError
from storage.intervals import interval_seconds


def _insufficient(
    coin: str, interval: str, label: str, warmup: int, candles: CandleColumns | None
) -> InsufficientDataError:
    step = interval_seconds(interval)
    first = None if candles is None or not len(candles) else int(candles.ts[0])
    received = 0 if candles is None else len(candles)
    suggested = None if first is None else first + warmup * step
    need = f"{label} needs {warmup + 1} candles (a warm-up of {warmup} bars)"
    message = (
        f"no {interval} candles stored for {coin}; {need}: ingest or import them first"
        if first is None
        else f"{need} up to the last requested bar, but {coin} {interval} has {received}; "
        f"ask for start >= {iso(suggested or first)} or backfill earlier history"
    )
    return InsufficientDataError(
        message,
        parameter="start",
        required_candles=warmup + 1,
        received_candles=received,
        required_lookback_s=warmup * step,
        first_available_ts=None if first is None else iso(first),
        first_available_ts_unix=first,
        suggested_start=None if suggested is None else iso(suggested),
        suggested_start_unix=suggested,
    )


def _frame(c: CandleColumns) -> dict[str, np.ndarray]:
    out = {"ts": c.ts, "open": c.open, "high": c.high, "low": c.low, "close": c.close}
    if len(c) and np.isfinite(c.volume_base).all() and (c.volume_base >= 0).all():
        out["volume"] = c.volume_base
    return out


def _items(resolved: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    if resolved.ref.kind != "spec":
        return []
    bound = resolved.plugin.spec.bind(params)
    return [
        {"item": r.text(), "kind": r.spec.kind, "columns": list(r.columns.values()),
         "warmup_bars": r.warmup}
        for r in bound.indicator_requests()
    ]  # fmt: skip


def strategy_signals(
    sessions: sessionmaker[Session], settings: Settings, req: SignalsRequest
) -> dict[str, Any]:
    """The response body of ``POST /signals`` (see the module docstring)."""
    resolved, given = resolve(settings, req.strategy, req.params)
    params = resolved.validate(given)
    warmup = resolved.required_bars(params) - 2
    interval = check_interval(req.interval)
    window = window_of(
        settings,
        None if req.start is None else str(req.start),
        None if req.end is None else str(req.end),
        req.limit,
    )
    with sessions() as session:
        coin = resolve_coin(session, settings, req.coin)
        candles = read_candle_columns(
            session, coin, interval, start=window.start, end=window.end, limit=window.limit,
            latest=window.start is None,
        )  # fmt: skip
        if not len(candles) and CandleRepository(session).latest_ts(coin, interval) is None:
            raise _insufficient(coin, interval, resolved.label, warmup, None)
        offset = 0
        if warmup and len(candles):
            before = read_candle_columns(
                session, coin, interval, end=int(candles.ts[0]) - 1, limit=warmup, latest=True
            )
            candles, offset = concat(before, candles), len(before)
    if len(candles) and len(candles) <= warmup:
        raise _insufficient(coin, interval, resolved.label, warmup, candles)
    frame = _frame(candles)
    pos = np.zeros(0)
    checks = None
    if len(candles):
        pos = np.asarray(resolved.positions(frame, params), dtype=np.float64)
        checks = check(resolved, frame, params, req.lookahead, full=pos)
    shown, ts = pos[offset:], candles.ts[offset:]
    close = candles.close[offset:]
    first = max(warmup, offset)
    first_ts = int(candles.ts[first]) if first < len(candles) else None
    rows = [
        {"ts": iso(int(t)), "ts_unix": int(t), "close": float(c), "position": float(p)}
        for t, c, p in zip(ts.tolist(), close.tolist(), shown.tolist(), strict=True)
    ]
    n = max(len(shown), 1)
    return {
        "coin": coin,
        "interval": interval,
        "strategy": resolved.label,
        "params": params,
        "provenance": resolved.provenance,
        "causal": True,
        "note": CAUSAL_NOTE,
        "count": len(rows),
        "rows": rows,
        "summary": {
            "long": float(np.count_nonzero(shown > 0) / n) if len(shown) else 0.0,
            "flat": float(np.count_nonzero(shown == 0) / n) if len(shown) else 0.0,
            "short": float(np.count_nonzero(shown < 0) / n) if len(shown) else 0.0,
            "changes": int(np.count_nonzero(np.diff(shown))),
            "mean_abs_weight": float(np.abs(shown).mean()) if len(shown) else 0.0,
        },
        "warmup": {
            "required_candles": warmup + 1,
            "lookback_candles": warmup,
            "lookback_received": offset,
            "complete": offset >= warmup,
            "first_complete_ts": None if first_ts is None else iso(first_ts),
            "first_complete_ts_unix": first_ts,
            "items": _items(resolved, params),
        },
        "data": data_out(candles, interval_seconds(interval)),
        "checks": checks,
    }
