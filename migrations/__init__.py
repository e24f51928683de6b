"""Alembic migrations: the only way squall's schema is created or changed."""
