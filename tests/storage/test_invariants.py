"""``squall check`` and ``storage.invariants``: real Binance files imported with ``squall import``
pass; rows planted with raw SQL around the database's own constraints are each reported, by
rule and key, with a non-zero exit and bounded output."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from serve_app.cli import main
from serve_app.settings import Settings
from storage.engine import make_engine
from storage.invariants import RULES, check_store
from storage.migrate import upgrade

pytestmark = pytest.mark.realdata
# daily spot (2017-), a 1h kline12 month, a 1m futures month, and the messy CryptoDataDownload
# hourly file (duplicates, mixed units, newest first): what the importer must clean up
FILES = (
    "binance_spot_BTCUSDT_1d_2017-2026.csv",
    "binance_spot_BTCUSDT_1h_2022-01_kline12.csv",
    "binance_um_AVAXUSDT_1m_2023-02_kline12.csv",
    "cdd_binance_ETHUSDT_1h.csv",
)
DAY = 86_400


@pytest.fixture(scope="module")
def real_db(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database filled from ../shared/data by the real ``squall import``."""
    from tests.serve_app.live_server import import_files

    path = tmp_path_factory.mktemp("invariants") / "real.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    import_files(url, [shared_data / name for name in FILES])
    return path


@pytest.fixture
def copy_db(real_db: Path, tmp_path: Path) -> Iterator[Engine]:
    """A private copy of the real database to plant rows in."""
    path = tmp_path / "planted.db"
    shutil.copy(real_db, path)
    engine = make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def _run_check(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["check", *args], settings=Settings(database_url=url))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_real_data_passes(real_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(f"sqlite:///{real_db}")
    try:
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT COUNT(*) FROM candles")).scalar_one()
        report = check_store(engine)
    finally:
        engine.dispose()
    assert stored > 75_000  # ~3,000 days + 744 h + 40,320 min + 33,413 h (after dedup)
    assert report.ok, report.violations
    assert report.rows["candles"] == stored and report.rules == len(RULES)
    code, out = _run_check(f"sqlite:///{real_db}", capsys)
    assert code == 0 and out.rstrip().endswith(": ok") and f"{stored:,}" in out


def _btc_day(engine: Engine, offset: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT ts FROM candles WHERE coin = 'BTC' AND \"interval\" = '1d' "
                    "ORDER BY ts LIMIT 1 OFFSET :o"
                ),
                {"o": offset},
            ).scalar_one()
        )


def test_planted_duplicate_is_reported(copy_db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    ts = _btc_day(copy_db, 100)
    with copy_db.begin() as conn:  # a restore that lost the primary key, then a second copy
        conn.execute(text("ALTER TABLE candles RENAME TO candles_kept"))
        conn.execute(text("CREATE TABLE candles AS SELECT * FROM candles_kept"))
        conn.execute(text("DROP TABLE candles_kept"))
        conn.execute(
            text(
                "INSERT INTO candles SELECT * FROM candles "
                "WHERE coin = 'BTC' AND \"interval\" = '1d' AND ts = :ts"
            ),
            {"ts": ts},
        )
    report = check_store(copy_db)
    found = {(v.table, v.rule): v for v in report.violations}
    dup = found[("candles", "duplicate_key")]
    assert dup.count == 1
    assert dup.examples == [{"coin": "BTC", "interval": "1d", "ts": ts, "n": 2}]
    assert set(found) <= {("candles", "duplicate_key"), ("candles", "ts_not_monotonic")}
    code, out = _run_check(str(copy_db.url), capsys)
    assert code == 1
    assert "candles.duplicate_key: 1" in out and f"ts={ts}" in out


def test_planted_misaligned_row_is_reported(
    copy_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    ts = _btc_day(copy_db, 200) + 3 * 3600  # 03:00 UTC: inside a daily bar, not its open
    with copy_db.begin() as conn:
        conn.execute(text("PRAGMA ignore_check_constraints = ON"))  # bypass ts_aligned
        conn.execute(
            text(
                'INSERT INTO candles (coin, "interval", ts, open, high, low, close, '
                "volume_base, volume_quote, trade_count, source, ingested_at) "
                "VALUES ('BTC', '1d', :ts, 100, 110, 90, 105, 1, 100, 3, 'file', :ing)"
            ),
            {"ts": ts, "ing": ts + 10 * DAY},
        )
    report = check_store(copy_db)
    found = {(v.table, v.rule): v for v in report.violations}
    assert found[("candles", "ts_misaligned")].examples == [
        {"coin": "BTC", "interval": "1d", "ts": ts}
    ]
    assert found[("candles", "ts_not_monotonic")].count == 2  # it, and the bar after it
    assert set(found) == {("candles", "ts_misaligned"), ("candles", "ts_not_monotonic")}
    code, out = _run_check(str(copy_db.url), capsys)
    assert code == 1 and "candles.ts_misaligned: 1" in out and f"ts={ts}" in out


def test_each_value_rule_and_bounded_output(
    copy_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """One planted row per value rule, each caught by its rule only; 50 misaligned rows are
    counted in full but shown as the first few keys."""
    last = _btc_day(copy_db, 0) - DAY  # before the first stored day: no neighbour disturbed
    planted = {
        "high_below_open_close": (100, 104, 90, 105, 1.0, "file", 0),
        "low_above_open_close": (100, 110, 101, 105, 1.0, "file", 0),
        "price_not_positive": (0, 110, 0, 105, 1.0, "file", 0),
        "volume_negative": (100, 110, 90, 105, -1.0, "file", 0),
        "open_candle": (100, 110, 90, 105, 1.0, "file", -DAY + 1),  # stored before its close
    }
    with copy_db.begin() as conn:
        conn.execute(text("PRAGMA ignore_check_constraints = ON"))
        for k, (o, h, lo, c, v, src, early) in enumerate(planted.values()):
            ts = last - (k + 1) * 1000 * DAY
            conn.execute(
                text(
                    "INSERT INTO candles (coin, \"interval\", ts, open, high, low, close, "
                    "volume_base, source, ingested_at) "
                    "VALUES (:coin, '1d', :ts, :o, :h, :l, :c, :v, :src, :ing)"
                ),
                {"coin": f"Z{k}", "ts": ts, "o": o, "h": h, "l": lo, "c": c, "v": v,
                 "src": src, "ing": ts + DAY + early if early else ts + 2 * DAY},
            )  # fmt: skip
        for k in range(50):
            conn.execute(
                text(
                    'INSERT INTO candles (coin, "interval", ts, open, high, low, close, '
                    "volume_base, source, ingested_at) "
                    "VALUES ('BTC', '1h', :ts, 1, 1, 1, 1, 1, 'file', :ing)"
                ),
                {"ts": 1_500_000_000 + k * 3600 + 7, "ing": 1_600_000_000},
            )
    report = check_store(copy_db, examples=3)
    found = {v.rule: v for v in report.violations if v.table == "candles"}
    for k, rule in enumerate(planted):
        assert found[rule].count == 1 and found[rule].examples[0]["coin"] == f"Z{k}", rule
    # price_not_positive's row also has low 0 <= everything: only its own rule and none else
    assert found["ts_misaligned"].count == 50 and len(found["ts_misaligned"].examples) == 3
    # the planted series Z0..Z4 have no source row, which is reported too
    assert found["series_unregistered"].count == len(planted)
    code, out = _run_check(str(copy_db.url), capsys, "--examples", "2", "--max", "3")
    assert code == 1
    lines = out.strip().splitlines()
    assert len(lines) <= 2 + 3 * 3 + 1  # header lines, 3 rules × (name + 2 keys), "... more"
    assert lines[-1].startswith("  ... and ") and "more rule(s)" in lines[-1]


@pytest.fixture
def private_postgres() -> Iterator[str]:
    """A migrated Postgres schema of its own (its constraints get dropped), removed after."""
    from tests.conftest import POSTGRES_URL, _postgres_unavailable

    reason = _postgres_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI requires Postgres: {reason}")
        pytest.skip(reason)
    schema = f"squall_inv_{uuid.uuid4().hex[:10]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


_PG_ROW = (
    'INSERT INTO candles (coin, "interval", ts, open, high, low, close, volume_base, source, '
    "ingested_at) VALUES ('BTC', '1h', :ts, 1, 2, 1, 1, 1, 'file', 1800000000)"
)


@pytest.mark.postgres
def test_postgres_planted_misaligned_row(private_postgres: str) -> None:
    """The same SQL on Postgres (``interval`` is a keyword there): a clean store passes; a
    misaligned row planted past its dropped constraint is reported."""
    engine = make_engine(private_postgres)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    'INSERT INTO series (coin, "interval", source, created_at, source_since, '
                    "foreign_rows) VALUES ('BTC', '1h', 'file', 0, 0, 0)"
                )
            )
            for k in range(3):
                conn.execute(text(_PG_ROW), {"ts": 1_700_000_000 // 3600 * 3600 + k * 3600})
        assert check_store(engine).ok
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE candles DROP CONSTRAINT ck_candles_ts_aligned"))
            conn.execute(text(_PG_ROW), {"ts": 1_700_000_123})
        report = check_store(engine)
    finally:
        engine.dispose()
    rules = {v.rule: v for v in report.violations}
    assert rules["ts_misaligned"].examples == [
        {"coin": "BTC", "interval": "1h", "ts": 1_700_000_123}
    ]
    assert set(rules) == {"ts_misaligned", "ts_not_monotonic"}
