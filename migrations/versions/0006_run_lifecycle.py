"""run lifecycle: cancelled status, feature-build runs, start/heartbeat/cancel/worker columns

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KINDS = ("backtest", "walkforward", "sweep", "simulation")
_OLD_STATUSES = ("queued", "running", "succeeded", "failed")
_KINDS = (*_OLD_KINDS, "features")
_STATUSES = (*_OLD_STATUSES, "cancelled")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _constraints(batch: BatchOperations, kinds: Sequence[str], statuses: Sequence[str]) -> None:
    batch.drop_constraint(op.f("ck_backtest_runs_kind_known"), type_="check")
    batch.drop_constraint(op.f("ck_backtest_runs_status_known"), type_="check")
    batch.create_check_constraint(op.f("ck_backtest_runs_kind_known"), _in("kind", kinds))
    batch.create_check_constraint(op.f("ck_backtest_runs_status_known"), _in("status", statuses))


def upgrade() -> None:
    with op.batch_alter_table("backtest_runs") as batch:
        batch.add_column(
            sa.Column("started_at", sa.BigInteger(), nullable=True, comment="unix seconds UTC")
        )
        batch.add_column(
            sa.Column(
                "heartbeat_at",
                sa.BigInteger(),
                nullable=True,
                comment="last sign of life of the process running it, unix seconds UTC",
            )
        )
        batch.add_column(
            sa.Column(
                "cancel_requested_at",
                sa.BigInteger(),
                nullable=True,
                comment="when a cancel was asked, unix seconds UTC",
            )
        )
        batch.add_column(
            sa.Column(
                "worker",
                sa.String(128),
                nullable=True,
                comment="where it runs: node id and process",
            )
        )
        _constraints(batch, _KINDS, _STATUSES)
        batch.create_index("ix_backtest_runs_status_heartbeat", ["status", "heartbeat_at"])


def downgrade() -> None:
    op.execute(
        "UPDATE backtest_runs SET status = 'failed', error = 'cancelled' WHERE status = 'cancelled'"
    )
    op.execute("DELETE FROM backtest_runs WHERE kind = 'features'")
    with op.batch_alter_table("backtest_runs") as batch:
        batch.drop_index("ix_backtest_runs_status_heartbeat")
        _constraints(batch, _OLD_KINDS, _OLD_STATUSES)
        for name in ("worker", "cancel_requested_at", "heartbeat_at", "started_at"):
            batch.drop_column(name)
