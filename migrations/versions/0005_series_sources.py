"""series: one source per (coin, interval) series, backfilled from the stored candles

Every stored series gets a ``series`` row owned by the source family with the most rows in
it (ties: the alphabetically first family); ``foreign_rows`` counts the rows of any other
family, so a series that was already mixed says so (the upgrade also logs a warning naming
it). Known gaps recorded by sources that are not exchanges (the synthetic market, files)
are deleted: they were never outages an exchange reported.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

import logging
import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

# Frozen copies of the rules as they were when this revision was written.
_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
_NAMES = ", ".join(f"'{n}'" for n in _INTERVALS)
# storage.series.source_family in SQL: every file layout is one family "file"
_FAMILY = "CASE WHEN source = 'file' OR source LIKE 'file:%' THEN 'file' ELSE source END"

_BACKFILL = f"""
WITH f AS (
  SELECT coin, "interval", {_FAMILY} AS family, count(*) AS n, min(ingested_at) AS first_at
  FROM candles GROUP BY coin, "interval", {_FAMILY}
), r AS (
  SELECT coin, "interval", family, n,
         sum(n) OVER (PARTITION BY coin, "interval") AS total,
         min(first_at) OVER (PARTITION BY coin, "interval") AS created,
         row_number() OVER (PARTITION BY coin, "interval" ORDER BY n DESC, family) AS pos
  FROM f
)
INSERT INTO series (coin, "interval", source, created_at, source_since, foreign_rows)
SELECT coin, "interval", family, created, :now, total - n FROM r WHERE pos = 1
"""

_MIXED = f"""
SELECT s.coin, s."interval", s.source, {_FAMILY.replace("source", "c.source")} AS family,
       count(*) AS n
FROM series s JOIN candles c ON c.coin = s.coin AND c."interval" = s."interval"
WHERE s.foreign_rows > 0
GROUP BY s.coin, s."interval", s.source, {_FAMILY.replace("source", "c.source")}
ORDER BY s.coin, s."interval", n DESC
"""


def upgrade() -> None:
    op.create_table(
        "series",
        sa.Column("coin", sa.String(20), nullable=False),
        sa.Column("interval", sa.String(8), nullable=False),
        sa.Column("source", sa.String(40), nullable=False, comment="owning source family"),
        sa.Column("created_at", sa.BigInteger(), nullable=False, comment="unix seconds UTC"),
        sa.Column(
            "source_since",
            sa.BigInteger(),
            nullable=False,
            comment="unix seconds UTC when this source took the series",
        ),
        sa.Column(
            "foreign_rows",
            sa.BigInteger(),
            nullable=False,
            comment="rows of other sources still in the series (0 when clean)",
        ),
        sa.PrimaryKeyConstraint("coin", "interval", name=op.f("pk_series")),
        sa.CheckConstraint(f'"interval" IN ({_NAMES})', name=op.f("ck_series_interval_known")),
        sa.CheckConstraint("foreign_rows >= 0", name=op.f("ck_series_foreign_rows_nonneg")),
    )
    bind = op.get_bind()
    bind.execute(sa.text(_BACKFILL), {"now": int(time.time())})
    mixed: dict[tuple[str, str, str], list[str]] = {}
    for coin, interval, owner, family, n in bind.execute(sa.text(_MIXED)):
        mixed.setdefault((coin, interval, owner), []).append(f"{family} x {n}")
    for (coin, interval, owner), parts in mixed.items():
        log.warning(
            "series %s %s holds rows of several sources (%s): it now belongs to %r, the "
            "source with the most rows; the others are counted in series.foreign_rows. "
            "Rewrite them with `squall import/backfill --replace-source`.",
            coin,
            interval,
            ", ".join(parts),
            owner,
        )
    bind.execute(
        sa.text(
            "DELETE FROM known_gaps"
            " WHERE source = 'synthetic' OR source = 'file' OR source LIKE 'file:%'"
        )
    )


def downgrade() -> None:
    op.drop_table("series")
