"""The migrations gate on Postgres: ``alembic upgrade head`` then ``alembic check`` in a fresh
schema of the CI Postgres (``SQUALL_TEST_POSTGRES_URL``, default the test database on
loopback), dropped afterwards. An unreachable Postgres is a failure under ``CI`` and a skip,
said on one line, otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from sqlalchemy import create_engine, text

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def main() -> int:
    base = os.environ.get("SQUALL_TEST_POSTGRES_URL", DEFAULT_URL)
    try:
        admin = create_engine(base, connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        reason = f"Postgres at {base} is unreachable ({exc.__class__.__name__})"
        if os.environ.get("CI"):
            print(f"FAILED: CI requires Postgres: {reason}", file=sys.stderr)
            return 1
        print(f"SKIPPED alembic check on Postgres: {reason}; set SQUALL_TEST_POSTGRES_URL")
        return 0
    schema = f"squall_alembic_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    env = {**os.environ, "SQUALL_DATABASE_URL": f"{base}{sep}options=-csearch_path%3D{schema}"}
    alembic = [sys.executable, "-m", "alembic"]
    try:
        for step in (["upgrade", "head"], ["check"]):
            done = subprocess.run([*alembic, *step], env=env, check=False)
            if done.returncode:
                return done.returncode
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    print(f"alembic check on Postgres ({schema}, dropped): ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
