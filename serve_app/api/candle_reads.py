"""Moved to :mod:`storage.candle_reads`; kept for imports written against the old place."""

from storage.candle_reads import CandleColumns, read_candle_columns

__all__ = ["CandleColumns", "read_candle_columns"]
