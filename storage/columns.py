"""The canonical in-memory candle frame shared by importers, providers and repositories.

A candle batch is a ``pandas.DataFrame`` with exactly these columns:

====================  ===========  ==============================================================
column                dtype        meaning
====================  ===========  ==============================================================
coin                  object(str)  base asset, upper case (``BTC``); the quote asset is a setting
interval              object(str)  one of ``storage.intervals.INTERVAL_SECONDS``
ts                    int64        bar open time, unix seconds UTC, aligned to the interval
open/high/low/close   float64      prices in the quote asset
volume_base           float64      traded volume in base-asset units (>= 0)
volume_quote          float64      traded notional in quote-asset units (>= 0); NaN when unknown
trade_count           float64      number of trades; NaN when unknown (float so NaN fits)
source                object(str)  where the row came from (``file:kline12``, ``synthetic`` ...)
====================  ===========  ==============================================================
"""

from __future__ import annotations

CANDLE_KEY: tuple[str, ...] = ("coin", "interval", "ts")
CANDLE_VALUES: tuple[str, ...] = (
    "open",
    "high",
    "low",
    "close",
    "volume_base",
    "volume_quote",
    "trade_count",
)
CANDLE_COLUMNS: tuple[str, ...] = (*CANDLE_KEY, *CANDLE_VALUES, "source")
