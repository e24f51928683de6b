"""Arrays as JSON rows, the way every analytics answer encodes them: floats with NaN as null,
labels with MISSING (inside their warm-up) as null, positions as ints (never missing)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi.responses import Response
from pydantic import BaseModel

from compute.core.labels import VolRegime
from compute.indicators.registry import Request
from serve_app.api.schemas.analytics import Cell
from serve_app.timefmt import iso_array

MISSING = int(VolRegime.MISSING)  # the code of a label inside its warm-up (every label)


def cells(values: np.ndarray, kind: str) -> list[Cell]:
    """A column as JSON cells: floats with NaN -> null; labels as ints with MISSING -> null;
    signals as ints (a position is never missing)."""
    arr = np.asarray(values)
    if kind == "indicator":
        out = arr.astype(np.float64).astype(object)
        out[np.isnan(arr)] = None
        return list(out.tolist())
    missing = np.isnan(arr) if arr.dtype.kind == "f" else np.zeros(arr.shape, bool)
    if kind == "label":
        missing |= arr == MISSING
    out = np.where(missing, 0, arr).astype(np.int64).astype(object)
    out[missing] = None
    return list(out.tolist())


def _tokens(values: Any) -> list[bytes]:
    """The elements of a flat JSON array (numbers, nulls, comma-free strings) as tokens."""
    data = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
    return data[1:-1].split(b",") if len(data) > 2 else []


def rows(ts: np.ndarray, columns: dict[str, list[Cell]]) -> orjson.Fragment:
    """``[{"ts": iso, "ts_unix": s, <column>: cell, ...}, ...]`` as pre-encoded JSON: each
    column is serialised once and the row objects are stitched from the tokens (several
    times faster than building a dict per row; ``rows_reference`` is the plain version the
    tests hold it equal to)."""
    if not len(ts):
        return orjson.Fragment(b"[]")
    keys = ["ts", "ts_unix", *columns]
    template = ("{" + ",".join(f"{orjson.dumps(k).decode()}:%s" for k in keys) + "}").encode()
    tokens = [_tokens(iso_array(ts)), _tokens(np.asarray(ts, np.int64))]
    tokens += [_tokens(v) for v in columns.values()]
    body = b",".join([template % row for row in zip(*tokens, strict=True)])
    return orjson.Fragment(b"[" + body + b"]")


def rows_reference(ts: np.ndarray, columns: dict[str, list[Cell]]) -> list[dict[str, Cell]]:
    """One dict per row: what :func:`rows` must encode to, byte for byte."""
    keys = ["ts", "ts_unix", *columns]
    lists = [iso_array(ts), ts.tolist(), *columns.values()]
    return [dict(zip(keys, values, strict=True)) for values in zip(*lists, strict=True)]


def kinds(requests: tuple[Request, ...]) -> dict[str, str]:
    """Column -> how to render it: float outputs as indicators (a label item such as
    ``trend`` also has a float output), integer outputs as their item's kind."""
    return {
        r.column(o.name): "indicator" if o.dtype.startswith("float") else r.spec.kind
        for r in requests
        for o in r.spec.outputs
    }


_ORJSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def typed_json(model: type[BaseModel], body: dict[str, Any], status: int = 200) -> Response:
    """``body`` as JSON, checked against its response model first.

    orjson encodes NumPy arrays and NaN (as null) directly, then pydantic validates the bytes
    (in Rust, no Python objects per value), so a large answer is cheap and still cannot
    leave the schema that ``/openapi.json`` declares. A body that does not fit is a bug: it
    raises (500) rather than sending something the schema does not describe.
    """
    data = orjson.dumps(body, option=_ORJSON)
    model.model_validate_json(data)
    return Response(data, status_code=status, media_type="application/json")
