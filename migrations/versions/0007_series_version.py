"""series.version: renewed by every write that changes a series' candles (readers cache by it)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.add_column(
            sa.Column(
                "version",
                sa.BigInteger(),
                server_default="0",
                nullable=False,
                comment=(
                    "renewed (a random 62-bit value) by every write that changes the series' "
                    "candles"
                ),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.drop_column("version")
