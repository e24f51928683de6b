"""The stored data's invariants, checked where the data is: one SQL query per rule.

The database enforces most of these itself (keys, CHECK constraints), so a violation here
means a store that was written around them: a restore without its constraints, a hand-made
``INSERT``, a migration gone wrong, a backend that ignores CHECKs. ``squall check`` runs
:func:`check_store` and exits non-zero naming the first violations.

Rules, per table (a rule counts the rows that break it and keeps a few of their keys):

- ``candles``: no duplicate (coin, interval, ts); a known interval; ``ts`` aligned to the
  interval; within a series, timestamps strictly increasing by whole intervals; prices
  positive, ``high >= max(open, close)``, ``low <= min(open, close)``; volumes and trade
  counts not negative; no open candle (``ts + interval`` after the check's time, or after the
  row's ``ingested_at``: stored before its bar closed); every series registered with a source;
- ``market_snapshots``, ``funding_rates``, ``open_interest``: no duplicate (coin, ts); prices
  positive; bid not above ask; amounts not negative; funding rate within (-1, 1); no time in
  the future (beyond a small clock allowance);
- ``known_gaps``: ordered, aligned to the interval, ``missing`` equal to the bars in range.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, text

from storage.intervals import INTERVAL_SECONDS

#: How far in the future a snapshot or derivatives point may lie (clock skew), seconds.
CLOCK_ALLOWANCE_S = 300

_KNOWN = ", ".join(f"'{name}'" for name in INTERVAL_SECONDS)
_STEP = "CASE interval " + " ".join(f"WHEN '{n}' THEN {s}" for n, s in INTERVAL_SECONDS.items())
_STEP += " END"
_CANDLE_KEY = "coin, interval, ts"


@dataclass(frozen=True)
class Rule:
    """One invariant: the rows of ``table`` that break it are ``SELECT {key} FROM {source}
    WHERE {where}`` (``source`` defaults to the table)."""

    table: str
    name: str
    description: str
    where: str
    key: str
    source: str | None = None


def _q(name: str) -> str:
    return f'"{name}"'


# ``interval`` is a keyword in Postgres: quoted wherever it is a column.
def _iv(sql: str) -> str:
    return sql.replace("interval", _q("interval"))


_STEPPED = _iv(
    f"(SELECT coin, interval, ts, {_STEP} AS step, "
    "LAG(ts) OVER (PARTITION BY coin, interval ORDER BY ts) AS prev FROM candles) AS s"
)

RULES: tuple[Rule, ...] = (
    Rule(
        "candles",
        "duplicate_key",
        "more than one row for a (coin, interval, ts)",
        "1 = 1 GROUP BY coin, interval, ts HAVING COUNT(*) > 1",
        _iv(_CANDLE_KEY + ", COUNT(*) AS n"),
    ),
    Rule(
        "candles",
        "interval_unknown",
        f"interval not one of {', '.join(INTERVAL_SECONDS)}",
        _iv(f"interval NOT IN ({_KNOWN})"),
        _iv(_CANDLE_KEY),
    ),
    Rule(
        "candles",
        "ts_misaligned",
        "bar open time not a multiple of its interval",
        _iv(f"interval IN ({_KNOWN}) AND ts % ({_STEP}) <> 0"),
        _iv(_CANDLE_KEY),
    ),
    Rule(
        "candles",
        "ts_not_monotonic",
        "a bar not a whole number of intervals after the series' previous bar",
        "prev IS NOT NULL AND step IS NOT NULL AND (ts <= prev OR (ts - prev) % step <> 0)",
        _iv(_CANDLE_KEY + ", prev"),
        source=_STEPPED,
    ),
    Rule(
        "candles",
        "price_not_positive",
        "open, high, low or close <= 0",
        "NOT (open > 0 AND high > 0 AND low > 0 AND close > 0)",
        _iv(_CANDLE_KEY),
    ),
    Rule(
        "candles",
        "high_below_open_close",
        "high < max(open, close)",
        "high < open OR high < close",
        _iv(_CANDLE_KEY + ", open, high, close"),
    ),
    Rule(
        "candles",
        "low_above_open_close",
        "low > min(open, close)",
        "low > open OR low > close",
        _iv(_CANDLE_KEY + ", open, low, close"),
    ),
    Rule(
        "candles",
        "volume_negative",
        "volume_base, volume_quote or trade_count < 0",
        "volume_base < 0 OR volume_quote < 0 OR trade_count < 0",
        _iv(_CANDLE_KEY + ", volume_base, volume_quote, trade_count"),
    ),
    Rule(
        "candles",
        "open_candle",
        "bar not closed at the check's time, or stored before it closed",
        _iv(f"interval IN ({_KNOWN}) AND (ts + {_STEP} > :now OR ts + {_STEP} > ingested_at)"),
        _iv(_CANDLE_KEY + ", ingested_at"),
    ),
    Rule(
        "candles",
        "series_unregistered",
        "a candle series with no row in the series table (no owning source)",
        _iv(
            "NOT EXISTS (SELECT 1 FROM series AS r WHERE r.coin = c.coin "
            "AND r.interval = c.interval) GROUP BY c.coin, c.interval"
        ),
        _iv("c.coin, c.interval, COUNT(*) AS n"),
        source="candles AS c",
    ),
    Rule(
        "market_snapshots",
        "duplicate_key",
        "more than one snapshot for a (coin, ts)",
        "1 = 1 GROUP BY coin, ts HAVING COUNT(*) > 1",
        "coin, ts, COUNT(*) AS n",
    ),
    Rule(
        "market_snapshots",
        "price_invalid",
        "last price <= 0, a price <= 0, or bid above ask",
        "last_price <= 0 OR bid <= 0 OR ask <= 0 OR mark_price <= 0 OR index_price <= 0 "
        "OR bid > ask",
        "coin, ts, last_price, bid, ask",
    ),
    Rule(
        "market_snapshots",
        "amount_negative",
        "24h volumes or open interest < 0",
        "volume_base_24h < 0 OR volume_quote_24h < 0 OR open_interest < 0",
        "coin, ts",
    ),
    Rule(
        "market_snapshots",
        "ts_future",
        "snapshot time in the future",
        "ts > :now + :allowance",
        "coin, ts",
    ),
    Rule(
        "funding_rates",
        "duplicate_key",
        "more than one funding settlement for a (coin, ts)",
        "1 = 1 GROUP BY coin, ts HAVING COUNT(*) > 1",
        "coin, ts, COUNT(*) AS n",
    ),
    Rule(
        "funding_rates",
        "rate_invalid",
        "funding rate outside (-1, 1) or mark price <= 0",
        "funding_rate <= -1 OR funding_rate >= 1 OR mark_price <= 0",
        "coin, ts, funding_rate",
    ),
    Rule(
        "funding_rates",
        "ts_future",
        "settlement time in the future",
        "ts > :now + :allowance",
        "coin, ts",
    ),
    Rule(
        "open_interest",
        "duplicate_key",
        "more than one open-interest point for a (coin, ts)",
        "1 = 1 GROUP BY coin, ts HAVING COUNT(*) > 1",
        "coin, ts, COUNT(*) AS n",
    ),
    Rule(
        "open_interest",
        "amount_negative",
        "open interest < 0",
        "open_interest < 0 OR open_interest_quote < 0",
        "coin, ts, open_interest",
    ),
    Rule(
        "open_interest",
        "ts_future",
        "observation time in the future",
        "ts > :now + :allowance",
        "coin, ts",
    ),
    Rule(
        "known_gaps",
        "range_invalid",
        "end before start, bounds not aligned, or missing not the number of bars in range",
        _iv(
            f"interval NOT IN ({_KNOWN}) OR end_ts < start_ts OR start_ts % ({_STEP}) <> 0 "
            f"OR end_ts % ({_STEP}) <> 0 OR missing <> (end_ts - start_ts) / ({_STEP}) + 1"
        ),
        _iv("coin, interval, start_ts, end_ts, missing"),
    ),
)

TABLES: tuple[str, ...] = tuple(dict.fromkeys(rule.table for rule in RULES))


@dataclass
class Violation:
    """The rows of one table breaking one rule: how many, and the first few keys."""

    table: str
    rule: str
    description: str
    count: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "rule": self.rule,
            "description": self.description,
            "count": self.count,
            "examples": self.examples,
        }


@dataclass
class CheckReport:
    """What :func:`check_store` looked at and what it found."""

    rows: dict[str, int]
    rules: int
    violations: list[Violation]
    checked_at: int
    duration_s: float

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "rows_total": sum(self.rows.values()),
            "rules": self.rules,
            "checked_at": self.checked_at,
            "duration_s": round(self.duration_s, 3),
            "violations": [v.as_dict() for v in self.violations],
        }


def _count(conn: Connection, rule: Rule, params: dict[str, Any]) -> int:
    source = rule.source or rule.table
    if "GROUP BY" in rule.where:
        sql = f"SELECT COUNT(*) FROM (SELECT {rule.key} FROM {source} WHERE {rule.where}) AS v"
    else:
        sql = f"SELECT COUNT(*) FROM {source} WHERE {rule.where}"
    return int(conn.execute(text(sql), params).scalar_one())


def _examples(conn: Connection, rule: Rule, params: dict[str, Any], limit: int) -> list[Any]:
    source = rule.source or rule.table
    sql = f"SELECT {rule.key} FROM {source} WHERE {rule.where} LIMIT {int(limit)}"
    return [dict(row._mapping) for row in conn.execute(text(sql), params)]


def check_store(
    engine: Engine,
    *,
    tables: Iterable[str] | None = None,
    examples: int = 5,
    now: int | None = None,
) -> CheckReport:
    """Run every rule (of ``tables``, default all) in one read transaction; each violated
    rule reports its count and up to ``examples`` offending keys."""
    wanted = set(TABLES if tables is None else tables)
    unknown = wanted - set(TABLES)
    if unknown:
        raise ValueError(f"unknown table(s) {sorted(unknown)}; known: {', '.join(TABLES)}")
    started = time.perf_counter()
    stamp = int(time.time()) if now is None else int(now)
    params = {"now": stamp, "allowance": CLOCK_ALLOWANCE_S}
    rows: dict[str, int] = {}
    violations: list[Violation] = []
    rules = [rule for rule in RULES if rule.table in wanted]
    with engine.connect() as conn:
        for table in (t for t in TABLES if t in wanted):
            rows[table] = int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
        for rule in rules:
            if rows[rule.table] == 0:
                continue
            n = _count(conn, rule, params)
            if n:
                found = _examples(conn, rule, params, examples)
                violations.append(Violation(rule.table, rule.name, rule.description, n, found))
    return CheckReport(rows, len(rules), violations, stamp, time.perf_counter() - started)


def format_report(report: CheckReport, *, max_violations: int = 10) -> str:
    """A few lines for a terminal: rows and rules checked, then the first violations."""
    total = sum(report.rows.values())
    per_table = ", ".join(f"{t} {n:,}" for t, n in report.rows.items())
    head = f"checked {total:,} rows ({per_table}) against {report.rules} rules"
    head += f" in {report.duration_s:.2f}s"
    if report.ok:
        return f"{head}: ok"
    lines = [f"{head}: {len(report.violations)} rule(s) violated"]
    for v in report.violations[:max_violations]:
        lines.append(f"  {v.table}.{v.rule}: {v.count:,} ({v.description})")
        for example in v.examples:
            lines.append("    " + ", ".join(f"{k}={val}" for k, val in example.items()))
    if len(report.violations) > max_violations:
        lines.append(f"  ... and {len(report.violations) - max_violations} more rule(s)")
    return "\n".join(lines)
