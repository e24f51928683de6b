"""The read cache of ``serve_app.services.inputs``: a window read again while its series is
unchanged comes from memory; any write that changes the series' candles (insert, update,
delete, a replaced source) bumps ``series.version`` and the next read sees the new rows."""

from __future__ import annotations

import numpy as np

from serve_app.services import inputs
from serve_app.services.inputs import Window, load_series, read_columns
from storage.candles import CandleRepository
from storage.engine import make_engine, session_factory, transaction
from storage.series import SeriesRepository
from tests.serve_app.factories import HOUR, T0, candle, frame, seed


def _rows(n: int, **over: float) -> list[dict]:
    return [candle("BTC", "1h", T0 + i * HOUR, i, **over) for i in range(n)]


def test_unchanged_series_reads_from_memory_and_writes_invalidate(database_url: str) -> None:
    inputs.READS.clear()
    seed(database_url, _rows(100))
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    w = Window("BTC", "1h", None, None)
    try:
        with sessions() as s:
            v0 = SeriesRepository(s).version("BTC", "1h")
            first = load_series(s, w, with_funding=False)
            again = load_series(s, w, with_funding=False)
        assert again.ts is first.ts  # the same arrays: no read happened
        assert v0 is not None and len(first) == 100
        # the same page again changes nothing: no new version, still cached
        seed(database_url, _rows(100))
        with sessions() as s:
            assert SeriesRepository(s).version("BTC", "1h") == v0
            assert load_series(s, w, with_funding=False).ts is first.ts
        # a changed close: a new version, and the new value is read
        changed = _rows(100)
        changed[50]["close"] = 160.0
        changed[50]["high"] = 161.0
        seed(database_url, changed)
        with sessions() as s:
            assert SeriesRepository(s).version("BTC", "1h") not in (None, v0)
            fresh = load_series(s, w, with_funding=False)
        assert fresh.close[50] == 160.0 and fresh.fingerprint != first.fingerprint
        # one more bar, read through the windowed path (limit / latest) as /indicators does
        seed(database_url, [candle("BTC", "1h", T0 + 100 * HOUR, 100)])
        with sessions() as s:
            tail = read_columns(s, "BTC", "1h", limit=5, latest=True)
            assert int(tail.ts[-1]) == T0 + 100 * HOUR
        # a deleted series: the next read finds nothing
        with transaction(sessions) as s:
            CandleRepository(s).delete_series("BTC", "1h")
        with sessions() as s:
            assert len(read_columns(s, "BTC", "1h", limit=5, latest=True)) == 0
            assert inputs.count_candles(s, w) == 0
    finally:
        engine.dispose()


def test_versions_change_with_the_candles_only(database_url: str) -> None:
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    try:
        with transaction(sessions) as s:
            CandleRepository(s).upsert(frame(_rows(10)))
        with sessions() as s:
            v = SeriesRepository(s).version("BTC", "1h")
        for _ in range(2):  # idempotent re-writes do not count
            with transaction(sessions) as s:
                CandleRepository(s).upsert(frame(_rows(10)))
        with sessions() as s:
            assert SeriesRepository(s).version("BTC", "1h") == v
        with transaction(sessions) as s:
            CandleRepository(s).upsert(frame(_rows(11)))
        with sessions() as s:
            assert SeriesRepository(s).version("BTC", "1h") not in (None, v)
            assert np.array_equal(
                read_columns(s, "BTC", "1h", limit=100).ts, T0 + HOUR * np.arange(11)
            )
    finally:
        engine.dispose()
