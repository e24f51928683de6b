"""Whole-batch validation of candle frames before they reach the database.

The database enforces the same rules with CHECK constraints; validating first lets us reject a
batch with the offending row named (and nothing written) instead of a driver error.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from storage.columns import CANDLE_COLUMNS
from storage.errors import DataIntegrityError
from storage.intervals import INTERVAL_SECONDS


def _iso(ts: object) -> str:
    try:
        return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return repr(ts)


def _fail(frame: pd.DataFrame, bad: np.ndarray, what: str) -> None:
    positions = np.flatnonzero(bad)
    if positions.size == 0:
        return
    pos = int(positions[0])
    row = frame.iloc[pos]
    raise DataIntegrityError(
        f"batch rejected, nothing written: row {pos} ({row['coin']} {row['interval']} "
        f"{_iso(row['ts'])}) {what}; {positions.size} row(s) in the batch fail this check"
    )


def prepare_candles(frame: pd.DataFrame) -> pd.DataFrame:
    """Validate a candle batch and deduplicate its keys (last wins).

    Returns a new frame with canonical dtypes. Raises ``DataIntegrityError`` naming the first
    invalid row; the caller then writes nothing of the batch.
    """
    missing = [c for c in CANDLE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataIntegrityError(f"candle batch is missing columns: {', '.join(missing)}")
    out = frame.loc[:, list(CANDLE_COLUMNS)].reset_index(drop=True)
    if out.empty:
        return out

    coins = out["coin"].astype(object)
    intervals = out["interval"].astype(object)
    # Validate the (few) distinct coins and intervals once, then map back to rows.
    coin_codes, coin_names = pd.factorize(coins, use_na_sentinel=True)
    bad_coin = [not (isinstance(c, str) and 0 < len(c) <= 20) for c in coin_names]
    _fail(
        out,
        (coin_codes < 0) | np.asarray([*bad_coin, False])[coin_codes],
        "has an empty or over-long coin",
    )
    iv_codes, iv_names = pd.factorize(intervals, use_na_sentinel=True)
    iv_steps = np.asarray([INTERVAL_SECONDS.get(str(i), 0) for i in iv_names] + [0], np.int64)
    step = iv_steps[iv_codes]
    _fail(out, step == 0, f"has an unknown interval (valid: {', '.join(INTERVAL_SECONDS)})")

    if out["ts"].dtype == np.int64:
        ts = out["ts"].to_numpy(np.int64)
    else:
        ts_float = pd.to_numeric(out["ts"], errors="coerce").to_numpy(np.float64)
        _fail(
            out,
            ~np.isfinite(ts_float) | (ts_float != np.floor(ts_float)),
            "has a ts that is not an integer number of unix seconds",
        )
        ts = ts_float.astype(np.int64)
    _fail(out, ts % step != 0, "has a ts not aligned to its interval (ts is the bar open time)")

    values = {}
    for col in ("open", "high", "low", "close", "volume_base", "volume_quote", "trade_count"):
        column = out[col]
        if column.dtype != np.float64:
            column = pd.to_numeric(column, errors="coerce")
        values[col] = column.to_numpy(np.float64)
    o, h, lo, c = values["open"], values["high"], values["low"], values["close"]
    finite = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c)
    _fail(out, ~finite, "has a missing or non-finite price")
    _fail(out, (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), "has a price <= 0")
    _fail(out, h < np.maximum(o, c), "has high below max(open, close)")
    _fail(out, lo > np.minimum(o, c), "has low above min(open, close)")
    vb = values["volume_base"]
    _fail(out, ~np.isfinite(vb) | (vb < 0), "has a missing or negative volume_base")
    vq = values["volume_quote"]
    _fail(out, np.isinf(vq) | (vq < 0), "has a negative or infinite volume_quote")
    tc = values["trade_count"]
    _fail(
        out,
        np.isinf(tc) | (tc < 0) | (np.isfinite(tc) & (tc != np.floor(tc))),
        "has a negative or fractional trade_count",
    )

    prepared = pd.DataFrame(
        {
            "coin": coins.to_numpy(object),
            "interval": intervals.to_numpy(object),
            "ts": ts,
            **values,
            "source": out["source"].astype(object).to_numpy(object),
        }
    )
    keys = pd.DataFrame({"c": coin_codes, "i": iv_codes, "ts": ts})
    duplicated = keys.duplicated(keep="last").to_numpy()
    if duplicated.any():
        prepared = prepared[~duplicated].reset_index(drop=True)
    return prepared
