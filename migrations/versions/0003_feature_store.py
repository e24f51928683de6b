"""feature store: feature_sets and features

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")


def upgrade() -> None:
    op.create_table(
        "feature_sets",
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False, comment="indicator spec, e.g. ema:20,rsi:14"),
        sa.Column("columns", sa.Text(), nullable=False, comment="JSON list of output column names"),
        sa.Column("created_at", sa.BigInteger(), nullable=False, comment="unix seconds UTC"),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_feature_sets")),
    )
    names = ", ".join(f"'{i}'" for i in _INTERVALS)
    op.create_table(
        "features",
        sa.Column("coin", sa.String(20), nullable=False),
        sa.Column("interval", sa.String(8), nullable=False),
        sa.Column("feature_set_version", sa.String(40), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False, comment="bar open time, unix seconds UTC"),
        sa.Column("candle_fingerprint", sa.BigInteger(), nullable=False),
        sa.Column("values", sa.LargeBinary(), nullable=False, comment="float64 LE, one per column"),
        sa.Column("computed_at", sa.BigInteger(), nullable=False, comment="unix seconds UTC"),
        sa.PrimaryKeyConstraint(
            "coin", "interval", "feature_set_version", "ts", name=op.f("pk_features")
        ),
        sa.CheckConstraint(f'"interval" IN ({names})', name=op.f("ck_features_interval_known")),
    )


def downgrade() -> None:
    op.drop_table("features")
    op.drop_table("feature_sets")
