"""Indicators, signals and regimes computed on request: spec parsing, the window and its
warm-up, and the kernels.

Validate and cap before any work (interval, times, ``limit``, the spec's items and
parameters), read exactly the candles a request needs (its window plus the warm-up before
it), call ``compute``. ``compute.indicators.pipeline`` (JAX) is imported on first use, so the
market and health routes and the CLI never pay for importing it.

A value at bar ``t`` is computed from the candles ``data.first_ts`` .. ``t`` and nothing later.
Recursive indicators (EMA, Wilder RSI/ATR, MACD, trend) are seeded at ``data.first_ts``: keep
``start`` fixed to compare values across requests.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from compute.core.errors import ComputeError, SpecError
from compute.indicators.registry import (
    MAX_ITEMS,
    REGISTRY,
    IndicatorSpec,
    Request,
    parse_indicator_spec,
)
from serve_app.services.inputs import check_limit, parse_range, read_columns, resolve_coin
from serve_app.settings import Settings
from serve_app.timefmt import iso
from storage.candle_reads import CandleColumns
from storage.candles import CandleRepository
from storage.errors import (
    ConfigurationError,
    DataIntegrityError,
    InsufficientDataError,
    LimitExceededError,
)
from storage.fingerprint import series_fingerprint
from storage.intervals import interval_seconds, periods_per_year

CAUSAL_NOTE = (
    "the value at bar t uses only candles up to and including t (its close); "
    "act on it at the next bar's open"
)


FRESHNESS = (
    "stale rows are never served: each stored row carries a fingerprint of the candles it was "
    "computed from, checked against the candles as stored now; missing or stale rows are "
    "recomputed for this answer (not written back)"
)


_FLAGS = ("long_only", "vol_gate")


SIGNALS = tuple(s for s in REGISTRY.values() if s.kind == "signal")


def usage(spec: IndicatorSpec) -> str:
    params = ", ".join(p.usage() for p in spec.params) or "no parameters"
    return f"{spec.usage()} - {spec.summary}; {params}"


def invalid_spec(message: str, parameter: str, specs: Any) -> ConfigurationError:
    return ConfigurationError(
        message,
        code="invalid_spec",
        parameter=parameter,
        valid=[usage(s) for s in specs],
        max_items=MAX_ITEMS,
    )


def parse(text: str, parameter: str, specs: Any) -> tuple[Request, ...]:
    try:
        return parse_indicator_spec(text)
    except SpecError as exc:
        raise invalid_spec(str(exc), parameter, specs) from None


def parse_names(names: str) -> tuple[Request, ...]:
    """The requests of ``names``; capped at the registry's MAX_ITEMS before parsing."""
    items = names.count(",") + 1
    if items > MAX_ITEMS:
        raise LimitExceededError(
            f"at most {MAX_ITEMS} items per request, got {items}; split the request",
            code="too_many_names",
            parameter="names",
            max_items=MAX_ITEMS,
        )
    return parse(names, "names", REGISTRY.values())


def _text(value: float, kind: type) -> str:
    return str(int(value)) if kind is int else repr(float(value))


def signal_request(strategy: str, params: str | None, long_only: bool, vol_gate: bool) -> Request:
    """The registry request of a strategy: ``params`` positional, then the two flags."""
    spec = REGISTRY.get(strategy.strip().lower())
    if spec is None or spec.kind != "signal":
        names = ", ".join(s.name for s in SIGNALS)
        raise invalid_spec(
            f"unknown strategy {strategy!r}; valid strategies: {names}", "strategy", SIGNALS
        )
    plain = [p for p in spec.params if p.name not in _FLAGS]
    given = [t.strip() for t in params.split(":")] if params and params.strip() else []
    if len(given) > len(plain):
        raise invalid_spec(
            f"{spec.name} takes at most {len(plain)} parameters "
            f"({':'.join(p.name for p in plain)}), got {len(given)}; "
            "long_only and vol_gate are query parameters of their own",
            "params",
            [spec],
        )
    texts = dict(zip((p.name for p in plain), given, strict=False))
    texts |= {"long_only": str(int(long_only)), "vol_gate": str(int(vol_gate))}
    item = ":".join(
        [spec.name, *(texts.get(p.name, _text(p.default, p.kind)) for p in spec.params)]
    )
    return parse(item, "params", [spec])[0]


def default_of(name: str, param: str) -> float:
    return next(p.default for p in REGISTRY[name].params if p.name == param)


@dataclass(frozen=True)
class Window:
    start: int | None
    end: int | None
    limit: int


def window_of(settings: Settings, start: str | None, end: str | None, limit: int | None) -> Window:
    start_s, end_s = parse_range(start, end)
    return Window(start_s, end_s, check_limit(limit, settings))


@dataclass(frozen=True)
class Computed:
    """Outputs over a window; ``candles`` also hold the lookback before it."""

    coin: str
    candles: CandleColumns
    offset: int  # index of the window's first candle
    outputs: dict[str, np.ndarray]  # column -> values over the window only

    @property
    def ts(self) -> np.ndarray:
        return self.candles.ts[self.offset :]


def concat(a: CandleColumns, b: CandleColumns) -> CandleColumns:
    return CandleColumns(
        *(np.concatenate([getattr(a, f.name), getattr(b, f.name)]) for f in fields(a))
    )


def lookback_of(requests: tuple[Request, ...]) -> int:
    return max((r.warmup for r in requests), default=0)


def insufficient(
    coin: str, interval: str, requests: tuple[Request, ...], candles: CandleColumns | None
) -> InsufficientDataError:
    lookback = lookback_of(requests)
    step = interval_seconds(interval)
    items = ",".join(r.text() for r in requests)
    first = None if candles is None or not len(candles) else int(candles.ts[0])
    suggested = None if first is None else first + lookback * step
    received = 0 if candles is None else len(candles)
    need = f"{items} needs {lookback + 1} candles (a warm-up of {lookback} bars)"
    if first is None or candles is None:
        message = f"no {interval} candles stored for {coin}; {need}: ingest or import them first"
    else:
        message = (
            f"{need} up to the last requested bar, but {coin} {interval} has only {received} "
            f"stored from {iso(first)} to {iso(int(candles.ts[-1]))}; ask for start >= "
            f"{iso(suggested or first)} (first available + {lookback} bars) once candles up "
            "to it are stored, or backfill earlier history"
        )
    return InsufficientDataError(
        message,
        parameter="start",
        required_candles=lookback + 1,
        received_candles=received,
        required_lookback_s=lookback * step,
        first_available_ts=None if first is None else iso(first),
        first_available_ts_unix=first,
        suggested_start=None if suggested is None else iso(suggested),
        suggested_start_unix=suggested,
    )


def evaluate(requests: tuple[Request, ...], c: CandleColumns) -> dict[str, np.ndarray]:
    """``compute_indicators`` on ``c``; a candle it rejects is a 422 naming the problem."""
    from compute.indicators.pipeline import compute_indicators  # JAX: imported on first use

    try:
        return compute_indicators(requests, c.open, c.high, c.low, c.close, c.volume_base, c.ts)
    except ComputeError as exc:
        raise DataIntegrityError(f"the stored candles cannot be used: {exc}") from None


def compute_window(
    sessions: sessionmaker[Session],
    settings: Settings,
    coin: str,
    interval: str,
    requests: tuple[Request, ...],
    window: Window,
) -> Computed:
    """Read the window and the warm-up before it, then compute. 422 ``insufficient_data``
    when fewer candles than one complete row needs are stored up to the window's end."""
    lookback = lookback_of(requests)
    with sessions() as session:
        name = resolve_coin(session, settings, coin)
        candles = read_columns(
            session,
            name,
            interval,
            start=window.start,
            end=window.end,
            limit=window.limit,
            latest=window.start is None,
        )
        if not len(candles):
            if CandleRepository(session).latest_ts(name, interval) is None:
                raise insufficient(name, interval, requests, None)
            return Computed(
                name, candles, 0, {c: np.empty(0) for r in requests for c in r.columns.values()}
            )
        offset = 0
        if lookback:
            before = read_columns(
                session, name, interval, end=int(candles.ts[0]) - 1, limit=lookback, latest=True
            )
            candles, offset = concat(before, candles), len(before)
    if len(candles) <= lookback:
        raise insufficient(name, interval, requests, candles)
    values = evaluate(requests, candles)
    # in spec order (compute's dict order is its own)
    outputs = {c: values[c][offset:] for r in requests for c in r.columns.values()}
    return Computed(name, candles, offset, outputs)


def warmup_out(requests: tuple[Request, ...], result: Computed) -> dict[str, Any]:
    lookback = lookback_of(requests)
    first = max(lookback, result.offset)
    first_ts = int(result.candles.ts[first]) if first < len(result.candles) else None
    items = [
        {
            "item": r.text(),
            "kind": r.spec.kind,
            "columns": list(r.columns.values()),
            "warmup_bars": r.warmup,
        }
        for r in requests
    ]
    return dict(
        required_candles=lookback + 1,
        lookback_candles=lookback,
        lookback_received=result.offset,
        complete=result.offset >= lookback,
        first_complete_ts=None if first_ts is None else iso(first_ts),
        first_complete_ts_unix=first_ts,
        items=items,
    )


def data_out(c: CandleColumns, step: int) -> dict[str, Any]:
    if not len(c):
        nulls: dict[str, Any] = dict.fromkeys(
            ("first_ts", "first_ts_unix", "last_ts", "last_ts_unix")
        )
        return dict(
            candles=0, missing_bars=0, fingerprint=series_fingerprint(pd.DataFrame()), **nulls
        )
    first, last = int(c.ts[0]), int(c.ts[-1])
    frame = pd.DataFrame(
        {k: getattr(c, k) for k in ("ts", "open", "high", "low", "close", "volume_base")}
    )
    return dict(
        candles=len(c),
        first_ts=iso(first),
        first_ts_unix=first,
        last_ts=iso(last),
        last_ts_unix=last,
        missing_bars=(last - first) // step + 1 - len(c),
        fingerprint=series_fingerprint(frame),
    )


def regime_spec(interval: str, values: dict[str, float]) -> str:
    v, ppy = values, f"{periods_per_year(interval):g}"
    return (
        f"rvol:{v['vol_n']:g}:{ppy},vov:{v['vol_n']:g}:{v['vov_m']:g}:{ppy},"
        f"vreg:{v['vol_n']:g}:{v['lookback']:g}:{v['z']!r},"
        f"trend:{v['trend_n']:g}:{v['atr_n']:g}:{v['slope']:g}:{v['threshold']!r}"
    )


REGIME_DEFAULTS = {
    "vol_n": default_of("vreg", "n"),
    "vov_m": default_of("vov", "m"),
    "lookback": default_of("vreg", "lookback"),
    "z": default_of("vreg", "z"),
    "trend_n": default_of("trend", "n"),
    "atr_n": default_of("trend", "atr_n"),
    "slope": default_of("trend", "slope"),
    "threshold": default_of("trend", "threshold"),
}
