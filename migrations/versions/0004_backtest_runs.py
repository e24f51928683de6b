"""run registry: backtest_runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KINDS = ("backtest", "walkforward", "sweep", "simulation")
_STATUSES = ("queued", "running", "succeeded", "failed")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    op.create_table(
        "backtest_runs",
        sa.Column("id", sa.String(36), nullable=False, comment="uuid4, text"),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False, comment="unix seconds UTC"),
        sa.Column("finished_at", sa.BigInteger(), nullable=True, comment="unix seconds UTC"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.Text(), nullable=False, comment="the request as canonical JSON"),
        sa.Column("request_hash", sa.String(64), nullable=False, comment="sha256 of the request"),
        sa.Column(
            "code_version", sa.String(64), nullable=False, comment="git hash or package version"
        ),
        sa.Column("data_fingerprint", sa.String(64), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("coin", sa.String(20), nullable=True),
        sa.Column("interval", sa.String(8), nullable=True),
        sa.Column("strategy", sa.String(40), nullable=True),
        sa.Column("job_id", sa.String(128), nullable=True, comment="Ray job submission id"),
        sa.Column("rerun_of", sa.String(36), nullable=True, comment="id of the original run"),
        sa.Column("progress", sa.Text(), nullable=True, comment='JSON: {"done": n, "total": m}'),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True, comment="JSON: summary metrics"),
        sa.Column("equity", sa.LargeBinary(), nullable=True, comment="encoded equity curve"),
        sa.Column("trades", sa.LargeBinary(), nullable=True, comment="encoded trade list"),
        sa.Column(
            "results",
            sa.LargeBinary(),
            nullable=True,
            comment="encoded kind-specific detail (folds, sweep table, regimes)",
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backtest_runs")),
        sa.CheckConstraint(_in("kind", _KINDS), name=op.f("ck_backtest_runs_kind_known")),
        sa.CheckConstraint(_in("status", _STATUSES), name=op.f("ck_backtest_runs_status_known")),
        sa.CheckConstraint(
            "duration_s IS NULL OR duration_s >= 0",
            name=op.f("ck_backtest_runs_duration_nonneg"),
        ),
    )
    with op.batch_alter_table("backtest_runs") as batch:
        batch.create_index("ix_backtest_runs_created_at", ["created_at"])
        batch.create_index("ix_backtest_runs_kind_created_at", ["kind", "created_at"])
        batch.create_index("ix_backtest_runs_coin_strategy", ["coin", "strategy"])
        batch.create_index("ix_backtest_runs_job_id", ["job_id"])


def downgrade() -> None:
    with op.batch_alter_table("backtest_runs") as batch:
        batch.drop_index("ix_backtest_runs_job_id")
        batch.drop_index("ix_backtest_runs_coin_strategy")
        batch.drop_index("ix_backtest_runs_kind_created_at")
        batch.drop_index("ix_backtest_runs_created_at")
    op.drop_table("backtest_runs")
