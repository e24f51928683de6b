"""Candle upsert throughput vs a ``pandas.DataFrame.to_sql`` baseline, on Postgres and SQLite.

What is measured
----------------
``CandleRepository(session).upsert(frame)`` inside ``storage.engine.transaction`` (validation,
write and COMMIT all timed) against ``frame.to_sql("candles", engine, if_exists="append")``
into the *same* ``candles`` table (same rows, same constraints, same indexes), in one run:

(a) bulk import: ``--rows`` (1,000,000) new 1-minute BTC candles into an empty table;
(b) idempotent re-write: the same rows again over the loaded table (0 changed);
(c) overlapping update: a page of ``--rows`` candles of which the first 10 % overlap the
    stored tail with changed values (updated) and 90 % are new (inserted);
(d) live loop: ``--pages`` (1,000) pages of ``--page-rows`` (100) candles appended one after
    the other, one transaction per page; candles/s and ms per page.

Baseline: ``to_sql(if_exists="append", chunksize=...)`` with ``method=None`` (executemany;
SQLAlchemy's insertmanyvalues) and ``method="multi"`` (one multi-row INSERT per chunk). Both
are timed on the first ``--select-rows`` (100,000) rows; the faster becomes the baseline
method of (a)-(c), which is then timed on the full rows (``multi`` is ~4-10x slower here,
timing it on 1M rows would add many minutes). In (d) both methods are timed in full and the
faster is the baseline. The table names the baseline method of each case. The baseline
always writes the same rows into an *empty* table (TRUNCATE on Postgres, DELETE + VACUUM on
SQLite) because ``to_sql`` cannot upsert: for (b) and (c) it is the cost of a plain INSERT
of the rows the upsert is given (so the ratio is conservative), and (b) reuses (a)'s
baseline (same rows, same empty table).

Every timed run starts from a settled table (Postgres: VACUUM ANALYZE + CHECKPOINT; SQLite:
ANALYZE + WAL checkpoint). Large cases are the best of ``--big-repeats`` (2) runs, the live
loop the best of ``--repeats`` (3). Data: a geometric random walk with consistent OHLC
(high >= max(open, close), low <= min(open, close)), volume_base, volume_quote and
trade_count filled. Every run's result is checked (upsert counts, rows in the table).

Targets (PASS/FAIL)
-------------------
* Postgres, case (a): >= 200,000 candles/s;
* every case on every backend: >= 5x the to_sql baseline.

Run (repository root; Postgres at 127.0.0.1:5432, trust auth, database ``test``)::

    python -m benchmarks.bench_upsert                   # 1M rows, both backends
    python -m benchmarks.bench_upsert --rows 200000 --skip-sqlite --json
    python -m benchmarks.bench_upsert --profile         # + cProfile and EXPLAIN ANALYZE (PG)

Postgres runs in a private schema ``bench_<random>`` of ``--pg-url`` that is dropped at the
end (also on failure); SQLite in a file in a temporary folder.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from storage.candles import CandleRepository, UpsertResult
from storage.columns import CANDLE_COLUMNS
from storage.engine import make_engine, session_factory, transaction
from storage.migrate import upgrade

PG_URL = os.environ.get(
    "SQUALL_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PG_TARGET_CANDLES_PER_S = 200_000.0
RATIO_TARGET = 5.0
NOW = 1_700_000_000
START_TS = 1_500_000_000 - 1_500_000_000 % 60  # aligned to 1m
ToSqlMethod = Literal["multi"] | None
TO_SQL_METHODS: tuple[ToSqlMethod, ...] = (None, "multi")


# --------------------------------------------------------------------------------- data
def make_candles(n: int, *, start_ts: int = START_TS, seed: int = 7) -> pd.DataFrame:
    """``n`` consecutive 1m BTC candles: random-walk close, consistent OHLC, all fields set."""
    rng = np.random.default_rng(seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 8e-4, n)))
    open_ = np.empty(n)
    open_[0] = 30_000.0
    open_[1:] = close[:-1]
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 4e-4, n)))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 4e-4, n)))
    volume_base = rng.gamma(2.0, 6.0, n)
    volume_quote = volume_base * (open_ + high + low + close) / 4.0
    trade_count = rng.poisson(400, n).astype(np.float64)
    return pd.DataFrame(
        {
            "coin": "BTC",
            "interval": "1m",
            "ts": start_ts + 60 * np.arange(n, dtype=np.int64),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume_base": volume_base,
            "volume_quote": volume_quote,
            "trade_count": trade_count,
            "source": "bench",
        }
    )[list(CANDLE_COLUMNS)]


def as_table_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as ``candles`` rows for ``to_sql``: + ``ingested_at``, integer trade_count."""
    out = frame.copy()
    out["trade_count"] = out["trade_count"].astype(np.int64)
    out["ingested_at"] = NOW
    return out


# ------------------------------------------------------------------------------ backends
class Backend:
    """One migrated database with a ``candles`` table the benchmark may empty at will."""

    name = ""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        self.factory: sessionmaker[Session] = session_factory(self.engine)

    def _autocommit(self, *statements: str) -> None:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for sql in statements:
                conn.exec_driver_sql(sql)

    def reset(self) -> None:
        raise NotImplementedError

    def settle(self) -> None:
        raise NotImplementedError

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM candles")).scalar_one())

    def close(self) -> None:
        self.engine.dispose()


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, base_url: str) -> None:
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"
        self.admin = make_engine(base_url)
        with self.admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {self.schema}"))
        sep = "&" if "?" in base_url else "?"
        url = f"{base_url}{sep}options=-csearch_path%3D{self.schema}"
        try:
            upgrade(url)
            super().__init__(url)
        except BaseException:
            self._drop()
            raise

    def reset(self) -> None:
        self._autocommit("TRUNCATE candles")

    def settle(self) -> None:
        self._autocommit("VACUUM (ANALYZE) candles", "CHECKPOINT")

    def _drop(self) -> None:
        with self.admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"))
        self.admin.dispose()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._drop()


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, folder: Path) -> None:
        url = f"sqlite:///{folder / 'bench.db'}"
        upgrade(url)
        super().__init__(url)

    def reset(self) -> None:
        self._autocommit("DELETE FROM candles", "VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)")

    def settle(self) -> None:
        self._autocommit("ANALYZE", "PRAGMA wal_checkpoint(TRUNCATE)")


# ----------------------------------------------------------------------------- measuring
@dataclass
class Timing:
    """Best-of-N wall time of one way of writing one case's rows."""

    method: str
    rows: int
    runs: list[float] = field(default_factory=list)
    page_ms: list[float] = field(default_factory=list)  # live loop: per page, best run
    upsert: dict[str, int] | None = None

    @property
    def best(self) -> float:
        return min(self.runs)

    @property
    def per_s(self) -> float:
        return self.rows / self.best


def upsert_once(backend: Backend, frame: pd.DataFrame) -> UpsertResult:
    with transaction(backend.factory) as session:
        return CandleRepository(session).upsert(frame, now=NOW)


def to_sql_once(backend: Backend, rows: pd.DataFrame, method: ToSqlMethod) -> None:
    chunksize = 10_000
    if method == "multi":  # bind-parameter limits: Postgres 65535, SQLite 32766; 12 columns
        chunksize = 5_000 if backend.name == "postgres" else 2_500
    rows.to_sql(
        "candles",
        backend.engine,
        if_exists="append",
        index=False,
        method=method,
        chunksize=chunksize,
    )


def method_name(method: ToSqlMethod) -> str:
    return f"to_sql(method={method!r})"


def time_runs(
    repeats: int,
    prepare: Callable[[], None],
    run: Callable[[], Any],
    check: Callable[[Any], None],
) -> tuple[list[float], Any]:
    """``repeats`` timed calls of ``run``, each after an untimed ``prepare``; checked."""
    runs: list[float] = []
    out: Any = None
    for _ in range(repeats):
        prepare()
        t0 = time.perf_counter()
        out = run()
        runs.append(time.perf_counter() - t0)
        check(out)
    return runs, out


def expect(got: UpsertResult, **want: int) -> None:
    have = got.as_dict()
    wrong = {k: (have[k], v) for k, v in want.items() if have[k] != v}
    if wrong:
        raise AssertionError(f"unexpected upsert result {have}: (got, want) {wrong}")


def expect_count(backend: Backend, n: int) -> None:
    got = backend.count()
    if got != n:
        raise AssertionError(f"{backend.name}: {got} rows in candles, expected {n}")


def load(backend: Backend, frame: pd.DataFrame) -> None:
    """Untimed fixture load: empty table, write ``frame``, settle."""
    backend.reset()
    upsert_once(backend, frame)
    backend.settle()


def baseline(
    backend: Backend,
    rows: pd.DataFrame,
    repeats: int,
    log: Callable[[str], None],
    methods: tuple[ToSqlMethod, ...] = TO_SQL_METHODS,
) -> list[Timing]:
    """``to_sql`` with each of ``methods``, every run into an emptied, settled table."""
    out = []
    for method in methods:

        def prepare() -> None:
            backend.reset()
            backend.settle()

        runs, _ = time_runs(
            repeats,
            prepare,
            functools.partial(to_sql_once, backend, rows, method),
            lambda _r: expect_count(backend, len(rows)),
        )
        timing = Timing(method_name(method), len(rows), runs)
        log(
            f"  {backend.name}: {timing.method} {len(rows):,} rows: best {timing.best:.2f} s "
            f"({timing.per_s:,.0f} candles/s)"
        )
        out.append(timing)
    return out


def select_method(
    backend: Backend, rows: pd.DataFrame, log: Callable[[str], None]
) -> tuple[ToSqlMethod, list[Timing]]:
    """Time every to_sql method once on ``rows``; the faster is the bulk baseline method."""
    log(f"{backend.name}: choosing the to_sql baseline method on {len(rows):,} rows")
    timings = baseline(backend, rows, 1, log)
    best = max(range(len(timings)), key=lambda i: timings[i].per_s)
    log(f"  {backend.name}: baseline method for cases a-c: {timings[best].method}")
    return TO_SQL_METHODS[best], timings


def live_loop(
    backend: Backend, pages: list[pd.DataFrame], write: Callable[[pd.DataFrame], Any]
) -> tuple[float, list[float]]:
    backend.reset()
    backend.settle()
    page_ms = []
    t0 = time.perf_counter()
    for page in pages:
        p0 = time.perf_counter()
        write(page)
        page_ms.append((time.perf_counter() - p0) * 1e3)
    return time.perf_counter() - t0, page_ms


@dataclass
class CaseResult:
    backend: str
    case: str
    title: str
    upsert: Timing
    baselines: list[Timing]
    selection: list[Timing] = field(default_factory=list)

    @property
    def baseline(self) -> Timing:
        return min(self.baselines, key=lambda t: t.best)


def run_backend(
    backend: Backend, args: argparse.Namespace, log: Callable[[str], None]
) -> list[CaseResult]:
    n = args.rows
    big, small = args.big_repeats, args.repeats
    walk = make_candles(n + n - n // 10)  # rows [0, n) and the overlapping page after them
    full = walk.iloc[:n].reset_index(drop=True)
    full_rows = as_table_rows(full)
    results: list[CaseResult] = []
    method, selection = select_method(backend, full_rows.iloc[: args.select_rows], log)

    # (a) bulk import into an empty table
    log(f"{backend.name}: (a) bulk import of {n:,} candles")

    def prepare_empty() -> None:
        backend.reset()
        backend.settle()

    runs, res = time_runs(
        big,
        prepare_empty,
        lambda: upsert_once(backend, full),
        lambda r: expect(r, received=n, inserted=n, updated=0, unchanged=0),
    )
    expect_count(backend, n)
    up_a = Timing("upsert", n, runs, upsert=res.as_dict())
    log(f"  {backend.name}: upsert: best {up_a.best:.2f} s")
    base_a = baseline(backend, full_rows, big, log, (method,))
    results.append(
        CaseResult(backend.name, "a", "bulk import (empty table)", up_a, base_a, selection)
    )

    # (b) the same rows again: nothing changes
    log(f"{backend.name}: (b) idempotent re-write of {n:,} candles")
    load(backend, full)
    runs, res = time_runs(
        big,
        backend.settle,
        lambda: upsert_once(backend, full),
        lambda r: expect(r, received=n, inserted=0, updated=0, unchanged=n),
    )
    expect_count(backend, n)
    up_b = Timing("upsert", n, runs, upsert=res.as_dict())
    log(f"  {backend.name}: upsert: best {up_b.best:.2f} s (baseline: that of (a))")
    results.append(CaseResult(backend.name, "b", "idempotent re-write (0 changed)", up_b, base_a))

    # (c) a page overlapping the stored tail by 10 %, overlapping values changed
    overlap = n // 10
    page = walk.iloc[n - overlap :].reset_index(drop=True)
    page.loc[: overlap - 1, "volume_base"] *= 1.001
    page.loc[: overlap - 1, "volume_quote"] *= 1.001
    page.loc[: overlap - 1, "trade_count"] += 1
    log(f"{backend.name}: (c) page of {len(page):,} candles, {overlap:,} overlapping + changed")
    runs, res = time_runs(
        big,
        lambda: load(backend, full),
        lambda: upsert_once(backend, page),
        lambda r: expect(r, inserted=len(page) - overlap, updated=overlap, unchanged=0),
    )
    expect_count(backend, n + len(page) - overlap)
    up_c = Timing("upsert", len(page), runs, upsert=res.as_dict())
    log(f"  {backend.name}: upsert: best {up_c.best:.2f} s")
    base_c = baseline(backend, as_table_rows(page), big, log, (method,))
    results.append(CaseResult(backend.name, "c", "10% overlap updated + 90% new", up_c, base_c))

    # (d) live loop: many small appended pages, one transaction each
    size, count = args.page_rows, args.pages
    stream = make_candles(size * count, seed=11)
    pages = [stream.iloc[i : i + size].reset_index(drop=True) for i in range(0, len(stream), size)]
    table_pages = [as_table_rows(p) for p in pages]  # built before timing
    log(f"{backend.name}: (d) live loop, {count:,} pages of {size} candles")
    loop_timings: list[Timing] = []
    writers: list[tuple[str, list[pd.DataFrame], Callable[[pd.DataFrame], Any]]] = [
        ("upsert", pages, lambda p: upsert_once(backend, p))
    ]
    for method in TO_SQL_METHODS:
        writers.append(
            (
                method_name(method),
                table_pages,
                functools.partial(to_sql_once, backend, method=method),
            )
        )
    for label, inputs, write in writers:
        timing = Timing(label, len(stream))
        best_pages: list[float] = []
        for _ in range(small):
            total, page_ms = live_loop(backend, inputs, write)
            expect_count(backend, len(stream))
            if not timing.runs or total < timing.best:
                best_pages = page_ms
            timing.runs.append(total)
        timing.page_ms = best_pages
        log(f"  {backend.name}: {label}: best {timing.best:.2f} s")
        loop_timings.append(timing)
    results.append(
        CaseResult(
            backend.name,
            "d",
            f"live loop {count}x{size} appended",
            loop_timings[0],
            loop_timings[1:],
        )
    )
    return results


# ------------------------------------------------------------------------------ report
def verdicts(r: CaseResult) -> dict[str, Any]:
    ratio = r.upsert.per_s / r.baseline.per_s
    checks = {f">= {RATIO_TARGET:g}x to_sql": ratio >= RATIO_TARGET}
    if r.backend == "postgres" and r.case == "a":
        checks[f">= {PG_TARGET_CANDLES_PER_S:,.0f}/s"] = r.upsert.per_s >= PG_TARGET_CANDLES_PER_S
    row: dict[str, Any] = {
        "backend": r.backend,
        "case": r.case,
        "title": r.title,
        "rows": r.upsert.rows,
        "upsert_s": r.upsert.best,
        "upsert_runs_s": r.upsert.runs,
        "upsert_candles_per_s": r.upsert.per_s,
        "upsert_result": r.upsert.upsert,
        "baseline_method": r.baseline.method,
        "baseline_s": r.baseline.best,
        "baseline_candles_per_s": r.baseline.per_s,
        "to_sql": {t.method: {"best_s": t.best, "runs_s": t.runs} for t in r.baselines},
        "ratio": ratio,
        "targets": checks,
        "pass": all(checks.values()),
    }
    if r.selection:
        row["to_sql_method_selection"] = {
            t.method: {"rows": t.rows, "s": t.best, "candles_per_s": t.per_s} for t in r.selection
        }
    if r.upsert.page_ms:
        pages = len(r.upsert.page_ms)
        row["pages"] = pages
        row["upsert_ms_per_page"] = r.upsert.best * 1e3 / pages
        row["upsert_page_ms_p50"] = statistics.median(r.upsert.page_ms)
        row["upsert_page_ms_p99"] = float(np.percentile(r.upsert.page_ms, 99))
        row["baseline_ms_per_page"] = r.baseline.best * 1e3 / pages
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'backend':<9} {'case':<34} {'rows':>9} {'upsert c/s':>11} {'ms/page':>8} "
        f"{'to_sql c/s':>11} {'baseline':<23} {'ratio':>7}  target"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        per_page = f"{r['upsert_ms_per_page']:.2f}" if "upsert_ms_per_page" in r else ""
        targets = ", ".join(f"{k}: {'PASS' if ok else 'FAIL'}" for k, ok in r["targets"].items())
        print(
            f"{r['backend']:<9} {'(' + r['case'] + ') ' + r['title']:<34} {r['rows']:>9,} "
            f"{r['upsert_candles_per_s']:>11,.0f} {per_page:>8} "
            f"{r['baseline_candles_per_s']:>11,.0f} {r['baseline_method']:<23} "
            f"{r['ratio']:>6.1f}x  {targets}"
        )
    for r in rows:
        if "upsert_ms_per_page" in r:
            print(
                f"{r['backend']} (d) per page: upsert mean {r['upsert_ms_per_page']:.2f} ms, "
                f"p50 {r['upsert_page_ms_p50']:.2f} ms, p99 {r['upsert_page_ms_p99']:.2f} ms; "
                f"{r['baseline_method']} mean {r['baseline_ms_per_page']:.2f} ms"
            )
    for r in rows:
        if "to_sql_method_selection" in r:
            print(
                f"{r['backend']} to_sql method choice: "
                + ", ".join(
                    f"{m} {v['candles_per_s']:,.0f} c/s on {v['rows']:,} rows"
                    for m, v in r["to_sql_method_selection"].items()
                )
            )
    for r in rows:
        print(
            f"{r['backend']} ({r['case']}) to_sql: "
            + ", ".join(f"{m} {v['best_s']:.2f} s" for m, v in r["to_sql"].items())
            + f" -> baseline {r['baseline_method']}"
        )
    ok = all(r["pass"] for r in rows)
    print(f"\nOVERALL: {'PASS' if ok else 'FAIL'}")


# ----------------------------------------------------------------------------- profile
def profile_postgres(backend: Backend, n: int, log: Callable[[str], None]) -> dict[str, str]:
    """cProfile of (a) and (b), and EXPLAIN (ANALYZE, BUFFERS) of the merge of (b) and (c)."""
    from storage import candles as mod

    out: dict[str, str] = {}
    full = make_candles(n)

    def profiled(label: str, fn: Callable[[], Any]) -> None:
        prof = cProfile.Profile()
        prof.enable()
        fn()
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
        out[f"cprofile_{label}"] = buf.getvalue()
        log(f"--- cProfile {label} ---\n{buf.getvalue()}")

    backend.reset()
    backend.settle()
    profiled("a_bulk_import", lambda: upsert_once(backend, full))
    backend.settle()
    profiled("b_rewrite", lambda: upsert_once(backend, full))

    overlap = n // 10
    page = make_candles(n + n - overlap).iloc[n - overlap :].reset_index(drop=True)
    page.loc[: overlap - 1, "trade_count"] += 1
    prepared = {
        "b_rewrite_all_unchanged": full,
        "c_overlap_only_10pct_changed": page.iloc[:overlap],
    }
    for label, rows in prepared.items():
        with transaction(backend.factory) as session:
            raw = session.connection().connection.driver_connection
            assert raw is not None
            with raw.cursor() as cur:
                cur.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {mod._PG_STAGE} (ts bigint, open float8, "
                    "high float8, low float8, close float8, volume_base float8, "
                    "volume_quote float8, trade_count bigint) ON COMMIT DELETE ROWS"
                )
                mod._copy(cur, mod._PG_STAGE, rows, mod._NUMERIC, {})
                cur.execute(
                    "EXPLAIN (ANALYZE, BUFFERS, VERBOSE) " + mod._PG_MERGE,
                    {"coin": "BTC", "interval": "1m", "source": "bench", "now": NOW},
                )
                plan = "\n".join(str(r[0]) for r in cur.fetchall())
            session.rollback()
        out[f"explain_{label}"] = plan
        log(f"--- EXPLAIN ANALYZE merge: {label} ({len(rows):,} staged rows) ---\n{plan}")
    return out


# -------------------------------------------------------------------------------- main
@contextmanager
def backends(args: argparse.Namespace) -> Iterator[list[Backend]]:
    opened: list[Backend] = []
    with tempfile.TemporaryDirectory(prefix="squall-bench-") as folder:
        try:
            if not args.skip_postgres:
                opened.append(PostgresBackend(args.pg_url))
            if not args.skip_sqlite:
                opened.append(SqliteBackend(Path(folder)))
            yield opened
        finally:
            for backend in opened:
                backend.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of cases a-c")
    parser.add_argument("--pages", type=int, default=1_000, help="pages of the live loop")
    parser.add_argument("--page-rows", type=int, default=100, help="candles per live page")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the live loop (best)")
    parser.add_argument("--big-repeats", type=int, default=2, help="runs of cases a-c (best)")
    parser.add_argument(
        "--select-rows",
        type=int,
        default=100_000,
        help="rows on which both to_sql methods are timed to pick the bulk baseline method",
    )
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--pg-url", default=PG_URL, help="Postgres database (a schema is made)")
    parser.add_argument("--profile", action="store_true", help="cProfile + EXPLAIN on Postgres")
    parser.add_argument("--json", action="store_true", help="print one JSON document only")
    args = parser.parse_args(argv)
    if args.rows < 10:
        parser.error("--rows must be at least 10")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    rows: list[dict[str, Any]] = []
    profile: dict[str, str] = {}
    with backends(args) as opened:
        for backend in opened:
            rows.extend(verdicts(r) for r in run_backend(backend, args, log))
            if args.profile and backend.name == "postgres":
                profile = profile_postgres(backend, args.rows, log)
    meta = {
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "cpus": os.cpu_count(),
        "args": {k: v for k, v in vars(args).items() if k != "pg_url"},
    }
    if args.json:
        doc: dict[str, Any] = {"meta": meta, "results": rows, "pass": all(r["pass"] for r in rows)}
        if profile:
            doc["profile"] = profile
        print(json.dumps(doc, indent=2, default=str))
    else:
        print()
        print_table(rows)
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
