"""candles and market_snapshots

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the CHECK expressions as they were when this revision was written.
_INTERVALS = {
    "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
    "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400,
}  # fmt: skip
_NAMES = ", ".join(f"'{n}'" for n in _INTERVALS)
_STEP = 'CASE "interval" ' + " ".join(f"WHEN '{n}' THEN {s}" for n, s in _INTERVALS.items())
_CHECKS = {
    "interval_known": f'"interval" IN ({_NAMES})',
    "ts_aligned": f"ts % ({_STEP} END) = 0",
    "price_positive": "open > 0 AND high > 0 AND low > 0 AND close > 0",
    "high_ge_open_close": "high >= open AND high >= close",
    "low_le_open_close": "low <= open AND low <= close",
    "volume_base_nonneg": "volume_base >= 0",
    "volume_quote_nonneg": "volume_quote IS NULL OR volume_quote >= 0",
    "trade_count_nonneg": "trade_count IS NULL OR trade_count >= 0",
}


def upgrade() -> None:
    op.create_table(
        "candles",
        sa.Column("coin", sa.String(20), nullable=False),
        sa.Column("interval", sa.String(8), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False, comment="bar open time, unix seconds UTC"),
        sa.Column("open", sa.Double(), nullable=False),
        sa.Column("high", sa.Double(), nullable=False),
        sa.Column("low", sa.Double(), nullable=False),
        sa.Column("close", sa.Double(), nullable=False),
        sa.Column("volume_base", sa.Double(), nullable=False, comment="base-asset units"),
        sa.Column("volume_quote", sa.Double(), nullable=True, comment="quote-asset notional"),
        sa.Column("trade_count", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("ingested_at", sa.BigInteger(), nullable=False, comment="unix seconds UTC"),
        sa.PrimaryKeyConstraint("coin", "interval", "ts", name=op.f("pk_candles")),
        *(sa.CheckConstraint(sql, name=op.f(f"ck_candles_{n}")) for n, sql in _CHECKS.items()),
    )
    op.create_table(
        "market_snapshots",
        sa.Column("coin", sa.String(20), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False, comment="snapshot time, unix seconds UTC"),
        sa.Column("last_price", sa.Double(), nullable=False),
        sa.Column("bid", sa.Double(), nullable=True),
        sa.Column("ask", sa.Double(), nullable=True),
        sa.Column("mark_price", sa.Double(), nullable=True),
        sa.Column("index_price", sa.Double(), nullable=True),
        sa.Column("volume_base_24h", sa.Double(), nullable=True),
        sa.Column("volume_quote_24h", sa.Double(), nullable=True),
        sa.Column("funding_rate", sa.Double(), nullable=True, comment="per funding period"),
        sa.Column("open_interest", sa.Double(), nullable=True, comment="base-asset units"),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("ingested_at", sa.BigInteger(), nullable=False, comment="unix seconds UTC"),
        sa.PrimaryKeyConstraint("coin", "ts", name=op.f("pk_market_snapshots")),
        sa.CheckConstraint("last_price > 0", name=op.f("ck_market_snapshots_last_positive")),
        sa.CheckConstraint(
            "bid IS NULL OR ask IS NULL OR bid <= ask", name=op.f("ck_market_snapshots_bid_le_ask")
        ),
        sa.CheckConstraint(
            "(bid IS NULL OR bid > 0) AND (ask IS NULL OR ask > 0)"
            " AND (mark_price IS NULL OR mark_price > 0)"
            " AND (index_price IS NULL OR index_price > 0)",
            name=op.f("ck_market_snapshots_prices_positive"),
        ),
        sa.CheckConstraint(
            "(volume_base_24h IS NULL OR volume_base_24h >= 0)"
            " AND (volume_quote_24h IS NULL OR volume_quote_24h >= 0)"
            " AND (open_interest IS NULL OR open_interest >= 0)",
            name=op.f("ck_market_snapshots_amounts_nonneg"),
        ),
    )


def downgrade() -> None:
    op.drop_table("market_snapshots")
    op.drop_table("candles")
