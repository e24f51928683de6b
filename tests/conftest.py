"""Shared fixtures: databases (SQLite and Postgres), the real-data folder.

Storage and API tests take ``database_url`` and so run twice, once per backend. Postgres runs
in a private schema per test session (``search_path``), so parallel runs never collide. With
``CI`` set, an unreachable Postgres fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from storage.engine import make_engine, session_factory
from storage.migrate import upgrade
from storage.models import Base

ROOT = Path(__file__).resolve().parent.parent
# The suite compiles what it runs; a background warm-up of every kernel in every app and
# worker a test starts would only compete for the two cores. Tests of the warm-up set it.
os.environ.setdefault("SQUALL_WARM_UP", "false")
os.environ.setdefault("SQUALL_JAX_CACHE_DIR", str(ROOT / "var" / "test-jax-cache"))
POSTGRES_URL = os.environ.get(
    "SQUALL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the repository (or ``SQUALL_SHARED_DATA``), if present."""
    override = os.environ.get("SQUALL_SHARED_DATA")
    path = Path(override) if override else ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real-data folder ../shared/data is absent")
    return path


def _postgres_unavailable() -> str | None:
    try:
        engine = make_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"Postgres at {POSTGRES_URL} is unreachable: {exc.__class__.__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_schema_url() -> Iterator[str]:
    """A migrated private schema in the Postgres test database, dropped at the end."""
    reason = _postgres_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI requires Postgres: {reason}")
        pytest.skip(reason)
    schema = f"squall_t_{uuid.uuid4().hex[:10]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    upgrade(url)
    yield url
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'squall.db'}"
        upgrade(url)
        yield url
        return
    url = request.getfixturevalue("postgres_schema_url")
    engine = make_engine(url)
    with engine.begin() as conn:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables}"))
    engine.dispose()
    yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)
