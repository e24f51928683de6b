"""The feature store's compute side: materialise, refresh and read feature rows.

Determinism, bit for bit. Recursive indicators (EMA, Wilder RSI/ATR) make a value depend on
all earlier bars, so computing "only the new tail" from a truncated history would change the
last bits. squall fixes the computation instead: bars are grouped in **blocks** of
``BLOCK`` bars on the epoch-aligned interval grid, and every block is computed from exactly the
``LOOKBACK`` stored rows before it plus its own rows (older weights of EMA/Wilder with the
periods used here are far below 1e-16). Bulk builds, incremental refreshes and on-the-fly
recomputation all evaluate the same windows, so they agree exactly.

Staleness. A row's ``candle_fingerprint`` is the digest of exactly the candles in its window
up to the row (``storage.fingerprint``): when a stored candle in that window changes (a late
correction, a backfilled gap), the row no longer matches and is recomputed before it is served.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from compute.indicators.pipeline import compute_indicators
from compute.indicators.registry import parse_indicator_spec
from storage.candles import CandleRepository
from storage.engine import transaction
from storage.features import FeatureRepository, FeatureRows
from storage.fingerprint import row_digests
from storage.intervals import interval_seconds, periods_per_year

BLOCK = 2048
LOOKBACK = 2048
FEATURE_VERSION = "v1"
#: the v1 feature set; ``{ppy}`` is the interval's periods per year (365-day year)
V1_TEMPLATE = (
    "sma:20,ema:12,ema:26,ema:50,rsi:14,macd:12:26:9,atr:14,bb:20:2,zscore:20,vwap:20,svwap,"
    "ret,logret,rvol:30:{ppy},vov:30:30:{ppy},vreg,trend,ema_cross:12:26,rsi_mr,bb_break"
)


@dataclass(frozen=True)
class FeatureSetSpec:
    version: str
    spec: str
    columns: list[str]


def feature_set(interval: str, version: str = FEATURE_VERSION) -> FeatureSetSpec:
    """The concrete feature set of ``version`` for ``interval`` (its key is ``v1:1h``)."""
    if version != FEATURE_VERSION:
        raise ValueError(f"unknown feature set version {version!r}; known: {FEATURE_VERSION}")
    spec = V1_TEMPLATE.format(ppy=f"{periods_per_year(interval):g}")
    columns = [c for r in parse_indicator_spec(spec) for c in r.columns.values()]
    return FeatureSetSpec(f"{version}:{interval}", spec, columns)


def _block_of(ts: np.ndarray, step: int) -> np.ndarray:
    return (ts // step) // BLOCK


def compute_blocks(
    candles: pd.DataFrame, fs: FeatureSetSpec, step: int, blocks: np.ndarray | None = None
) -> FeatureRows:
    """Feature rows for every (or the given) block present in ``candles`` (ascending).

    ``candles`` must contain, for each wanted block, its ``LOOKBACK`` preceding stored rows.
    """
    if candles.empty:
        return FeatureRows(np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 0)))
    ts = candles["ts"].to_numpy(np.int64)
    block = _block_of(ts, step)
    wanted = np.unique(block) if blocks is None else blocks
    digests = row_digests(candles)
    arrays = {c: candles[c].to_numpy(np.float64) for c in ("open", "high", "low", "close")}
    volume = candles["volume_base"].to_numpy(np.float64)
    out_ts, out_fp, out_vals = [], [], []
    for b in wanted:
        rows = np.flatnonzero(block == b)
        if rows.size == 0:
            continue
        first = max(0, int(rows[0]) - LOOKBACK)
        last = int(rows[-1]) + 1
        window = slice(first, last)
        values = compute_indicators(
            fs.spec, arrays["open"][window], arrays["high"][window], arrays["low"][window],
            arrays["close"][window], volume[window], ts[window],
        )  # fmt: skip
        matrix = np.column_stack([np.asarray(values[c], np.float64) for c in fs.columns])
        with np.errstate(over="ignore"):
            fp = np.cumsum(digests[window], dtype=np.uint64).view(np.int64)
        keep = rows - first
        out_ts.append(ts[rows])
        out_fp.append(fp[keep])
        out_vals.append(matrix[keep])
    if not out_ts:
        return FeatureRows(np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 0)))
    return FeatureRows(np.concatenate(out_ts), np.concatenate(out_fp), np.vstack(out_vals))


def _candles_for_blocks(
    session: Session, coin: str, interval: str, first_block_start_ts: int | None
) -> pd.DataFrame:
    """Stored candles from ``LOOKBACK`` rows before the first wanted block to the end."""
    repo = CandleRepository(session)
    if first_block_start_ts is None:
        return repo.frame(coin, interval)
    before = repo.frame(coin, interval, end=first_block_start_ts - 1, limit=LOOKBACK,
                        newest_first=True)  # fmt: skip
    start = int(before["ts"].min()) if not before.empty else first_block_start_ts
    return repo.frame(coin, interval, start=start)


def plan_blocks(
    sessions: sessionmaker[Session], coin: str, interval: str, *, full: bool = False
) -> list[int]:
    """Blocks to (re)compute: all of them, or the newest stored block and every later one."""
    fs = feature_set(interval)
    step = interval_seconds(interval)
    with sessions() as session:
        coverage = CandleRepository(session).coverage(coin, interval)
        latest = None if full else FeatureRepository(session).latest_ts(coin, interval, fs.version)
    if not coverage:
        return []
    first = coverage[0].first_ts if latest is None else latest
    lo, hi = _block_of(np.array([first, coverage[0].last_ts]), step)
    return list(range(int(lo), int(hi) + 1))


def materialize_blocks(
    sessions: sessionmaker[Session],
    coin: str,
    interval: str,
    blocks: list[int],
    *,
    now: int | None = None,
) -> int:
    """Compute and store the feature rows of ``blocks`` (consecutive); returns rows written."""
    if not blocks:
        return 0
    fs = feature_set(interval)
    step = interval_seconds(interval)
    lo, hi = min(blocks), max(blocks)
    with sessions() as session:
        candles = _candles_for_blocks(session, coin, interval, lo * BLOCK * step)
    candles = candles[candles["ts"] < (hi + 1) * BLOCK * step].reset_index(drop=True)
    rows = compute_blocks(candles, fs, step, np.arange(lo, hi + 1))
    with transaction(sessions) as session:
        repo = FeatureRepository(session)
        repo.register_set(fs.version, fs.spec, fs.columns)
        return repo.upsert(coin, interval, fs.version, rows, now=now or int(time.time()))


def materialize(
    sessions: sessionmaker[Session],
    coin: str,
    interval: str,
    *,
    full: bool = False,
    now: int | None = None,
) -> int:
    """Bring one series' features up to date in this process (see ``plan_blocks``)."""
    blocks = plan_blocks(sessions, coin, interval, full=full)
    written = 0
    for i in range(0, len(blocks), 64):
        written += materialize_blocks(sessions, coin, interval, blocks[i : i + 64], now=now)
    return written


def read_fresh(
    session: Session,
    coin: str,
    interval: str,
    *,
    start: int | None = None,
    end: int | None = None,
    limit: int | None = None,
) -> tuple[FeatureSetSpec, FeatureRows, int]:
    """Feature rows for the request, never stale: stored rows whose fingerprint still matches
    the candles are served as stored; missing or stale ones are recomputed (not written).

    Returns (feature set, rows, how many rows were recomputed).
    """
    fs = feature_set(interval)
    step = interval_seconds(interval)
    repo = CandleRepository(session)
    wanted = repo.frame(coin, interval, start=start, end=end, limit=limit,
                        newest_first=start is None)  # fmt: skip
    wanted = wanted.sort_values("ts", ignore_index=True)
    if wanted.empty:
        return fs, FeatureRows(np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 0))), 0
    first_ts = int(wanted["ts"].iloc[0])
    first_block = int(_block_of(np.array([first_ts]), step)[0])
    candles = _candles_for_blocks(session, coin, interval, first_block * BLOCK * step)
    candles = candles[candles["ts"] <= int(wanted["ts"].iloc[-1])].reset_index(drop=True)
    stored = FeatureRepository(session).read(
        coin, interval, fs.version, start=first_ts, end=int(wanted["ts"].iloc[-1])
    )
    # expected fingerprints of the wanted rows, from the candles as they are now
    ts = candles["ts"].to_numpy(np.int64)
    block = _block_of(ts, step)
    digests = row_digests(candles)
    with np.errstate(over="ignore"):
        prefix = np.cumsum(digests, dtype=np.uint64)
    expected: dict[int, int] = {}
    for b in np.unique(block[ts >= first_ts]):
        rows = np.flatnonzero(block == b)
        first = max(0, int(rows[0]) - LOOKBACK)
        base = prefix[first - 1] if first > 0 else np.uint64(0)
        with np.errstate(over="ignore"):
            fps = (prefix[rows] - base).view(np.int64)
        expected.update(zip(ts[rows].tolist(), fps.tolist(), strict=True))
    good = {
        int(t): i
        for i, (t, fp) in enumerate(zip(stored.ts, stored.fingerprints, strict=True))
        if expected.get(int(t)) == int(fp)
    }
    wanted_ts = wanted["ts"].to_numpy(np.int64)
    if stored.values.size and all(int(t) in good for t in wanted_ts):
        index = [good[int(t)] for t in wanted_ts]
        return fs, FeatureRows(wanted_ts, stored.fingerprints[index], stored.values[index]), 0
    stale_blocks = np.unique(
        _block_of(np.array([t for t in wanted_ts if int(t) not in good]), step)
    )
    fresh = compute_blocks(candles, fs, step, stale_blocks)
    by_ts = {int(t): (fresh.fingerprints[i], fresh.values[i]) for i, t in enumerate(fresh.ts)}
    width = len(fs.columns)
    values = np.empty((len(wanted_ts), width))
    fps_out = np.empty(len(wanted_ts), np.int64)
    for i, t in enumerate(wanted_ts):
        if int(t) in by_ts:
            fps_out[i], values[i] = by_ts[int(t)]
        else:
            j = good[int(t)]
            fps_out[i], values[i] = stored.fingerprints[j], stored.values[j]
    return fs, FeatureRows(wanted_ts, fps_out, values), len(by_ts)
