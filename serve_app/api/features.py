"""``/features``: rows of the feature store for a window, never stale (recomputed where the
stored row's candle fingerprint no longer matches the candles)."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response

from compute.core.errors import ComputeError
from compute.indicators.registry import parse_indicator_spec
from serve_app.api import encoding as enc
from serve_app.api.analytics import (
    _ERRORS,
    EndQuery,
    LimitQuery,
    StartQuery,
)
from serve_app.api.deps import SessionFactoryDep, SettingsDep
from serve_app.api.market import CoinQuery, IntervalQuery
from serve_app.api.schemas.analytics import FeaturesResponse
from serve_app.api.schemas.common import ErrorBody
from serve_app.services import analytics as svc
from serve_app.services.inputs import check_interval, resolve_coin
from storage.errors import DataIntegrityError

router = APIRouter(tags=["analytics"])


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
    from serve_app.services.features import read_fresh  # JAX: imported on first use

    interval = check_interval(interval)
    window = svc.window_of(settings, start, end, limit)
    with sessions() as session:
        name = resolve_coin(session, settings, coin)
        try:
            fs, rows, recomputed = read_fresh(
                session, name, interval, start=window.start, end=window.end, limit=window.limit
            )
        except ComputeError as exc:
            raise DataIntegrityError(f"stored candles rejected: {exc}") from None
    ts = rows.ts
    values = rows.values if len(ts) else np.empty((0, len(fs.columns)))
    kinds = enc.kinds(parse_indicator_spec(fs.spec))
    columns = {c: enc.cells(values[:, i], kinds[c]) for i, c in enumerate(fs.columns)}
    return enc.typed_json(
        FeaturesResponse,
        {
            "coin": name,
            "interval": interval,
            "version": fs.version,
            "spec": fs.spec,
            "columns": fs.columns,
            "count": len(ts),
            "rows": enc.rows(ts, columns),
            "recomputed": int(recomputed),
            "freshness": svc.FRESHNESS,
        },
    )
