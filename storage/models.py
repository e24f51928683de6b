"""Typed SQLAlchemy models: the schema Alembic migrations create and ``alembic check`` guards.

Times are stored as integer unix seconds (UTC by definition): exact, portable between
SQLite and Postgres, cheap to bulk load, and alignment can be enforced with a CHECK.
Prices and volumes are IEEE doubles. See ``docs/data-dictionary.md``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Double,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.intervals import INTERVAL_SECONDS

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _interval_seconds_sql(column: str) -> str:
    """SQL CASE mapping an interval name to its length in seconds (for CHECK constraints)."""
    whens = " ".join(f"WHEN '{name}' THEN {secs}" for name, secs in INTERVAL_SECONDS.items())
    return f"CASE {column} {whens} END"


_INTERVAL_NAMES = ", ".join(f"'{name}'" for name in INTERVAL_SECONDS)

CANDLE_CHECKS: dict[str, str] = {
    "interval_known": f'"interval" IN ({_INTERVAL_NAMES})',
    "ts_aligned": f"ts % ({_interval_seconds_sql(chr(34) + 'interval' + chr(34))}) = 0",
    "price_positive": "open > 0 AND high > 0 AND low > 0 AND close > 0",
    "high_ge_open_close": "high >= open AND high >= close",
    "low_le_open_close": "low <= open AND low <= close",
    "volume_base_nonneg": "volume_base >= 0",
    "volume_quote_nonneg": "volume_quote IS NULL OR volume_quote >= 0",
    "trade_count_nonneg": "trade_count IS NULL OR trade_count >= 0",
}


class Candle(Base):
    """One closed OHLCV bar. Key (coin, interval, ts); ts is the bar's open time."""

    __tablename__ = "candles"
    __table_args__ = (
        # The primary key's b-tree serves the latest-first read (backward index scan on
        # Postgres, reverse traversal on SQLite); a second DESC index would only slow writes.
        PrimaryKeyConstraint("coin", "interval", "ts"),
        *(CheckConstraint(sql, name=name) for name, sql in CANDLE_CHECKS.items()),
    )

    coin: Mapped[str] = mapped_column(String(20))
    interval: Mapped[str] = mapped_column(String(8))
    ts: Mapped[int] = mapped_column(BigInteger, comment="bar open time, unix seconds UTC")
    open: Mapped[float] = mapped_column(Double)
    high: Mapped[float] = mapped_column(Double)
    low: Mapped[float] = mapped_column(Double)
    close: Mapped[float] = mapped_column(Double)
    volume_base: Mapped[float] = mapped_column(Double, comment="base-asset units")
    volume_quote: Mapped[float | None] = mapped_column(Double, comment="quote-asset notional")
    trade_count: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(40))
    ingested_at: Mapped[int] = mapped_column(BigInteger, comment="unix seconds UTC")


class Series(Base):
    """Who owns a (coin, interval) candle series: the one source whose rows it may hold.

    ``source`` is a source *family* (``storage.series.source_family``): ``synthetic``,
    ``file`` (every file layout), ``binance:spot``, ``binance:um``, ... ``foreign_rows``
    counts the rows of other families the series still holds (a series that was already mixed
    when migration 0005 ran, or what a partial ``--replace-source`` left outside its range):
    0 for a clean series, never hidden.
    """

    __tablename__ = "series"
    __table_args__ = (
        PrimaryKeyConstraint("coin", "interval"),
        CheckConstraint(CANDLE_CHECKS["interval_known"], name="interval_known"),
        CheckConstraint("foreign_rows >= 0", name="foreign_rows_nonneg"),
    )

    coin: Mapped[str] = mapped_column(String(20))
    interval: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(40), comment="owning source family")
    created_at: Mapped[int] = mapped_column(BigInteger, comment="unix seconds UTC")
    source_since: Mapped[int] = mapped_column(
        BigInteger, comment="unix seconds UTC when this source took the series"
    )
    foreign_rows: Mapped[int] = mapped_column(
        BigInteger, comment="rows of other sources still in the series (0 when clean)"
    )
    version: Mapped[int] = mapped_column(
        BigInteger,
        server_default="0",
        comment="renewed (a random 62-bit value) by every write that changes the series' candles",
    )


class MarketSnapshot(Base):
    """A point-in-time market view of one coin: prices, 24h volume, funding, open interest."""

    __tablename__ = "market_snapshots"
    __table_args__ = (
        PrimaryKeyConstraint("coin", "ts"),
        CheckConstraint("last_price > 0", name="last_positive"),
        CheckConstraint("bid IS NULL OR ask IS NULL OR bid <= ask", name="bid_le_ask"),
        CheckConstraint(
            "(bid IS NULL OR bid > 0) AND (ask IS NULL OR ask > 0)"
            " AND (mark_price IS NULL OR mark_price > 0)"
            " AND (index_price IS NULL OR index_price > 0)",
            name="prices_positive",
        ),
        CheckConstraint(
            "(volume_base_24h IS NULL OR volume_base_24h >= 0)"
            " AND (volume_quote_24h IS NULL OR volume_quote_24h >= 0)"
            " AND (open_interest IS NULL OR open_interest >= 0)",
            name="amounts_nonneg",
        ),
    )

    coin: Mapped[str] = mapped_column(String(20))
    ts: Mapped[int] = mapped_column(BigInteger, comment="snapshot time, unix seconds UTC")
    last_price: Mapped[float] = mapped_column(Double)
    bid: Mapped[float | None] = mapped_column(Double)
    ask: Mapped[float | None] = mapped_column(Double)
    mark_price: Mapped[float | None] = mapped_column(Double)
    index_price: Mapped[float | None] = mapped_column(Double)
    volume_base_24h: Mapped[float | None] = mapped_column(Double)
    volume_quote_24h: Mapped[float | None] = mapped_column(Double)
    funding_rate: Mapped[float | None] = mapped_column(Double, comment="per funding period")
    open_interest: Mapped[float | None] = mapped_column(Double, comment="base-asset units")
    source: Mapped[str] = mapped_column(String(40))
    ingested_at: Mapped[int] = mapped_column(BigInteger, comment="unix seconds UTC")


class FundingRate(Base):
    """A perpetual-futures funding settlement: the rate paid per funding period."""

    __tablename__ = "funding_rates"
    __table_args__ = (
        PrimaryKeyConstraint("coin", "ts"),
        CheckConstraint("funding_rate > -1 AND funding_rate < 1", name="rate_sane"),
        CheckConstraint("mark_price IS NULL OR mark_price > 0", name="mark_positive"),
    )

    coin: Mapped[str] = mapped_column(String(20))
    ts: Mapped[int] = mapped_column(BigInteger, comment="settlement time, unix seconds UTC")
    funding_rate: Mapped[float] = mapped_column(Double, comment="per funding period, fraction")
    mark_price: Mapped[float | None] = mapped_column(Double)
    source: Mapped[str] = mapped_column(String(40))
    ingested_at: Mapped[int] = mapped_column(BigInteger, comment="unix seconds UTC")


class OpenInterest(Base):
    """Open interest of the coin's perpetual at a point in time."""

    __tablename__ = "open_interest"
    __table_args__ = (
        PrimaryKeyConstraint("coin", "ts"),
        CheckConstraint(
            "open_interest >= 0 AND (open_interest_quote IS NULL OR open_interest_quote >= 0)",
            name="nonneg",
        ),
    )

    coin: Mapped[str] = mapped_column(String(20))
    ts: Mapped[int] = mapped_column(BigInteger, comment="observation time, unix seconds UTC")
    open_interest: Mapped[float] = mapped_column(Double, comment="base-asset units")
    open_interest_quote: Mapped[float | None] = mapped_column(Double, comment="quote notional")
    source: Mapped[str] = mapped_column(String(40))
    ingested_at: Mapped[int] = mapped_column(BigInteger, comment="unix seconds UTC")


class KnownGap(Base):
    """A hole the provider itself has no data for: recorded so it is not fetched every run."""

    __tablename__ = "known_gaps"
    __table_args__ = (
        PrimaryKeyConstraint("coin", "interval", "start_ts"),
        CheckConstraint("end_ts >= start_ts", name="ordered"),
        CheckConstraint("missing > 0", name="missing_positive"),
    )

    coin: Mapped[str] = mapped_column(String(20))
    interval: Mapped[str] = mapped_column(String(8))
    start_ts: Mapped[int] = mapped_column(BigInteger, comment="first missing bar open time")
    end_ts: Mapped[int] = mapped_column(BigInteger, comment="last missing bar open time")
    missing: Mapped[int] = mapped_column(BigInteger, comment="bars missing")
    source: Mapped[str] = mapped_column(String(40), comment="provider that had no data")
    checked_at: Mapped[int] = mapped_column(BigInteger, comment="unix seconds UTC")


class FeatureSet(Base):
    """A named, versioned list of feature columns (an indicator spec and its output names)."""

    __tablename__ = "feature_sets"
    __table_args__ = (PrimaryKeyConstraint("version"),)

    version: Mapped[str] = mapped_column(String(40))
    spec: Mapped[str] = mapped_column(Text, comment="indicator spec, e.g. ema:20,rsi:14")
    columns: Mapped[str] = mapped_column(Text, comment="JSON list of output column names")
    created_at: Mapped[int] = mapped_column(BigInteger, comment="unix seconds UTC")


class Feature(Base):
    """One bar's feature values for one feature-set version.

    ``values`` packs the set's columns as little-endian float64 (NaN for warm-up / missing).
    ``candle_fingerprint`` is the prefix fingerprint of the candles up to and including ``ts``
    (see ``storage.features``); a row whose fingerprint no longer matches is stale.
    """

    __tablename__ = "features"
    __table_args__ = (
        PrimaryKeyConstraint("coin", "interval", "feature_set_version", "ts"),
        CheckConstraint(f'"interval" IN ({_INTERVAL_NAMES})', name="interval_known"),
    )

    coin: Mapped[str] = mapped_column(String(20))
    interval: Mapped[str] = mapped_column(String(8))
    feature_set_version: Mapped[str] = mapped_column(String(40))
    ts: Mapped[int] = mapped_column(BigInteger, comment="bar open time, unix seconds UTC")
    candle_fingerprint: Mapped[int] = mapped_column(BigInteger)
    values: Mapped[bytes] = mapped_column(LargeBinary, comment="float64 LE, one per column")
    computed_at: Mapped[int] = mapped_column(BigInteger, comment="unix seconds UTC")


RUN_KINDS = ("backtest", "walkforward", "sweep", "simulation", "features", "portfolio")
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")  # a run in these states has not finished


class BacktestRun(Base):
    """One recorded run (backtest, walk-forward, sweep, simulation, feature build or
    portfolio): what was asked, with which code and data, and what came out. See
    ``storage.runs`` for the encodings.

    ``request``, ``progress`` and ``summary`` are JSON text; ``equity``, ``trades`` and
    ``results`` are encoded blobs (JSON, zlib-compressed when large).
    """

    __tablename__ = "backtest_runs"
    __table_args__ = (
        PrimaryKeyConstraint("id"),
        CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in RUN_KINDS) + ")", name="kind_known"
        ),
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in RUN_STATUSES) + ")", name="status_known"
        ),
        CheckConstraint("duration_s IS NULL OR duration_s >= 0", name="duration_nonneg"),
        Index("ix_backtest_runs_created_at", "created_at"),
        Index("ix_backtest_runs_kind_created_at", "kind", "created_at"),
        Index("ix_backtest_runs_coin_strategy", "coin", "strategy"),
        Index("ix_backtest_runs_job_id", "job_id"),
        Index("ix_backtest_runs_status_heartbeat", "status", "heartbeat_at"),
    )

    id: Mapped[str] = mapped_column(String(36), comment="uuid4, text")
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger, comment="unix seconds UTC")
    finished_at: Mapped[int | None] = mapped_column(BigInteger, comment="unix seconds UTC")
    status: Mapped[str] = mapped_column(String(16))
    request: Mapped[str] = mapped_column(Text, comment="the request as canonical JSON")
    request_hash: Mapped[str] = mapped_column(String(64), comment="sha256 of the request")
    code_version: Mapped[str] = mapped_column(String(64), comment="git hash or package version")
    data_fingerprint: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    coin: Mapped[str | None] = mapped_column(String(20))
    interval: Mapped[str | None] = mapped_column(String(8))
    strategy: Mapped[str | None] = mapped_column(String(40))
    job_id: Mapped[str | None] = mapped_column(String(128), comment="Ray job submission id")
    rerun_of: Mapped[str | None] = mapped_column(String(36), comment="id of the original run")
    progress: Mapped[str | None] = mapped_column(Text, comment='JSON: {"done": n, "total": m}')
    duration_s: Mapped[float | None] = mapped_column(Double)
    summary: Mapped[str | None] = mapped_column(Text, comment="JSON: summary metrics")
    equity: Mapped[bytes | None] = mapped_column(LargeBinary, comment="encoded equity curve")
    trades: Mapped[bytes | None] = mapped_column(LargeBinary, comment="encoded trade list")
    results: Mapped[bytes | None] = mapped_column(
        LargeBinary, comment="encoded kind-specific detail (folds, sweep table, regimes)"
    )
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[int | None] = mapped_column(BigInteger, comment="unix seconds UTC")
    heartbeat_at: Mapped[int | None] = mapped_column(
        BigInteger, comment="last sign of life of the process running it, unix seconds UTC"
    )
    cancel_requested_at: Mapped[int | None] = mapped_column(
        BigInteger, comment="when a cancel was asked, unix seconds UTC"
    )
    worker: Mapped[str | None] = mapped_column(
        String(128), comment="where it runs: node id and process"
    )
