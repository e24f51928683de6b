"""The file provider: candle CSVs (any layout ``squall import`` reads) behind the provider API.

Files are found in a folder by name (``binance_spot_BTCUSDT_1h_….csv`` → BTC 1h, as
``infer_coin_interval`` reads it) or given explicitly; each is parsed once and cached. Files
carry no derivatives data: funding and open interest come back empty and a snapshot is built
from the last closed candle, with the fields a file cannot know left as ``None``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ingestion.fileimport import infer_coin_interval, parse_candle_file
from ingestion.providers.base import FUNDING_COLUMNS, OPEN_INTEREST_COLUMNS
from storage.columns import CANDLE_COLUMNS
from storage.errors import ConfigurationError
from storage.intervals import interval_seconds


class FileProvider:
    """Serves closed candles from local files."""

    name = "file"
    source = "file"

    def __init__(
        self,
        folder: str | os.PathLike[str] | None = None,
        files: dict[tuple[str, str], str | os.PathLike[str]] | None = None,
    ) -> None:
        self._paths: dict[tuple[str, str], Path] = {}
        if folder is not None:
            for path in sorted(Path(folder).glob("*.csv")):
                found_coin, found_interval = infer_coin_interval(path)
                if found_coin and found_interval:
                    self._paths.setdefault((found_coin, found_interval), path)
        for (coin, interval), given in (files or {}).items():
            self._paths[(coin.upper(), interval)] = Path(given)
        self._cache: dict[tuple[str, str], pd.DataFrame] = {}

    @property
    def series(self) -> list[tuple[str, str]]:
        return sorted(self._paths)

    def _frame(self, coin: str, interval: str) -> pd.DataFrame:
        key = (coin.upper(), interval)
        if key not in self._cache:
            path = self._paths.get(key)
            if path is None:
                known = ", ".join(f"{c} {i}" for c, i in self.series) or "none"
                raise ConfigurationError(f"no file for {key[0]} {interval}; files for: {known}")
            # parse as of the far future: the wall-clock check happens per request below
            parsed = parse_candle_file(path, coin=key[0], interval=interval, now_s=2**62)
            self._cache[key] = parsed.frame.assign(source="file")
        return self._cache[key]

    def fetch_candles(
        self, coin: str, interval: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        step = interval_seconds(interval)
        now = int(time.time()) if now is None else now
        frame = self._frame(coin, interval)
        ts = frame["ts"]
        mask = (ts >= start) & (ts <= end) & (ts + step <= now)
        return frame.loc[mask, list(CANDLE_COLUMNS)].reset_index(drop=True)

    def fetch_snapshot(self, coin: str, *, now: int | None = None) -> dict[str, Any]:
        now = int(time.time()) if now is None else now
        for interval in sorted(
            {i for c, i in self._paths if c == coin.upper()}, key=interval_seconds
        ):
            closed = self.fetch_candles(coin, interval, 0, now, now=now)
            if not closed.empty:
                last = closed.iloc[-1]
                return {
                    "coin": coin.upper(),
                    "ts": int(last["ts"]) + interval_seconds(interval),
                    "last_price": float(last["close"]),
                    "source": "file",
                }
        raise ConfigurationError(f"no closed candles for {coin} in the files")

    def fetch_funding(
        self, coin: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        return pd.DataFrame(columns=list(FUNDING_COLUMNS))

    def fetch_open_interest(
        self, coin: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        return pd.DataFrame(columns=list(OPEN_INTEREST_COLUMNS))

    def close(self) -> None:
        self._cache.clear()
