"""Analytics routes: ``/indicators``, ``/signals`` and ``/regimes``, computed on request.

Thin: query parameters are described here, the work is :mod:`serve_app.services.analytics`
(and :mod:`serve_app.services.features`); this module turns arrays into JSON rows (NaN and
labels inside their warm-up are null; positions are never missing).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import Response

from compute.core.labels import Position, TrendRegime, VolRegime
from compute.indicators.registry import REGISTRY
from serve_app.api import encoding as enc
from serve_app.api.deps import SessionFactoryDep, SettingsDep
from serve_app.api.market import CoinQuery, IntervalQuery
from serve_app.api.schemas.analytics import (
    IndicatorsResponse,
    RegimesResponse,
    SignalsResponse,
)
from serve_app.api.schemas.common import ErrorBody, InsufficientDataBody, InvalidSpecBody
from serve_app.services import analytics as svc
from serve_app.services.inputs import check_interval
from serve_app.timefmt import iso_array
from storage.intervals import interval_seconds, periods_per_year

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


def _share(codes: np.ndarray, code: int) -> float:
    return float(np.count_nonzero(codes == code) / len(codes)) if len(codes) else 0.0


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
    window = svc.window_of(settings, start, end, limit)
    requests = svc.parse_names(names)
    result = svc.compute_window(sessions, settings, coin, interval, requests, window)
    kinds = enc.kinds(requests)
    columns = {c: enc.cells(v, kinds[c]) for c, v in result.outputs.items()}
    return enc.typed_json(
        IndicatorsResponse,
        {
            "coin": result.coin,
            "interval": interval,
            "names": ",".join(r.text() for r in requests),
            "columns": list(columns),
            "count": len(result.ts),
            "rows": enc.rows(result.ts, columns),
            "warmup": svc.warmup_out(requests, result),
            "data": svc.data_out(result.candles, interval_seconds(interval)),
        },
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
        str, Query(max_length=40, description=f"one of: {', '.join(s.name for s in svc.SIGNALS)}")
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
    window = svc.window_of(settings, start, end, limit)
    request = svc.signal_request(strategy, params, long_only, vol_gate)
    result = svc.compute_window(sessions, settings, coin, interval, (request,), window)
    pos = result.outputs[request.column(request.spec.name)].astype(np.int64)
    close = result.candles.close[result.offset :]
    rows = [
        {"ts": t, "ts_unix": u, "close": c, "position": p}
        for t, u, c, p in zip(
            iso_array(result.ts), result.ts.tolist(), close.tolist(), pos.tolist(), strict=True
        )
    ]
    return enc.typed_json(
        SignalsResponse,
        {
            "coin": result.coin,
            "interval": interval,
            "strategy": request.spec.name,
            "item": request.text(),
            "params": request.params,
            "causal": True,
            "note": svc.CAUSAL_NOTE,
            "positions": {str(int(p)): p.name for p in Position},
            "count": len(rows),
            "rows": rows,
            "summary": {
                "long": _share(pos, Position.LONG),
                "flat": _share(pos, Position.FLAT),
                "short": _share(pos, Position.SHORT),
                "changes": int(np.count_nonzero(np.diff(pos))),
            },
            "warmup": svc.warmup_out((request,), result),
            "data": svc.data_out(result.candles, interval_seconds(interval)),
        },
    )


def _regime_query(name: str, what: str) -> Any:
    return Query(description=f"{what} (default {svc.REGIME_DEFAULTS[name]:g})")


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
    window = svc.window_of(settings, start, end, limit)
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
    values = {k: svc.REGIME_DEFAULTS[k] if v is None else v for k, v in given.items()}
    specs = [REGISTRY[n] for n in ("rvol", "vov", "vreg", "trend")]
    requests = svc.parse(svc.regime_spec(interval, values), "params", specs)
    rvol, vov, vreg, trend = (r.columns for r in requests)
    result = svc.compute_window(sessions, settings, coin, interval, requests, window)
    out = result.outputs
    vol_codes = out[vreg["vreg"]].astype(np.int64)
    trend_codes = out[trend["trend"]].astype(np.int64)
    vol_names = [VolRegime(c).name for c in vol_codes.tolist()]
    trend_names = [TrendRegime(c).name for c in trend_codes.tolist()]
    rows = enc.rows(
        result.ts,
        {
            "realized_vol": enc.cells(out[rvol["rvol"]], "indicator"),
            "vol_of_vol": enc.cells(out[vov["vov"]], "indicator"),
            "vol_regime": list(vol_names),
            "vol_regime_code": vol_codes.tolist(),
            "trend_score": enc.cells(out[trend["trend_score"]], "indicator"),
            "trend_regime": list(trend_names),
            "trend_regime_code": trend_codes.tolist(),
        },
    )
    return enc.typed_json(
        RegimesResponse,
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
            "count": len(result.ts),
            "rows": rows,
            "summary": {
                "bars": len(result.ts),
                "vol_regime": {m.name: _share(vol_codes, m) for m in VolRegime},
                "trend_regime": {m.name: _share(trend_codes, m) for m in TrendRegime},
            },
            "warmup": svc.warmup_out(requests, result),
            "data": svc.data_out(result.candles, interval_seconds(interval)),
        },
    )
