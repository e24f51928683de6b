"""Fixtures for the kernel tests: real candle files (read here, independently of squall's
loaders) and small synthetic series.

The real files live in ``../shared/data`` beside the repository root (or ``SQUALL_SHARED_DATA``);
tests that need them skip cleanly when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REAL_FILES = {
    "btc_1d": "binance_spot_BTCUSDT_1d_2017-2026.csv",
    "eth_4h": "binance_spot_ETHUSDT_4h_2017-2026.csv",
    "sol_1h": "binance_spot_SOLUSDT_1h_2020-2026.csv",
}


def data_dir() -> Path | None:
    override = os.environ.get("SQUALL_SHARED_DATA")
    path = (
        Path(override)
        if override
        else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    )
    return path if path.is_dir() else None


def load_candles(name: str) -> dict[str, np.ndarray]:
    """One yanniedog-format file as arrays; the last bar (still open, see SOURCES.md) dropped."""
    folder = data_dir()
    if folder is None or not (folder / REAL_FILES[name]).is_file():
        pytest.skip("real-data folder ../shared/data is absent")
    frame = pd.read_csv(folder / REAL_FILES[name]).iloc[:-1]
    # unit-safe: pandas 3 infers the datetime resolution, so no astype("int64") // 10**9
    ts = pd.to_datetime(frame["timestamp"], utc=True).dt.as_unit("s").astype("int64")
    out = {
        k: frame[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close", "volume")
    }
    out["ts"] = ts.to_numpy(dtype=np.int64)
    return out


@pytest.fixture(scope="session", params=sorted(REAL_FILES))
def real_candles(request: pytest.FixtureRequest) -> tuple[str, dict[str, np.ndarray]]:
    return request.param, load_candles(request.param)


def random_candles(
    length: int, seed: int = 0, start: float = 60_000.0, vol: float = 0.01
) -> dict[str, np.ndarray]:
    """A consistent OHLCV random walk (prices ~``start``), hourly timestamps."""
    rng = np.random.default_rng(seed)
    close = start * np.exp(np.cumsum(rng.normal(0.0, vol, length)))
    open_ = np.concatenate([[start], close[:-1]])
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, vol / 2, length)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, vol / 2, length)))
    volume = rng.lognormal(0.0, 1.0, length)
    ts = 1_700_000_000 + 3_600 * np.arange(length, dtype=np.int64)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume, "ts": ts}


OHLCV = ("open", "high", "low", "close", "volume", "ts")

# Every registry item, with defaults and with other parameters (two-level windows, gates,
# long-only), all defined well inside 300 bars. Shared by several test modules so that the
# pipeline compiles once per shape for all of them.
COVERAGE_SPEC = (
    "sma:20,sma:30,ema:20,rsi:14,rsi:3,macd:12:26:9,macd:3:7:4,atr:14,bb:20:2,bb:30:1.5,zscore:20,"
    "zscore:30,vwap:20,vwap:30,svwap,ret,logret,rvol:20:8760,vov:10:10:8760,vreg:20:100,vreg:5:20,"
    "vreg_fixed:10:0.4:0.8:8760,trend:20:14:5:0.1,trend:5:3:2:0.2,ema_cross:12:26,ema_cross:5:20:1:1,"
    "rsi_mr:14:30:70,rsi_mr:2:10:90:0:1,bb_break:20:2,bb_break:20:2:1:1"
)
COVERAGE_LENGTH = 300


def call_kwargs(candles: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: candles[k] for k in OHLCV}
