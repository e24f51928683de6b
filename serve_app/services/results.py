"""How results are kept and shown: plain JSON values, and equity curves thinned evenly.

The registry stores every bar of an equity curve up to ``STORE_EQUITY_POINTS``; responses and
reports thin further with :func:`thin_indices` (first and last point always kept).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

STORE_EQUITY_POINTS = 100_000  # equity points kept in the registry (evenly thinned beyond)
EQUITY_COLUMNS = ("ts", "equity", "drawdown", "position", "exposure")


def thin_indices(n: int, points: int) -> tuple[np.ndarray, int]:
    """Evenly spaced indices into ``n`` points, at most ``points`` of them, the last kept."""
    stride = max(1, math.ceil(n / max(points - 1, 1))) if n > points else 1
    idx = np.arange(0, n, stride)
    if n and idx[-1] != n - 1:
        idx = np.append(idx, n - 1)
    return idx, stride


def _plain_array(arr: np.ndarray) -> list[Any]:
    """A numeric array as a list in one vectorised pass (NaN/inf -> None)."""
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if not bad.any():
            return list(arr.tolist())
        out = arr.astype(object)
        out[bad] = None
        return list(out.tolist())
    if arr.dtype.kind in "iub":
        return list(arr.tolist())
    return [plain(v) for v in arr.tolist()]


def plain(value: Any) -> Any:
    """NumPy scalars/arrays as plain JSON values (NaN and infinities -> None)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain_array(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def stored_equity(equity: dict[str, Any]) -> dict[str, Any]:
    """The equity columns the registry keeps, thinned to ``STORE_EQUITY_POINTS``."""
    n = len(equity["ts"])
    idx, stride = thin_indices(n, STORE_EQUITY_POINTS)
    out: dict[str, Any] = {
        k: plain(np.asarray(equity[k])[idx]) for k in EQUITY_COLUMNS if k in equity
    }
    out["stride"] = stride
    out["total_points"] = n
    return out
