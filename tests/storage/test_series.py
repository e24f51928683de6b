"""One source per series: claims, refusals, --replace-source and migration 0005's backfill,
on SQLite and Postgres. Expected rows are built by hand here, never read back from the code."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from storage.candles import CandleRepository, UpsertResult
from storage.engine import make_engine, transaction
from storage.errors import DataIntegrityError, SourceConflictError
from storage.migrate import downgrade, upgrade
from storage.series import FAMILY_SQL, SeriesRepository, is_exchange, source_family

D = 86_400
T0 = 1_788_998_400  # 2026-09-10T00:00:00Z


def bars(days: list[int], source: str, *, coin: str = "BTC", base: float = 100.0) -> pd.DataFrame:
    """Daily bars on ``T0 + day * D``; values depend on the day and ``base`` only."""
    k = np.asarray(days, dtype=np.float64)
    return pd.DataFrame(
        {
            "coin": coin,
            "interval": "1d",
            "ts": T0 + np.asarray(days, dtype=np.int64) * D,
            "open": base + k,
            "high": base + 2 + k,
            "low": base - 1 + k,
            "close": base + 1 + k,
            "volume_base": 10.0 + k,
            "volume_quote": np.nan,
            "trade_count": np.nan,
            "source": source,
        }
    )


def rows(engine: Engine, coin: str = "BTC") -> list[tuple[Any, ...]]:
    """Every stored row of the series, every column, by ts (the raw table, not a reader)."""
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT ts, open, high, low, close, volume_base, volume_quote, trade_count, "
                    "source, ingested_at FROM candles WHERE coin = :c AND \"interval\" = '1d' "
                    "ORDER BY ts"
                ),
                {"c": coin},
            )
        ]


def write(sessions: sessionmaker[Session], frame: pd.DataFrame, **kw: Any) -> UpsertResult:
    with transaction(sessions) as s:
        return CandleRepository(s).upsert(frame, **kw)


def owner(sessions: sessionmaker[Session], coin: str = "BTC") -> tuple[str, int] | None:
    with sessions() as s:
        info = SeriesRepository(s).get(coin, "1d")
    return None if info is None else (info.source, info.foreign_rows)


# ------------------------------------------------------------------------------ families


def test_source_family_in_python_and_sql_agree(engine: Engine) -> None:
    cases = {
        "file": "file",
        "file:ohlcv6": "file",
        "file:kline12": "file",
        "filex": "filex",
        "profile:x": "profile:x",
        "synthetic": "synthetic",
        "binance:spot": "binance:spot",
        "binance:um": "binance:um",
        "binance-archive:spot": "binance:spot",
        "binance-archive:um": "binance:um",
    }
    with engine.connect() as conn:
        for source, family in cases.items():
            assert source_family(source) == family
            sql = text(f"SELECT {FAMILY_SQL} FROM (SELECT :s AS source) AS t")
            assert conn.execute(sql, {"s": source}).scalar_one() == family
    assert [is_exchange(s) for s in ("synthetic", "file", "file:cdd", "binance:spot")] == [
        False,
        False,
        False,
        True,
    ]


# -------------------------------------------------------------------------------- claims


def test_first_writer_claims_and_other_sources_are_refused(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    assert write(sessions, bars(list(range(83)), "synthetic")).inserted == 83
    assert owner(sessions) == ("synthetic", 0)
    before = rows(engine)
    with pytest.raises(SourceConflictError) as err:
        write(sessions, bars([21, 22], "file:ohlcv6", base=60_000.0))
    message = str(err.value)
    assert message.startswith(
        "BTC 1d belongs to source 'synthetic' (83 rows, 2026-09-10T00:00:00Z .. "
        "2026-12-01T00:00:00Z); refusing to write 2 rows of source 'file' (file:ohlcv6) into "
        "it: a series holds one source, and nothing was written."
    )
    for remedy in ("SQUALL_DATABASE_URL", "SYN-BTC", "--coin NAME", "--replace-source"):
        assert remedy in message
    assert (err.value.owner, err.value.attempted) == ("synthetic", "file")
    assert rows(engine) == before  # row for row, ingested_at included
    assert owner(sessions) == ("synthetic", 0)
    # the same family is welcome: another file layout of the series' data
    assert write(sessions, bars([83], "synthetic")).inserted == 1


def test_file_layouts_are_one_source_and_other_series_are_independent(
    sessions: sessionmaker[Session],
) -> None:
    write(sessions, bars([0, 1], "file:ohlcv6"))
    assert write(sessions, bars([1, 2], "file:kline12")) == UpsertResult(
        received=2, inserted=1, unchanged=1
    )
    assert owner(sessions) == ("file", 0)
    write(sessions, bars([0, 1], "synthetic", coin="SYN-BTC"))  # another coin name
    assert owner(sessions, "SYN-BTC") == ("synthetic", 0)
    with sessions() as s:
        listed = [(i.coin, i.interval, i.source) for i in SeriesRepository(s).all()]
    assert listed == [("BTC", "1d", "file"), ("SYN-BTC", "1d", "synthetic")]


def test_a_batch_mixing_two_sources_in_one_series_writes_nothing(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    mixed = pd.concat([bars([0, 1], "synthetic"), bars([2], "file:ohlcv6")], ignore_index=True)
    with pytest.raises(DataIntegrityError, match="several sources"):
        write(sessions, mixed)
    assert rows(engine) == [] and owner(sessions) is None


def test_a_refused_series_rolls_back_the_whole_batch(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    write(sessions, bars([0], "synthetic", coin="ETH"))
    batch = pd.concat([bars([0, 1], "file"), bars([5], "file", coin="ETH")], ignore_index=True)
    with pytest.raises(SourceConflictError):
        write(sessions, batch)  # BTC is claimed first (sorted), then ETH is refused
    assert rows(engine) == [] and owner(sessions) is None


def test_delete_series_forgets_its_owner(sessions: sessionmaker[Session]) -> None:
    write(sessions, bars([0], "synthetic"))
    with transaction(sessions) as s:
        CandleRepository(s).delete_series("BTC", "1d")
    assert owner(sessions) is None
    assert write(sessions, bars([0], "file:ohlcv6")).inserted == 1


def test_concurrent_writers_of_two_sources_cannot_mix(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    """The first writer's claim holds until it commits; the second then sees its owner."""
    claimed, release = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def first() -> None:
        with transaction(sessions) as s:
            CandleRepository(s).upsert(bars([0, 1, 2], "synthetic"))
            claimed.set()
            release.wait(20)

    def second() -> None:
        try:
            write(sessions, bars([3, 4], "file:ohlcv6"))
            outcome["second"] = "written"
        except SourceConflictError as exc:
            outcome["second"] = exc

    a = threading.Thread(target=first)
    a.start()
    assert claimed.wait(20)
    b = threading.Thread(target=second)
    b.start()
    time.sleep(0.5)
    assert b.is_alive(), "the second writer must wait for the first one's claim"
    release.set()
    a.join(20)
    b.join(20)
    assert isinstance(outcome["second"], SourceConflictError)
    assert [r[8] for r in rows(engine)] == ["synthetic"] * 3


# ------------------------------------------------------------------------ replace_source


def test_replace_source_rewrites_exactly_the_span_of_the_new_rows(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    write(sessions, bars(list(range(83)), "synthetic"), now=1_000)
    before = {r[0]: r for r in rows(engine)}
    # a real file for days 21, 22 and 24 (a hole on day 23) and a bar past the series' end
    new = bars([21, 22, 24, 90], "file:ohlcv6", base=60_000.0)
    result = write(sessions, new, now=2_000, replace_source=True)
    # span days 21..90: stored 21..82 (62 rows); 21, 22, 24 rewritten, the 59 others removed
    assert result == UpsertResult(received=4, inserted=1, replaced=3, removed=59)
    after = {r[0]: r for r in rows(engine)}
    span = range(T0 + 21 * D, T0 + 90 * D + 1)
    assert {t: r for t, r in after.items() if t not in span} == {
        t: r for t, r in before.items() if t not in span
    }  # outside the span: untouched, row for row
    assert sorted(t for t in after if t in span) == list(new["ts"])
    assert all(after[t][8] == "file:ohlcv6" and after[t][9] == 2_000 for t in new["ts"])
    assert after[T0 + 21 * D][1:5] == (60_021.0, 60_023.0, 60_020.0, 60_022.0)
    assert owner(sessions) == ("file", 21)  # days 0..20 are still synthetic, and say so
    with pytest.raises(SourceConflictError, match="belongs to source 'file'"):
        write(sessions, bars([95], "synthetic"))


def test_replace_source_by_the_owner_is_idempotent_and_cleans_its_span(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    write(sessions, bars([0, 1, 2, 3], "file:ohlcv6"))
    again = write(sessions, bars([0, 1, 2, 3], "file:kline12"), replace_source=True)
    assert again == UpsertResult(received=4, unchanged=4)
    # the owner's own replacement still leaves exactly the new rows in its span
    assert write(sessions, bars([0, 3], "file"), replace_source=True) == UpsertResult(
        received=2, unchanged=2, removed=2
    )
    assert [r[0] for r in rows(engine)] == [T0, T0 + 3 * D]


def test_replace_source_of_a_whole_series_leaves_it_clean(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    write(sessions, bars([5, 6, 7], "synthetic"))
    result = write(sessions, bars(list(range(10)), "binance:spot"), replace_source=True)
    assert result == UpsertResult(received=10, inserted=7, replaced=3)
    assert owner(sessions) == ("binance:spot", 0)
    assert {r[8] for r in rows(engine)} == {"binance:spot"}


def test_a_mixed_series_is_cleaned_by_its_owner(sessions: sessionmaker[Session]) -> None:
    write(sessions, bars(list(range(10)), "synthetic"))
    write(sessions, bars([8, 9, 10], "file:ohlcv6"), replace_source=True)
    assert owner(sessions) == ("file", 8)
    # the owner writes the rest (same values): its bars replace the synthetic rows
    assert write(sessions, bars(list(range(8)), "file:ohlcv6")) == UpsertResult(
        received=8, replaced=8
    )
    assert owner(sessions) == ("file", 0)


# ---------------------------------------------------------------------------- migration


def _insert_legacy(url: str, records: list[tuple[str, str, int, str]]) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    'INSERT INTO candles (coin, "interval", ts, open, high, low, close, '
                    "volume_base, source, ingested_at) "
                    "VALUES (:c, :i, :ts, 1, 2, 0.5, 1.5, 3, :s, :at)"
                ),
                [{"c": c, "i": i, "ts": ts, "s": s, "at": 500 + n} for n, (c, i, ts, s) in
                 enumerate(records)],
            )  # fmt: skip
            conn.execute(
                text(
                    'INSERT INTO known_gaps (coin, "interval", start_ts, end_ts, missing, '
                    "source, checked_at) VALUES ('BTC', '4h', :t, :t, 1, :s, 0)"
                ),
                [
                    {"t": 14_400 * (k + 1), "s": s}
                    for k, s in enumerate(["synthetic", "file", "binance:spot", "binance"])
                ],
            )
    finally:
        engine.dispose()


def test_migration_backfills_owners_from_existing_candles(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    downgrade(database_url, "0004")
    try:
        legacy = [("BTC", "1d", T0 + k * D, "synthetic") for k in range(81)]
        legacy += [("BTC", "1d", T0 + (83 + k) * D, "file:ohlcv6") for k in range(2)]
        legacy += [("ETH", "4h", 14_400 * k, "binance:spot") for k in range(3)]
        legacy += [("SOL", "1h", 0, "file:kline12"), ("SOL", "1h", 3600, "file:ohlcv6")]
        legacy += [("XRP", "1h", 0, "synthetic"), ("XRP", "1h", 3600, "file")]  # a tie
        _insert_legacy(database_url, legacy)
        with caplog.at_level(logging.WARNING):
            upgrade(database_url)
    finally:
        upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            series = conn.execute(
                text('SELECT coin, "interval", source, foreign_rows, created_at FROM series '
                     'ORDER BY coin, "interval"')
            ).all()  # fmt: skip
            gaps = conn.execute(text("SELECT source FROM known_gaps ORDER BY source")).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in series] == [
        ("BTC", "1d", "synthetic", 2, 500),
        ("ETH", "4h", "binance:spot", 0, 583),
        ("SOL", "1h", "file", 0, 586),
        ("XRP", "1h", "file", 1, 588),  # one row each: the alphabetically first family
    ]
    # outages "recorded" by the synthetic market or a file were never an exchange's
    assert [g[0] for g in gaps] == ["binance", "binance:spot"]
    warned = [r.getMessage() for r in caplog.records if "several sources" in r.getMessage()]
    assert len(warned) == 2
    assert "BTC 1d" in warned[0] and "synthetic x 81, file x 2" in warned[0]
