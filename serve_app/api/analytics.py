"""Analytics routes: indicators, signals and regimes computed on request, derivatives
microstructure, and fresh rows of the feature store.

Thin by design: validate and cap the request before any work (interval, times, ``limit``, the
spec's items and parameters), read exactly the candles it needs (its window plus the warm-up
before it), call ``compute``, map arrays to rows. ``compute.indicators.pipeline`` (JAX) is imported
on
first use, so the market and health routes and the CLI never pay for importing it.

A value at bar ``t`` is computed from the candles ``data.first_ts`` .. ``t`` and nothing later.
Recursive indicators (EMA, Wilder RSI/ATR, MACD, trend) are seeded at ``data.first_ts``: keep
``start`` fixed to compare values across requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Annotated, Any, TypeVar

import numpy as np
import orjson
import pandas as pd
from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from compute.core.errors import ComputeError, SpecError
from compute.core.labels import Position, TrendRegime, VolRegime
from compute.indicators.registry import (
    MAX_ITEMS,
    REGISTRY,
    IndicatorSpec,
    Request,
    parse_indicator_spec,
)
from serve_app.api.deps import SessionFactoryDep, SettingsDep
from serve_app.api.errors import ApiError
from serve_app.api.market import (
    CoinQuery,
    IntervalQuery,
    check_interval,
    check_limit,
    parse_range,
    resolve_coin,
)
from serve_app.api.models import (
    BasisOut,
    Cell,
    DataOut,
    ErrorBody,
    FeaturesResponse,
    FundingOut,
    IndicatorsResponse,
    InsufficientDataBody,
    InvalidSpecBody,
    LiquidationsOut,
    MicrostructureResponse,
    OpenInterestOut,
    RegimesResponse,
    SignalsResponse,
    SpecItemOut,
    VolatilityOut,
    WarmupOut,
)
from serve_app.api.timefmt import iso, iso_array, parse_time
from serve_app.settings import Settings
from storage.candle_reads import CandleColumns, read_candle_columns
from storage.candles import CandleRepository
from storage.derivatives import FundingRepository
from storage.fingerprint import series_fingerprint
from storage.intervals import interval_seconds, periods_per_year
from storage.models import FundingRate, MarketSnapshot, OpenInterest

router = APIRouter(tags=["analytics"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown coin (the body lists known coins)"},
    503: {"model": ErrorBody, "description": "the database is down or not migrated"},
}
_COMPUTE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    422: {
        "model": InsufficientDataBody | InvalidSpecBody | ErrorBody,
        "description": "invalid_spec (lists what is valid), insufficient_data (says how many "
        "candles from when), or another invalid parameter",
    },
}
CAUSAL_NOTE = (
    "the value at bar t uses only candles up to and including t (its close); "
    "act on it at the next bar's open"
)
FRESHNESS = (
    "stale rows are never served: each stored row carries a fingerprint of the candles it was "
    "computed from, checked against the candles as stored now; missing or stale rows are "
    "recomputed for this answer (not written back)"
)
NO_LIQUIDATIONS = "no provider in use reports liquidations"
_MISSING = int(VolRegime.MISSING)  # the code of a label inside its warm-up (every label)
_FLAGS = ("long_only", "vol_gate")
_SIGNALS = tuple(s for s in REGISTRY.values() if s.kind == "signal")

StartQuery = Annotated[
    str | None,
    Query(description="first bar open time of the window (ISO-8601 or unix s); omitted: latest"),
]
EndQuery = Annotated[
    str | None, Query(description="last bar open time, inclusive (ISO-8601 or unix s)")
]
LimitQuery = Annotated[
    int | None, Query(description="most rows to return (default and cap are settings)")
]


# ----------------------------------------------------------------------------------- specs
def _usage(spec: IndicatorSpec) -> str:
    params = ", ".join(p.usage() for p in spec.params) or "no parameters"
    return f"{spec.usage()} - {spec.summary}; {params}"


def _invalid_spec(message: str, parameter: str, specs: Any) -> ApiError:
    return ApiError(
        422,
        "invalid_spec",
        message,
        parameter=parameter,
        valid=[_usage(s) for s in specs],
        max_items=MAX_ITEMS,
    )


def _parse(text: str, parameter: str, specs: Any) -> tuple[Request, ...]:
    try:
        return parse_indicator_spec(text)
    except SpecError as exc:
        raise _invalid_spec(str(exc), parameter, specs) from None


def _parse_names(names: str) -> tuple[Request, ...]:
    """The requests of ``names``; capped at the registry's MAX_ITEMS before parsing."""
    items = names.count(",") + 1
    if items > MAX_ITEMS:
        raise ApiError(
            422,
            "too_many_names",
            f"at most {MAX_ITEMS} items per request, got {items}; split the request",
            parameter="names",
            max_items=MAX_ITEMS,
        )
    return _parse(names, "names", REGISTRY.values())


def _text(value: float, kind: type) -> str:
    return str(int(value)) if kind is int else repr(float(value))


def _signal_request(strategy: str, params: str | None, long_only: bool, vol_gate: bool) -> Request:
    """The registry request of a strategy: ``params`` positional, then the two flags."""
    spec = REGISTRY.get(strategy.strip().lower())
    if spec is None or spec.kind != "signal":
        names = ", ".join(s.name for s in _SIGNALS)
        raise _invalid_spec(
            f"unknown strategy {strategy!r}; valid strategies: {names}", "strategy", _SIGNALS
        )
    plain = [p for p in spec.params if p.name not in _FLAGS]
    given = [t.strip() for t in params.split(":")] if params and params.strip() else []
    if len(given) > len(plain):
        raise _invalid_spec(
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
    return _parse(item, "params", [spec])[0]


def _default(name: str, param: str) -> float:
    return next(p.default for p in REGISTRY[name].params if p.name == param)


# ------------------------------------------------------------------- windows and warm-ups
@dataclass(frozen=True)
class _Window:
    start: int | None
    end: int | None
    limit: int


def _window(settings: Settings, start: str | None, end: str | None, limit: int | None) -> _Window:
    start_s, end_s = parse_range(start, end)
    return _Window(start_s, end_s, check_limit(limit, settings))


@dataclass(frozen=True)
class _Computed:
    """Outputs over a window; ``candles`` also hold the lookback before it."""

    coin: str
    candles: CandleColumns
    offset: int  # index of the window's first candle
    outputs: dict[str, np.ndarray]  # column -> values over the window only

    @property
    def ts(self) -> np.ndarray:
        return self.candles.ts[self.offset :]


def _concat(a: CandleColumns, b: CandleColumns) -> CandleColumns:
    return CandleColumns(
        *(np.concatenate([getattr(a, f.name), getattr(b, f.name)]) for f in fields(a))
    )


def _lookback(requests: tuple[Request, ...]) -> int:
    return max((r.warmup for r in requests), default=0)


def _insufficient(
    coin: str, interval: str, requests: tuple[Request, ...], candles: CandleColumns | None
) -> ApiError:
    lookback = _lookback(requests)
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
    return ApiError(
        422,
        "insufficient_data",
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


def _evaluate(requests: tuple[Request, ...], c: CandleColumns) -> dict[str, np.ndarray]:
    """``compute_indicators`` on ``c``; a candle it rejects is a 422 naming the problem."""
    from compute.indicators.pipeline import compute_indicators  # JAX: imported on first use

    try:
        return compute_indicators(requests, c.open, c.high, c.low, c.close, c.volume_base, c.ts)
    except ComputeError as exc:
        raise ApiError(422, "data_integrity", f"the stored candles cannot be used: {exc}") from None


def _compute(
    sessions: sessionmaker[Session],
    settings: Settings,
    coin: str,
    interval: str,
    requests: tuple[Request, ...],
    window: _Window,
) -> _Computed:
    """Read the window and the warm-up before it, then compute. 422 ``insufficient_data``
    when fewer candles than one complete row needs are stored up to the window's end."""
    lookback = _lookback(requests)
    with sessions() as session:
        name = resolve_coin(session, settings, coin)
        candles = read_candle_columns(
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
                raise _insufficient(name, interval, requests, None)
            return _Computed(
                name, candles, 0, {c: np.empty(0) for r in requests for c in r.columns.values()}
            )
        offset = 0
        if lookback:
            before = read_candle_columns(
                session, name, interval, end=int(candles.ts[0]) - 1, limit=lookback, latest=True
            )
            candles, offset = _concat(before, candles), len(before)
    if len(candles) <= lookback:
        raise _insufficient(name, interval, requests, candles)
    values = _evaluate(requests, candles)
    # in spec order (compute's dict order is its own)
    outputs = {c: values[c][offset:] for r in requests for c in r.columns.values()}
    return _Computed(name, candles, offset, outputs)


def _warmup_out(requests: tuple[Request, ...], result: _Computed) -> WarmupOut:
    lookback = _lookback(requests)
    first = max(lookback, result.offset)
    first_ts = int(result.candles.ts[first]) if first < len(result.candles) else None
    items = [
        SpecItemOut(
            item=r.text(), kind=r.spec.kind, columns=list(r.columns.values()), warmup_bars=r.warmup
        )
        for r in requests
    ]
    return WarmupOut(
        required_candles=lookback + 1,
        lookback_candles=lookback,
        lookback_received=result.offset,
        complete=result.offset >= lookback,
        first_complete_ts=None if first_ts is None else iso(first_ts),
        first_complete_ts_unix=first_ts,
        items=items,
    )


def _data_out(c: CandleColumns, step: int) -> DataOut:
    if not len(c):
        nulls: dict[str, Any] = dict.fromkeys(
            ("first_ts", "first_ts_unix", "last_ts", "last_ts_unix")
        )
        return DataOut(
            candles=0, missing_bars=0, fingerprint=series_fingerprint(pd.DataFrame()), **nulls
        )
    first, last = int(c.ts[0]), int(c.ts[-1])
    frame = pd.DataFrame(
        {k: getattr(c, k) for k in ("ts", "open", "high", "low", "close", "volume_base")}
    )
    return DataOut(
        candles=len(c),
        first_ts=iso(first),
        first_ts_unix=first,
        last_ts=iso(last),
        last_ts_unix=last,
        missing_bars=(last - first) // step + 1 - len(c),
        fingerprint=series_fingerprint(frame),
    )


# -------------------------------------------------------------------------------- encoding
def _cells(values: np.ndarray, kind: str) -> list[Cell]:
    """A column as JSON cells: floats with NaN -> null; labels as ints with MISSING -> null;
    signals as ints (a position is never missing)."""
    arr = np.asarray(values)
    if kind == "indicator":
        out = arr.astype(np.float64).astype(object)
        out[np.isnan(arr)] = None
        return list(out.tolist())
    missing = np.isnan(arr) if arr.dtype.kind == "f" else np.zeros(arr.shape, bool)
    if kind == "label":
        missing |= arr == _MISSING
    out = np.where(missing, 0, arr).astype(np.int64).astype(object)
    out[missing] = None
    return list(out.tolist())


def _rows(ts: np.ndarray, columns: dict[str, list[Cell]]) -> list[dict[str, Cell]]:
    keys = ["ts", "ts_unix", *columns]
    lists = [iso_array(ts), ts.tolist(), *columns.values()]
    return [dict(zip(keys, values, strict=True)) for values in zip(*lists, strict=True)]


def _kinds(requests: tuple[Request, ...]) -> dict[str, str]:
    """Column -> how to render it: float outputs as indicators (a label item such as
    ``trend`` also has a float output), integer outputs as their item's kind."""
    return {
        r.column(o.name): "indicator" if o.dtype.startswith("float") else r.spec.kind
        for r in requests
        for o in r.spec.outputs
    }


def _json(body: dict[str, Any]) -> Response:
    """Large row lists are encoded by orjson directly (the response models document them)."""
    return Response(orjson.dumps(body), media_type="application/json")


def _share(codes: np.ndarray, code: int) -> float:
    return float(np.count_nonzero(codes == code) / len(codes)) if len(codes) else 0.0


# ---------------------------------------------------------------------------------- routes
@router.get(
    "/indicators",
    response_model=IndicatorsResponse,
    summary="Indicators of one series, computed on request",
    responses=_COMPUTE_ERRORS,
)
def get_indicators(
    *,
    settings: SettingsDep,
    sessions: SessionFactoryDep,
    coin: CoinQuery,
    interval: IntervalQuery,
    names: Annotated[
        str,
        Query(
            min_length=1,
            max_length=2000,
            description="spec: name[:p1[:p2...]],...",
            examples=["ema:20,rsi:14,atr:14"],
        ),
    ],
    start: StartQuery = None,
    end: EndQuery = None,
    limit: LimitQuery = None,
) -> Response:
    """Rows of the window (as ``/market/candles`` selects it) with every requested column.
    The warm-up is read from the candles before the window; a column is null where its
    warm-up is not covered (near the start of the stored series)."""
    interval = check_interval(interval)
    window = _window(settings, start, end, limit)
    requests = _parse_names(names)
    result = _compute(sessions, settings, coin, interval, requests, window)
    kinds = _kinds(requests)
    columns = {c: _cells(v, kinds[c]) for c, v in result.outputs.items()}
    return _json(
        {
            "coin": result.coin,
            "interval": interval,
            "names": ",".join(r.text() for r in requests),
            "columns": list(columns),
            "count": len(result.ts),
            "rows": _rows(result.ts, columns),
            "warmup": _warmup_out(requests, result).model_dump(),
            "data": _data_out(result.candles, interval_seconds(interval)).model_dump(),
        }
    )


@router.get(
    "/signals",
    response_model=SignalsResponse,
    summary="A strategy's positions per bar (causal)",
    responses=_COMPUTE_ERRORS,
)
def get_signals(
    *,
    settings: SettingsDep,
    sessions: SessionFactoryDep,
    coin: CoinQuery,
    interval: IntervalQuery,
    strategy: Annotated[
        str, Query(max_length=40, description=f"one of: {', '.join(s.name for s in _SIGNALS)}")
    ],
    params: Annotated[
        str | None,
        Query(max_length=200, description="positional parameters, e.g. 12:26; omitted: defaults"),
    ] = None,
    long_only: Annotated[bool, Query(description="shorts become flat")] = False,
    vol_gate: Annotated[
        bool, Query(description="flat unless the volatility regime is LOW or NORMAL")
    ] = False,
    start: StartQuery = None,
    end: EndQuery = None,
    limit: LimitQuery = None,
) -> Response:
    """Target position at the close of each bar: -1 short, 0 flat, 1 long. Flat inside the
    warm-up. No position uses a later candle: act on it at the next bar's open."""
    interval = check_interval(interval)
    window = _window(settings, start, end, limit)
    request = _signal_request(strategy, params, long_only, vol_gate)
    result = _compute(sessions, settings, coin, interval, (request,), window)
    pos = result.outputs[request.column(request.spec.name)].astype(np.int64)
    close = result.candles.close[result.offset :]
    rows = [
        {"ts": t, "ts_unix": u, "close": c, "position": p}
        for t, u, c, p in zip(
            iso_array(result.ts), result.ts.tolist(), close.tolist(), pos.tolist(), strict=True
        )
    ]
    return _json(
        {
            "coin": result.coin,
            "interval": interval,
            "strategy": request.spec.name,
            "item": request.text(),
            "params": request.params,
            "causal": True,
            "note": CAUSAL_NOTE,
            "positions": {str(int(p)): p.name for p in Position},
            "count": len(rows),
            "rows": rows,
            "summary": {
                "long": _share(pos, Position.LONG),
                "flat": _share(pos, Position.FLAT),
                "short": _share(pos, Position.SHORT),
                "changes": int(np.count_nonzero(np.diff(pos))),
            },
            "warmup": _warmup_out((request,), result).model_dump(),
            "data": _data_out(result.candles, interval_seconds(interval)).model_dump(),
        }
    )


def _regime_spec(interval: str, values: dict[str, float]) -> str:
    v, ppy = values, f"{periods_per_year(interval):g}"
    return (
        f"rvol:{v['vol_n']:g}:{ppy},vov:{v['vol_n']:g}:{v['vov_m']:g}:{ppy},"
        f"vreg:{v['vol_n']:g}:{v['lookback']:g}:{v['z']!r},"
        f"trend:{v['trend_n']:g}:{v['atr_n']:g}:{v['slope']:g}:{v['threshold']!r}"
    )


_REGIME_DEFAULTS = {
    "vol_n": _default("vreg", "n"),
    "vov_m": _default("vov", "m"),
    "lookback": _default("vreg", "lookback"),
    "z": _default("vreg", "z"),
    "trend_n": _default("trend", "n"),
    "atr_n": _default("trend", "atr_n"),
    "slope": _default("trend", "slope"),
    "threshold": _default("trend", "threshold"),
}


def _regime_query(name: str, what: str) -> Any:
    return Query(description=f"{what} (default {_REGIME_DEFAULTS[name]:g})")


@router.get(
    "/regimes",
    response_model=RegimesResponse,
    summary="Realized vol, vol of vol, vol and trend regimes per bar",
    responses=_COMPUTE_ERRORS,
)
def get_regimes(
    *,
    settings: SettingsDep,
    sessions: SessionFactoryDep,
    coin: CoinQuery,
    interval: IntervalQuery,
    start: StartQuery = None,
    end: EndQuery = None,
    limit: LimitQuery = None,
    vol_n: Annotated[int | None, _regime_query("vol_n", "realized-vol window, bars")] = None,
    vov_m: Annotated[int | None, _regime_query("vov_m", "vol-of-vol window, bars")] = None,
    lookback: Annotated[
        int | None, _regime_query("lookback", "vol regime baseline span (EW), bars")
    ] = None,
    z: Annotated[float | None, _regime_query("z", "vol regime band, baseline std units")] = None,
    trend_n: Annotated[int | None, _regime_query("trend_n", "trend EMA period")] = None,
    atr_n: Annotated[int | None, _regime_query("atr_n", "trend ATR period")] = None,
    slope: Annotated[int | None, _regime_query("slope", "trend EMA slope span, bars")] = None,
    threshold: Annotated[
        float | None, _regime_query("threshold", "trend score above which UP / below -x DOWN")
    ] = None,
) -> Response:
    """Per bar: annualised realized vol (periods per year of the interval, 365-day year), vol of
    vol, the vol regime (vs an EW baseline of past vol) and the trend regime (EMA slope in ATR
    units), with label names; the summary gives each regime's share of the returned bars."""
    interval = check_interval(interval)
    window = _window(settings, start, end, limit)
    given = {
        "vol_n": vol_n,
        "vov_m": vov_m,
        "lookback": lookback,
        "z": z,
        "trend_n": trend_n,
        "atr_n": atr_n,
        "slope": slope,
        "threshold": threshold,
    }
    values = {k: _REGIME_DEFAULTS[k] if v is None else v for k, v in given.items()}
    specs = [REGISTRY[n] for n in ("rvol", "vov", "vreg", "trend")]
    requests = _parse(_regime_spec(interval, values), "params", specs)
    rvol, vov, vreg, trend = (r.columns for r in requests)
    result = _compute(sessions, settings, coin, interval, requests, window)
    out = result.outputs
    vol_codes = out[vreg["vreg"]].astype(np.int64)
    trend_codes = out[trend["trend"]].astype(np.int64)
    vol_names = [VolRegime(c).name for c in vol_codes.tolist()]
    trend_names = [TrendRegime(c).name for c in trend_codes.tolist()]
    rows = _rows(
        result.ts,
        {
            "realized_vol": _cells(out[rvol["rvol"]], "indicator"),
            "vol_of_vol": _cells(out[vov["vov"]], "indicator"),
            "vol_regime": list(vol_names),
            "vol_regime_code": vol_codes.tolist(),
            "trend_score": _cells(out[trend["trend_score"]], "indicator"),
            "trend_regime": list(trend_names),
            "trend_regime_code": trend_codes.tolist(),
        },
    )
    return _json(
        {
            "coin": result.coin,
            "interval": interval,
            "spec": ",".join(r.text() for r in requests),
            "params": {
                **{k: float(v) for k, v in values.items()},
                "periods_per_year": periods_per_year(interval),
            },
            "labels": {
                "vol_regime": {str(int(m)): m.name for m in VolRegime},
                "trend_regime": {str(int(m)): m.name for m in TrendRegime},
            },
            "count": len(rows),
            "rows": rows,
            "summary": {
                "bars": len(rows),
                "vol_regime": {m.name: _share(vol_codes, m) for m in VolRegime},
                "trend_regime": {m.name: _share(trend_codes, m) for m in TrendRegime},
            },
            "warmup": _warmup_out(requests, result).model_dump(),
            "data": _data_out(result.candles, interval_seconds(interval)).model_dump(),
        }
    )


@router.get(
    "/features",
    response_model=FeaturesResponse,
    summary="Feature-store rows of one series, never stale",
    responses={**_ERRORS, 422: {"model": ErrorBody, "description": "invalid parameter"}},
)
def get_features(
    *,
    settings: SettingsDep,
    sessions: SessionFactoryDep,
    coin: CoinQuery,
    interval: IntervalQuery,
    start: StartQuery = None,
    end: EndQuery = None,
    limit: LimitQuery = None,
) -> Response:
    """The feature set's rows for the window (as ``/market/candles`` selects it). Stored rows
    are served only while their candle fingerprint matches the candles as stored now; the
    others are recomputed for the answer (``recomputed`` says how many)."""
    from serve_app.features import read_fresh  # JAX: imported on first use

    interval = check_interval(interval)
    window = _window(settings, start, end, limit)
    with sessions() as session:
        name = resolve_coin(session, settings, coin)
        try:
            fs, rows, recomputed = read_fresh(
                session, name, interval, start=window.start, end=window.end, limit=window.limit
            )
        except ComputeError as exc:
            raise ApiError(422, "data_integrity", f"stored candles rejected: {exc}") from None
    ts = rows.ts
    values = rows.values if len(ts) else np.empty((0, len(fs.columns)))
    kinds = _kinds(parse_indicator_spec(fs.spec))
    columns = {c: _cells(values[:, i], kinds[c]) for i, c in enumerate(fs.columns)}
    return _json(
        {
            "coin": name,
            "interval": interval,
            "version": fs.version,
            "spec": fs.spec,
            "columns": fs.columns,
            "count": len(ts),
            "rows": _rows(ts, columns),
            "recomputed": int(recomputed),
            "freshness": FRESHNESS,
        }
    )


# ------------------------------------------------------------------------- microstructure
YEAR_S = 365 * 86_400
ASSUMED_FUNDING_INTERVAL_S = 8 * 3_600
MIN_WINDOW_S, MAX_WINDOW_S = 3_600, 365 * 86_400
VOL_INTERVAL, VOL_DAY_BARS = "1h", 24
_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}

_Row = TypeVar("_Row", FundingRate, OpenInterest, MarketSnapshot)


def parse_window(text: str) -> int:
    """Seconds of a duration like ``8h``, ``1d``, ``7d`` or ``3600``; 422 outside 1h..365d."""
    match = _DURATION.match(text)
    seconds = int(match[1]) * _UNIT_S[match[2].lower()] if match else None
    if seconds is None or not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        why = "it is not a duration" if seconds is None else f"it is {seconds} s"
        raise ApiError(
            422,
            "invalid_window",
            f"could not use window={text!r}: {why}. Give a number with a unit s, m, h, d or w "
            f"(e.g. 8h, 1d, 7d) or seconds, between 1h and 365d",
            parameter="window",
        )
    return seconds


def _latest(session: Session, model: type[_Row], coin: str, end: int | None) -> _Row | None:
    """The newest row of ``model`` for ``coin`` at or before ``end``."""
    query = select(model).where(model.coin == coin)
    if end is not None:
        query = query.where(model.ts <= end)
    return session.scalars(query.order_by(model.ts.desc()).limit(1)).first()


def _before(end: int | None) -> str:
    return "" if end is None else f" at or before {iso(end)}"


def _funding(session: Session, coin: str, window_s: int, end: int | None) -> FundingOut:
    latest = _latest(session, FundingRate, coin, end)
    if latest is None:
        return FundingOut(
            available=False,
            reason=f"no funding rates stored for {coin}{_before(end)}",
            rate=None,
            ts=None,
            ts_unix=None,
            interval_s=None,
            interval_source=None,
            settlements_per_year=None,
            annualized=None,
            window_mean_rate=None,
            window_mean_annualized=None,
            window_observations=0,
        )
    recent = session.scalars(
        select(FundingRate.ts)
        .where(FundingRate.coin == coin, FundingRate.ts <= latest.ts)
        .order_by(FundingRate.ts.desc())
        .limit(11)
    ).all()
    inferred = len(recent) >= 2
    step = int(np.median(-np.diff(np.asarray(recent)))) if inferred else ASSUMED_FUNDING_INTERVAL_S
    per_year = YEAR_S / step
    frame = FundingRepository(session).frame(coin, start=latest.ts - window_s + 1, end=latest.ts)
    mean = float(frame["funding_rate"].mean())
    return FundingOut(
        available=True,
        reason=None,
        rate=latest.funding_rate,
        ts=iso(latest.ts),
        ts_unix=latest.ts,
        interval_s=step,
        interval_source="inferred" if inferred else "assumed",
        settlements_per_year=per_year,
        annualized=latest.funding_rate * per_year,
        window_mean_rate=mean,
        window_mean_annualized=mean * per_year,
        window_observations=len(frame),
    )


def _open_interest(session: Session, coin: str, window_s: int, end: int | None) -> OpenInterestOut:
    latest = _latest(session, OpenInterest, coin, end)
    empty: dict[str, Any] = dict.fromkeys(
        (
            "open_interest",
            "open_interest_quote",
            "ts",
            "ts_unix",
            "past_open_interest",
            "past_ts",
            "past_ts_unix",
            "change",
            "change_pct",
        )
    )
    if latest is None:
        missing = f"no open interest stored for {coin}{_before(end)}"
        return OpenInterestOut(available=False, reason=missing, **empty)
    out = empty | {
        "open_interest": latest.open_interest,
        "ts": iso(latest.ts),
        "ts_unix": latest.ts,
        "open_interest_quote": latest.open_interest_quote,
    }
    since = latest.ts - window_s
    past = _latest(session, OpenInterest, coin, since)
    reason: str | None = None
    if past is None:
        first = session.scalar(select(func.min(OpenInterest.ts)).where(OpenInterest.coin == coin))
        reason = (
            f"no open-interest observation at or before {iso(since)} (latest - window) to "
            f"compare with; stored history starts at {iso(int(first or latest.ts))}"
        )
    else:
        out |= {
            "past_open_interest": past.open_interest,
            "past_ts": iso(past.ts),
            "past_ts_unix": past.ts,
            "change": latest.open_interest - past.open_interest,
        }
        if past.open_interest > 0:
            out["change_pct"] = out["change"] / past.open_interest * 100.0
        else:
            reason = "the past open interest is 0: no percentage change"
    return OpenInterestOut(available=True, reason=reason, **out)


def _basis(session: Session, coin: str, end: int | None, per_year: float) -> BasisOut:
    snap = _latest(session, MarketSnapshot, coin, end)
    reason = None
    if snap is None:
        reason = f"no market snapshot stored for {coin}{_before(end)}"
    elif snap.mark_price is None or snap.index_price is None:
        reason = f"the latest snapshot ({iso(snap.ts)}) has no mark or index price"
    if snap is None or reason is not None:
        return BasisOut(
            available=False,
            reason=reason,
            mark_price=None if snap is None else snap.mark_price,
            index_price=None if snap is None else snap.index_price,
            ts=None if snap is None else iso(snap.ts),
            ts_unix=None if snap is None else snap.ts,
            basis_bps=None,
            annualized=None,
        )
    assert snap.mark_price is not None and snap.index_price is not None
    basis = snap.mark_price / snap.index_price - 1.0
    return BasisOut(
        available=True,
        reason=None,
        mark_price=snap.mark_price,
        index_price=snap.index_price,
        ts=iso(snap.ts),
        ts_unix=snap.ts,
        basis_bps=basis * 1e4,
        annualized=basis * per_year,
    )


def _volatility(session: Session, coin: str, window_s: int, end: int | None) -> VolatilityOut:
    bars = window_s // interval_seconds(VOL_INTERVAL)
    candles = read_candle_columns(
        session, coin, VOL_INTERVAL, end=end, limit=bars + VOL_DAY_BARS, latest=True
    )
    out: dict[str, Any] = {
        "bars": bars,
        "candles_used": len(candles),
        "realized_vol": None,
        "vol_of_vol": None,
        "last_ts": None,
        "last_ts_unix": None,
    }
    if bars < 2 or not len(candles):
        why = "the window holds fewer than two 1h bars" if bars < 2 else "no 1h candles stored"
        return VolatilityOut(available=False, reason=f"{why} for {coin}{_before(end)}", **out)
    ppy = f"{periods_per_year(VOL_INTERVAL):g}"
    requests = parse_indicator_spec(f"rvol:{bars}:{ppy},vov:{VOL_DAY_BARS}:{bars}:{ppy}")
    computed = _evaluate(requests, candles)
    values = [computed[c][-1] for r in requests for c in r.columns.values()]
    last = int(candles.ts[-1])
    out |= {"last_ts": iso(last), "last_ts_unix": last}
    reasons = []
    for key, value, need in zip(
        ("realized_vol", "vol_of_vol"), values, (bars + 1, bars + VOL_DAY_BARS), strict=True
    ):
        if np.isnan(value):
            reasons.append(f"{key} needs {need} 1h candles, {len(candles)} stored")
        else:
            out[key] = float(value)
    reason = "; ".join(reasons) or None
    return VolatilityOut(available=out["realized_vol"] is not None, reason=reason, **out)


@router.get(
    "/market/microstructure",
    response_model=MicrostructureResponse,
    summary="Funding, open interest, basis and realized vol of one coin",
    responses={**_ERRORS, 422: {"model": ErrorBody, "description": "invalid window or time"}},
)
def get_microstructure(
    *,
    settings: SettingsDep,
    sessions: SessionFactoryDep,
    coin: CoinQuery,
    window: Annotated[
        str, Query(max_length=20, description="look-back window: 8h, 1d, 7d ... (1h to 365d)")
    ] = "1d",
    end: Annotated[
        str | None, Query(description="use observations at or before this time; omitted: latest")
    ] = None,
) -> MicrostructureResponse:
    """From stored derivatives data: the latest funding rate (annualised = rate x settlements
    per year, 1,095 for 8h funding) and its mean over the window; open interest and its change
    over the window; the mark-vs-index basis of the latest snapshot; realized vol and vol of
    vol from 1h candles. A piece that is not stored is null with a ``reason``."""
    window_s = parse_window(window)
    end_s = None if end is None else parse_time(end, "end")
    with sessions() as session:
        name = resolve_coin(session, settings, coin)
        funding = _funding(session, name, window_s, end_s)
        per_year = funding.settlements_per_year or YEAR_S / ASSUMED_FUNDING_INTERVAL_S
        return MicrostructureResponse(
            coin=name,
            window=window,
            window_s=window_s,
            end=None if end_s is None else iso(end_s),
            end_unix=end_s,
            funding=funding,
            open_interest=_open_interest(session, name, window_s, end_s),
            basis=_basis(session, name, end_s, per_year),
            volatility=_volatility(session, name, window_s, end_s),
            liquidations=LiquidationsOut(available=False, value=None, reason=NO_LIQUIDATIONS),
        )
