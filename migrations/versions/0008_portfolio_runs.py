"""portfolio runs: the run kind of multi-coin portfolio backtests

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KINDS = ("backtest", "walkforward", "sweep", "simulation", "features")
_KINDS = (*_OLD_KINDS, "portfolio")


def _kinds(kinds: Sequence[str]) -> None:
    with op.batch_alter_table("backtest_runs") as batch:
        batch.drop_constraint(op.f("ck_backtest_runs_kind_known"), type_="check")
        batch.create_check_constraint(
            op.f("ck_backtest_runs_kind_known"),
            "kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")",
        )


def upgrade() -> None:
    _kinds(_KINDS)


def downgrade() -> None:
    op.execute("DELETE FROM backtest_runs WHERE kind = 'portfolio'")
    _kinds(_OLD_KINDS)
