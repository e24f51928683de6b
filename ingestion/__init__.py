"""Ingestion: turning external candle sources (files, exchange APIs) into the canonical frame.

Everything here produces ``storage.columns.CANDLE_COLUMNS`` frames; persisting them is the
storage layer's job, so parsers stay pure and testable without a database.
"""
