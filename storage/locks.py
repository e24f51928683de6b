"""Cross-process writer guard: exactly one ingestion writer per database.

Postgres: a session-level advisory lock held on a dedicated connection (released when the
connection closes, so a crashed holder frees it). SQLite: an exclusive ``flock`` on a lock
file beside the database file (released by the OS when the process dies).
"""

from __future__ import annotations

import fcntl
import os
import zlib
from pathlib import Path
from typing import IO, Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from storage.engine import is_sqlite, make_engine

LOCK_NAME = "squall-ingestion-writer"


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock`` (crc32, not ``hash()``)."""
    return zlib.crc32(name.encode()) | (0x5371 << 32)


class WriterLock:
    """Try-acquire / release; ``held`` says whether this process is the writer."""

    def __init__(self, database_url: str, name: str = LOCK_NAME) -> None:
        self.database_url = database_url
        self.name = name
        self.held = False
        self._file: IO[str] | None = None
        self._engine: Any = None
        self._conn: Any = None
        self._scope: str | None = None
        self._key: int | None = None

    def describe(self) -> str:
        if is_sqlite(self.database_url):
            return f"lock file {self._lock_path()}"
        return f"Postgres advisory lock {self._scope or self.name} (key {self._key})"

    def _lock_path(self) -> Path:
        database = make_url(self.database_url).database or "squall.db"
        if database == ":memory:":
            return Path(os.environ.get("TMPDIR", "/tmp")) / f"{self.name}.lock"
        return Path(f"{database}.{self.name}.lock")

    def try_acquire(self) -> bool:
        if self.held:
            return True
        if is_sqlite(self.database_url):
            path = self._lock_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open("a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                return False
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            self._file = handle
        else:
            self._engine = make_engine(self.database_url, pool_size=1, max_overflow=0)
            conn = self._engine.connect()
            # one writer per database *and schema*: squall in another schema is another store
            database, schema = conn.execute(
                text("SELECT current_database(), current_schema()")
            ).one()
            self._scope = f"{self.name}:{database}:{schema}"
            self._key = _advisory_key(self._scope)
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar()
            conn.commit()
            if not got:
                conn.close()
                self._engine.dispose()
                self._engine = None
                return False
            self._conn = conn
        self.held = True
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                self._conn.commit()
            except DBAPIError:
                # the lock's session is gone (the database restarted or the connection was
                # cut): Postgres freed the lock with it, there is nothing left to unlock
                pass
            finally:
                self._conn.close()
                self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self.held = False
