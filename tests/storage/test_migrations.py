"""Alembic is the only way the schema is made: it round-trips and matches the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from storage.engine import make_engine
from storage.migrate import current_revision, downgrade, head_revision, upgrade
from storage.models import Base


def test_upgrade_downgrade_upgrade_round_trip(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
        assert {"candles", "market_snapshots"} <= set(inspect(engine).get_table_names())
        downgrade(database_url, "base")
        assert current_revision(engine) is None
        assert not {"candles", "market_snapshots"} & set(inspect(engine).get_table_names())
        upgrade(database_url)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_check_constraints_exist(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        names = {c["name"] for c in inspect(engine).get_check_constraints("candles")}
    finally:
        engine.dispose()
    assert {
        "ck_candles_high_ge_open_close",
        "ck_candles_low_le_open_close",
        "ck_candles_ts_aligned",
        "ck_candles_volume_base_nonneg",
    } <= names
