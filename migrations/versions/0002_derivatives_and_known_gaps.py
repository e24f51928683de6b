"""funding_rates, open_interest and known_gaps

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "funding_rates",
        sa.Column("coin", sa.String(20), nullable=False),
        sa.Column(
            "ts", sa.BigInteger(), nullable=False, comment="settlement time, unix seconds UTC"
        ),
        sa.Column(
            "funding_rate", sa.Double(), nullable=False, comment="per funding period, fraction"
        ),
        sa.Column("mark_price", sa.Double(), nullable=True),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("ingested_at", sa.BigInteger(), nullable=False, comment="unix seconds UTC"),
        sa.PrimaryKeyConstraint("coin", "ts", name=op.f("pk_funding_rates")),
        sa.CheckConstraint(
            "funding_rate > -1 AND funding_rate < 1", name=op.f("ck_funding_rates_rate_sane")
        ),
        sa.CheckConstraint(
            "mark_price IS NULL OR mark_price > 0", name=op.f("ck_funding_rates_mark_positive")
        ),
    )
    op.create_table(
        "open_interest",
        sa.Column("coin", sa.String(20), nullable=False),
        sa.Column(
            "ts", sa.BigInteger(), nullable=False, comment="observation time, unix seconds UTC"
        ),
        sa.Column("open_interest", sa.Double(), nullable=False, comment="base-asset units"),
        sa.Column("open_interest_quote", sa.Double(), nullable=True, comment="quote notional"),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("ingested_at", sa.BigInteger(), nullable=False, comment="unix seconds UTC"),
        sa.PrimaryKeyConstraint("coin", "ts", name=op.f("pk_open_interest")),
        sa.CheckConstraint(
            "open_interest >= 0 AND (open_interest_quote IS NULL OR open_interest_quote >= 0)",
            name=op.f("ck_open_interest_nonneg"),
        ),
    )
    op.create_table(
        "known_gaps",
        sa.Column("coin", sa.String(20), nullable=False),
        sa.Column("interval", sa.String(8), nullable=False),
        sa.Column(
            "start_ts", sa.BigInteger(), nullable=False, comment="first missing bar open time"
        ),
        sa.Column("end_ts", sa.BigInteger(), nullable=False, comment="last missing bar open time"),
        sa.Column("missing", sa.BigInteger(), nullable=False, comment="bars missing"),
        sa.Column("source", sa.String(40), nullable=False, comment="provider that had no data"),
        sa.Column("checked_at", sa.BigInteger(), nullable=False, comment="unix seconds UTC"),
        sa.PrimaryKeyConstraint("coin", "interval", "start_ts", name=op.f("pk_known_gaps")),
        sa.CheckConstraint("end_ts >= start_ts", name=op.f("ck_known_gaps_ordered")),
        sa.CheckConstraint("missing > 0", name=op.f("ck_known_gaps_missing_positive")),
    )


def downgrade() -> None:
    op.drop_table("known_gaps")
    op.drop_table("open_interest")
    op.drop_table("funding_rates")
