"""Candle fingerprints: detect that the candles behind a stored result have changed.

``prefix_fingerprints`` gives, for every bar t, a 64-bit digest of all candles up to and
including t: each row is mixed to 64 bits (splitmix64 over the exact float bits, so -0.0 and
0.0 differ and nothing is rounded) and the row digests are summed modulo 2**64. A change to any
earlier candle changes every later prefix, which is what recursive indicators (EMA, Wilder)
need: their value at t depends on the whole history. Integer arithmetic only, so the digest is
the same on every machine. ``series_fingerprint`` is the digest of a whole frame as hex.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_FIELDS = ("ts", "open", "high", "low", "close", "volume_base")
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, vectorised (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def row_digests(frame: pd.DataFrame) -> np.ndarray:
    """One uint64 digest per candle row."""
    acc = np.zeros(len(frame), dtype=np.uint64)
    for i, name in enumerate(_FIELDS):
        column = frame[name].to_numpy(np.int64 if name == "ts" else np.float64)
        bits = column.view(np.uint64)
        with np.errstate(over="ignore"):
            acc = _mix(acc ^ (bits + np.uint64(i)))
    return acc


def prefix_fingerprints(frame: pd.DataFrame) -> np.ndarray:
    """For each row, the digest of all rows up to it (int64 view, storable as BIGINT)."""
    with np.errstate(over="ignore"):
        return np.cumsum(row_digests(frame), dtype=np.uint64).view(np.int64)


def series_fingerprint(frame: pd.DataFrame) -> str:
    """The digest of a whole candle frame, as 16 hex digits ('0' * 16 when empty)."""
    if frame.empty:
        return "0" * 16
    return f"{int(prefix_fingerprints(frame)[-1]) & 0xFFFFFFFFFFFFFFFF:016x}"
