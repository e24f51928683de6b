"""Ingestion supervisor: catch-up rate and steady-state CPU cost, against a fake Binance.

What is measured
----------------
The real ``IngestionSupervisor`` Ray actor (``ingestion.supervisor.get_or_create``) with
``data_source="binance"``: the real ``BinanceProvider`` (httpx, rate-limit gate, pagination)
talking over loopback HTTP to ``tests.fakes.exchange.FakeExchange``, writing to a migrated
database, with 3 coins (BTC, ETH, SOL) x 4 intervals (1m, 5m, 1h, 1d) of candle loops plus
one derivatives loop per coin (24h ticker, premium index, open interest, funding and
open-interest history; the fake serves USDT-M futures for all three coins).

The fake's clock is the wall clock (the supervisor's is too). Its data is a seeded geometric
random walk of 1m bars from ``--days`` days before now until well after the end of the run,
with 5m / 1h / 1d bars aggregated from it; the bar containing "now" is served still open
(partial values, future ``closeTime``) and bars after it are not served at all, so new
closed 1m bars appear every minute exactly as on the venue.

1. **catch-up** (``--days`` of history, ``backfill_days = --days``): from the supervisor's
   creation until every series holds every bar closed at that moment and every coin has a
   market snapshot (polled every 0.1 s with one index-only query). Reported: candles stored,
   seconds (from the actor being ready; actor start-up separately), candles/s, HTTP requests
   the fake answered, the actor's CPU (may exceed 100 %: pool threads), and a completeness
   check (every series contiguous from the backfill start to its last closed bar).
2. **steady**: the loops stay live for ``--steady-seconds`` (default 180) starting half-way
   through a minute, so each minute's run (at close + ``fetch_delay_s``) falls inside it.
   Reported: CPU time (user + system, psutil) of the supervisor actor's process over the
   window as % of one core, new candles (expected: one per 1m bar and coin, plus any 5m, 1h
   and 1d bar closing in the window; one more bar per series when a run that ended after a
   bar close left it for the next period: the supervisor schedules the next run from the end
   of the previous one), requests. For context, over the same window: an idle
   async Ray actor (Ray's own floor per actor process), the Postgres backends serving the
   supervisor (found by database name; not counted against the target), the other Ray
   processes of this local cluster, and the fake exchange's server thread, which runs in
   this process and is not squall's cost.

Both phases run on Postgres and, unless ``--skip-sqlite``, on SQLite (a temporary file).
Postgres runs in a private **database** ``bench_ingest_<random>`` created on the server of
``--pg-url`` and dropped at the end (``WITH (FORCE)``). Not a schema as in ``bench_upsert``:
the writer lock is a Postgres advisory lock, which is per database, so a schema of a shared
database would stand by behind (or block) any other squall supervisor using that database.

Targets (PASS/FAIL)
-------------------
* steady: supervisor actor CPU < 5 % of one core (3 coins x 4 intervals + derivatives);
* catch-up: no target; it must complete (every bar present, no hole) within
  ``--catchup-timeout`` seconds or the run fails.

Run (repository root; Postgres at 127.0.0.1:5432 with trust auth and CREATEDB)::

    python -m benchmarks.bench_ingest                        # 30 days, 180 s window, PG + SQLite
    python -m benchmarks.bench_ingest --days 7 --steady-seconds 60 --skip-sqlite
    python -m benchmarks.bench_ingest --json                 # one JSON document on stdout

The machine's load average is printed with the results: CPU shares are only comparable
between runs on an otherwise idle machine. Everything started is torn down at the end, also
on errors, Ctrl-C or SIGTERM: supervisor ``stop()`` + ``ray.kill``, ``ray.shutdown``, the fake
exchange, the Postgres database, the SQLite folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import psutil
import ray
from sqlalchemy import Engine, make_url, text

from ingestion.config import IngestConfig
from ingestion.supervisor import get_or_create
from storage.engine import make_engine
from storage.intervals import INTERVAL_SECONDS
from storage.migrate import upgrade
from tests.fakes.exchange import FakeExchange, Series

PG_URL = os.environ.get(
    "SQUALL_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
COINS: tuple[str, ...] = ("BTC", "ETH", "SOL")
INTERVALS: tuple[str, ...] = ("1m", "5m", "1h", "1d")
START_PRICES: dict[str, float] = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}
REQUESTS_PER_SECOND = 1000.0
CPU_TARGET_PCT = 5.0
NAMESPACE = "squall-bench"
PROBE_APP = "squall-bench-probe"  # application_name of this process's own Postgres sessions
DAY = 86_400


# --------------------------------------------------------------------------------- data
@dataclass
class RenderedSeries(Series):
    """A ``Series`` whose closed klines are rendered once, so the fake stays cheap."""

    rows: list[list[Any]] = field(default_factory=list)

    def kline(self, i: int, frac: float = 1.0, close_time: int | None = None) -> list[Any]:
        if frac >= 1.0 and close_time is None and self.rows:
            return self.rows[i]
        return super().kline(i, frac, close_time)

    def render(self) -> RenderedSeries:
        self.rows = [Series.kline(self, i) for i in range(len(self.open_time))]
        return self


def minute_walk(n: int, *, seed: int, price: float) -> np.ndarray:
    """``n`` 1m bars (open, high, low, close, volume, quote volume, trades), consistent OHLC."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0.0, 8e-4, n)))
    open_ = np.concatenate([[price], close[:-1]])
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 4e-4, n)))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 4e-4, n)))
    volume = rng.gamma(2.0, 6.0, n)
    trades = rng.poisson(400, n).astype(np.float64)
    values = np.column_stack([open_, high, low, close, volume, volume * close, trades])
    return np.round(values, 8)


def aggregate(values: np.ndarray, factor: int) -> np.ndarray:
    """Bars of ``factor`` consecutive 1m bars (first open, max high, min low, last close, sums)."""
    blocks = values.reshape(-1, factor, values.shape[1])
    return np.column_stack(
        [
            blocks[:, 0, 0],
            blocks[:, :, 1].max(axis=1),
            blocks[:, :, 2].min(axis=1),
            blocks[:, -1, 3],
            np.round(blocks[:, :, 4].sum(axis=1), 8),
            np.round(blocks[:, :, 5].sum(axis=1), 8),
            blocks[:, :, 6].sum(axis=1),
        ]
    )


def build_series(start_s: int, end_s: int, *, seed: int, price: float) -> dict[str, Series]:
    """Every interval of one coin over ``[start_s, end_s)`` (whole days), 1m aggregated up."""
    minutes = (end_s - start_s) // 60
    base = minute_walk(minutes, seed=seed, price=price)
    out: dict[str, Series] = {}
    for interval in INTERVALS:
        step = INTERVAL_SECONDS[interval]
        values = base if step == 60 else aggregate(base, step // 60)
        open_time = (start_s + step * np.arange(len(values), dtype=np.int64)) * 1000
        out[interval] = RenderedSeries(interval, open_time, values).render()
    return out


class WallClockExchange(FakeExchange):
    """The fake venue with its "now" tied to the wall clock and only the benchmark's data."""

    def __init__(self, start_s: int, end_s: int) -> None:
        super().__init__()
        with self._lock:
            self._series = {}
        for k, coin in enumerate(COINS):
            series = build_series(start_s, end_s, seed=100 + k, price=START_PRICES[coin])
            for s in series.values():
                self.add_series("spot", f"{coin}USDT", s)
            self.add_series("um", f"{coin}USDT", series["1m"])  # futures: funding, OI, mark

    @property
    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def thread_cpu_s(self) -> float:
        """CPU seconds (user + system) of the server thread so far (0 when not running)."""
        thread = self._thread
        if thread is None or thread.native_id is None:
            return 0.0
        for t in psutil.Process().threads():
            if t.id == thread.native_id:
                return t.user_time + t.system_time
        return 0.0


# --------------------------------------------------------------------------- databases
class Database:
    """A migrated database for the supervisor, plus a probe engine to watch it."""

    name = ""

    def __init__(self, url: str, probe: Engine) -> None:
        self.url = url
        self.probe = probe

    def latest(self) -> dict[tuple[str, str], int | None]:
        """Newest stored bar of every benchmark series, in one round trip (index lookups)."""
        parts, params = [], {}
        for i, (coin, interval) in enumerate((c, iv) for c in COINS for iv in INTERVALS):
            parts.append(f'(SELECT max(ts) FROM candles WHERE coin = :c{i} AND "interval" = :i{i})')
            params |= {f"c{i}": coin, f"i{i}": interval}
        with self.probe.connect() as conn:
            row = conn.execute(text("SELECT " + ", ".join(parts)), params).one()
        keys = [(c, iv) for c in COINS for iv in INTERVALS]
        return {k: None if v is None else int(v) for k, v in zip(keys, row, strict=True)}

    def snapshot_coins(self) -> set[str]:
        with self.probe.connect() as conn:
            return {
                str(c) for (c,) in conn.execute(text("SELECT DISTINCT coin FROM market_snapshots"))
            }

    def coverage(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(count, first ts, last ts) of every stored series."""
        sql = 'SELECT coin, "interval", count(*), min(ts), max(ts) FROM candles GROUP BY 1, 2'
        with self.probe.connect() as conn:
            return {
                (str(c), str(i)): (int(n), int(lo), int(hi))
                for c, i, n, lo, hi in conn.execute(text(sql))
            }

    def table_counts(self) -> dict[str, int]:
        tables = ("candles", "market_snapshots", "funding_rates", "open_interest")
        with self.probe.connect() as conn:
            return {
                t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in tables
            }

    def server_pids(self) -> list[int]:
        """Database server processes serving the supervisor (none for SQLite: in-process)."""
        return []

    def close(self) -> None:
        self.probe.dispose()


class PostgresDatabase(Database):
    name = "postgres"

    def __init__(self, server_url: str) -> None:
        self.dbname = f"bench_ingest_{uuid.uuid4().hex[:10]}"
        self.admin = make_engine(server_url, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {self.dbname}"))
        url = make_url(server_url).set(database=self.dbname).render_as_string(hide_password=False)
        try:
            upgrade(url)
            probe = make_engine(url, connect_args={"application_name": PROBE_APP})
        except BaseException:
            self._drop()
            raise
        super().__init__(url, probe)

    def server_pids(self) -> list[int]:
        sql = (
            "SELECT pid FROM pg_stat_activity WHERE datname = :db "
            "AND application_name <> :probe AND pid <> pg_backend_pid()"
        )
        with self.admin.connect() as conn:
            rows = conn.execute(text(sql), {"db": self.dbname, "probe": PROBE_APP})
            return [int(pid) for (pid,) in rows]

    def _drop(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {self.dbname} WITH (FORCE)"))
        self.admin.dispose()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._drop()


class SqliteDatabase(Database):
    name = "sqlite"

    def __init__(self, folder: Path) -> None:
        url = f"sqlite:///{folder / 'ingest.db'}"
        upgrade(url)
        super().__init__(url, make_engine(url))


# ------------------------------------------------------------------------------ CPU
def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each process that still exists."""
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two readings (a process born in between counts from 0)."""
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def ray_pids(exclude: set[int]) -> list[int]:
    """This driver's descendants (the local Ray cluster) except ``exclude``."""
    me = psutil.Process()
    return [p.pid for p in me.children(recursive=True) if p.pid not in exclude]


def own_cpu_s() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


@ray.remote(num_cpus=0)
class IdleActor:
    """An async actor that does nothing: Ray's own CPU floor for one actor process."""

    async def pid(self) -> int:
        return os.getpid()


# ---------------------------------------------------------------------------- running
def last_closed(now: float, step: int) -> int:
    return (int(now) // step - 1) * step


def backfill_start(now: float, step: int, backfill_s: int) -> int:
    return (int(now) - backfill_s) // step * step


def sleep_until(deadline: float) -> None:
    while (left := deadline - time.time()) > 0:
        time.sleep(min(left, 0.5))


@dataclass
class Run:
    """One supervisor on one database: both phases' numbers."""

    backend: str
    catchup: dict[str, Any] = field(default_factory=dict)
    steady: dict[str, Any] = field(default_factory=dict)


def make_config(db: Database, fake: FakeExchange, days: float) -> IngestConfig:
    return IngestConfig(
        database_url=db.url,
        coins=COINS,
        intervals=INTERVALS,
        data_source="binance",
        binance_spot_url=fake.base_url,
        binance_futures_url=fake.base_url,
        binance_requests_per_second=REQUESTS_PER_SECOND,
        backfill_days=days,
    )


def catch_up(
    db: Database,
    fake: WallClockExchange,
    actor: Any,
    t0: float,
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Wait for the backlog present at ``t0`` to be stored; return the phase's numbers."""
    backfill_s = int(args.days * DAY)
    target = {(c, iv): last_closed(t0, INTERVAL_SECONDS[iv]) for c in COINS for iv in INTERVALS}
    pid = int(ray.get(actor.pid.remote(), timeout=120))
    t_ready = time.time()
    cpu0 = cpu_seconds([pid])
    fake_cpu0 = fake.thread_cpu_s()
    log(f"  {db.name}: supervisor pid {pid} ready after {t_ready - t0:.2f} s; catching up")
    deadline = t0 + args.catchup_timeout
    last_log = t_ready
    while True:
        latest = db.latest()
        done = all((latest[k] or -1) >= v for k, v in target.items())
        if done and db.snapshot_coins() >= set(COINS):
            break
        now = time.time()
        if now > deadline:
            status = ray.get(actor.status.remote(), timeout=60)
            behind = {
                f"{c}:{iv}": latest[(c, iv)]
                for (c, iv), v in target.items()
                if (latest[(c, iv)] or 0) < v
            }
            raise RuntimeError(
                f"{db.name}: not caught up after {args.catchup_timeout:.0f} s; behind: {behind}; "
                f"role {status['role']}; errors: "
                f"{[j['last_error'] for j in status['jobs'] if j['last_error']][:3]}"
            )
        if now - last_log > 10:
            behind = sum(1 for k, v in target.items() if (latest[k] or 0) < v)
            log(f"  {db.name}: {now - t_ready:.0f} s, {behind} series still behind")
            last_log = now
        time.sleep(0.1)
    t_done = time.time()
    cpu = cpu_delta(cpu0, cpu_seconds([pid]))
    fake_cpu = fake.thread_cpu_s() - fake_cpu0
    requests = fake.request_count()
    coverage = db.coverage()
    counts = db.table_counts()
    holes = {}
    for (coin, interval), (n, lo, hi) in coverage.items():
        step = INTERVAL_SECONDS[interval]
        expected_first = backfill_start(t0, step, backfill_s)
        if n != (hi - lo) // step + 1 or lo > expected_first + step:
            holes[f"{coin}:{interval}"] = {"count": n, "first": lo, "last": hi}
    if set(coverage) != set(target):
        holes["missing_series"] = sorted(f"{c}:{i}" for c, i in set(target) - set(coverage))
    candles = counts["candles"]
    ingest_s = t_done - t_ready
    status = ray.get(actor.status.remote(), timeout=60)
    return {
        "candles": candles,
        "per_series": {f"{c}:{i}": v[0] for (c, i), v in sorted(coverage.items())},
        "startup_s": t_ready - t0,
        "seconds": ingest_s,
        "seconds_incl_startup": t_done - t0,
        "candles_per_s": candles / ingest_s,
        "candles_per_s_incl_startup": candles / (t_done - t0),
        "requests": requests,
        "requests_klines": len(fake.requests_to("/api/v3/klines")),
        "derivative_rows": {k: v for k, v in counts.items() if k != "candles"},
        "actor_cpu_s": cpu,
        "actor_cpu_pct": 100.0 * cpu / ingest_s,
        "fake_cpu_s": fake_cpu,
        "complete": not holes,
        "incomplete": holes,
        "role": status["role"],
        "jobs_with_errors": [j["job"] for j in status["jobs"] if j["last_error"]],
        "runs_total": sum(j["runs"] for j in status["jobs"]),
        "loadavg_after": os.getloadavg(),
    }


def expected_new(start: float, end: float) -> int:
    """Bars of every benchmark series that close inside ``(start, end]`` (one per coin)."""
    total = 0
    for interval in INTERVALS:
        step = INTERVAL_SECONDS[interval]
        total += len(COINS) * (int(end) // step - int(start) // step)
    return total


def steady(
    db: Database,
    fake: WallClockExchange,
    actor: Any,
    idle_pid: int,
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """CPU of the live loops over ``--steady-seconds``, starting half-way through a minute."""
    pid = int(ray.get(actor.pid.remote(), timeout=60))
    start = time.time() + args.settle_seconds
    start = math.floor(start / 60) * 60 + 30 + (60 if start % 60 > 30 else 0)
    log(
        f"  {db.name}: steady window of {args.steady_seconds:.0f} s starts at "
        f"{time.strftime('%H:%M:%S', time.localtime(start))} (in {start - time.time():.0f} s)"
    )
    sleep_until(start)
    load0 = os.getloadavg()
    t_start = time.time()
    counts0, series0 = db.table_counts(), db.coverage()
    req0 = fake.request_count()
    others = ray_pids({pid, idle_pid})
    db_pids0 = db.server_pids()
    cpu0 = cpu_seconds([pid, idle_pid, *others, *db_pids0])
    fake0, own0 = fake.thread_cpu_s(), own_cpu_s()
    p0 = time.perf_counter()
    sleep_until(t_start + args.steady_seconds)
    wall = time.perf_counter() - p0
    db_pids1 = db.server_pids()
    cpu1 = cpu_seconds([pid, idle_pid, *others, *db_pids1])
    fake_cpu, own_cpu = fake.thread_cpu_s() - fake0, own_cpu_s() - own0
    t_end = time.time()
    counts1, series1 = db.table_counts(), db.coverage()
    req = fake.request_count() - req0
    new_by_interval = {
        iv: sum(
            series1.get((c, iv), (0, 0, 0))[0] - series0.get((c, iv), (0, 0, 0))[0] for c in COINS
        )
        for iv in INTERVALS
    }
    load1 = os.getloadavg()

    def share(pids: list[int]) -> float:
        got = cpu_delta(
            {p: cpu0[p] for p in pids if p in cpu0}, {p: cpu1[p] for p in pids if p in cpu1}
        )
        return 100.0 * got / wall

    actor_pct = share([pid])
    status = ray.get(actor.status.remote(), timeout=60)
    rss = psutil.Process(pid).memory_info().rss if psutil.pid_exists(pid) else 0
    return {
        "seconds": wall,
        "candles": counts1["candles"] - counts0["candles"],
        "candles_expected": expected_new(t_start, t_end),
        "candles_by_interval": new_by_interval,
        "candles_per_s": (counts1["candles"] - counts0["candles"]) / wall,
        "derivative_rows": {k: counts1[k] - counts0[k] for k in counts1 if k != "candles"},
        "requests": req,
        "actor_cpu_pct": actor_pct,
        "idle_actor_cpu_pct": share([idle_pid]),
        "db_server_cpu_pct": share(sorted(set(db_pids0) | set(db_pids1))),
        "db_server_processes": len(set(db_pids0) | set(db_pids1)),
        "ray_other_cpu_pct": share(others),
        "fake_thread_cpu_pct": 100.0 * fake_cpu / wall,
        "bench_process_cpu_pct": 100.0 * own_cpu / wall,
        "actor_rss_mb": rss / 2**20,
        "target_pct": CPU_TARGET_PCT,
        "pass": actor_pct < CPU_TARGET_PCT,
        "stalled": status["stalled"],
        "jobs_with_errors": [j["job"] for j in status["jobs"] if j["last_error"]],
        "loadavg_start": load0,
        "loadavg_end": load1,
    }


def run_backend(
    db: Database,
    fake: WallClockExchange,
    idle_pid: int,
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> Run:
    run = Run(db.name)
    fake.reset()
    cfg = make_config(db, fake, args.days)
    name = f"bench-ingest-{db.name}-{uuid.uuid4().hex[:6]}"
    log(f"{db.name}: load average {os.getloadavg()}; starting supervisor {name}")
    t0 = time.time()
    actor = get_or_create(cfg, name=name, namespace=NAMESPACE)
    try:
        run.catchup = catch_up(db, fake, actor, t0, args, log)
        c = run.catchup
        log(
            f"  {db.name}: caught up: {c['candles']:,} candles in {c['seconds']:.2f} s "
            f"({c['candles_per_s']:,.0f}/s), {c['requests']} requests"
        )
        if args.steady_seconds > 0:
            run.steady = steady(db, fake, actor, idle_pid, args, log)
            s = run.steady
            log(
                f"  {db.name}: steady: actor {s['actor_cpu_pct']:.2f} % of one core, "
                f"{s['candles']} new candles, {s['requests']} requests"
            )
    finally:
        stop_actor(actor, log)
    return run


def stop_actor(actor: Any, log: Callable[[str], None]) -> None:
    try:
        ray.get(actor.stop.remote(), timeout=60)
    except Exception as exc:
        log(f"  supervisor stop failed: {exc}")
    with contextlib.suppress(Exception):
        ray.kill(actor, no_restart=True)


# ------------------------------------------------------------------------------ report
def table_rows(runs: list[Run]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for r in runs:
        c = r.catchup
        if c:
            rows.append(
                {
                    "phase": "catch-up",
                    "backend": r.backend,
                    "candles": c["candles"],
                    "seconds": c["seconds"],
                    "candles_per_s": c["candles_per_s"],
                    "requests": c["requests"],
                    "cpu_pct": c["actor_cpu_pct"],
                    "verdict": "PASS" if c["complete"] else "FAIL (incomplete)",
                }
            )
        s = r.steady
        if s:
            rows.append(
                {
                    "phase": "steady",
                    "backend": r.backend,
                    "candles": s["candles"],
                    "seconds": s["seconds"],
                    "candles_per_s": s["candles_per_s"],
                    "requests": s["requests"],
                    "cpu_pct": s["actor_cpu_pct"],
                    "verdict": ("PASS" if s["pass"] else "FAIL") + f" (< {CPU_TARGET_PCT:g} %)",
                }
            )
    return rows


def print_report(runs: list[Run], meta: dict[str, Any]) -> None:
    rows = table_rows(runs)
    head = (
        f"{'phase':<9} {'backend':<9} {'candles':>9} {'seconds':>8} {'candles/s':>10} "
        f"{'requests':>8} {'CPU % 1 core':>12}  verdict"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['phase']:<9} {r['backend']:<9} {r['candles']:>9,} {r['seconds']:>8.2f} "
            f"{r['candles_per_s']:>10,.1f} {r['requests']:>8,} {r['cpu_pct']:>12.2f}  "
            f"{r['verdict']}"
        )
    print()
    for r in runs:
        c, s = r.catchup, r.steady
        if c:
            print(
                f"{r.backend} catch-up: actor start-up {c['startup_s']:.2f} s (incl.: "
                f"{c['seconds_incl_startup']:.2f} s, {c['candles_per_s_incl_startup']:,.0f}/s); "
                f"{c['requests_klines']} klines requests of {c['requests']}; fake thread "
                f"{c['fake_cpu_s']:.2f} CPU s; derivatives rows {c['derivative_rows']}; "
                f"complete: {c['complete']} {c['incomplete'] or ''}; "
                f"load avg after {fmt_load(c['loadavg_after'])}"
            )
        if s:
            print(
                f"{r.backend} steady: {s['candles']} new candles (expected "
                f"{s['candles_expected']}; by interval {s['candles_by_interval']}), "
                f"derivatives rows {s['derivative_rows']}; "
                f"CPU % of one core: supervisor {s['actor_cpu_pct']:.2f}, idle Ray actor "
                f"{s['idle_actor_cpu_pct']:.2f}, DB server {s['db_server_cpu_pct']:.2f} "
                f"({s['db_server_processes']} backends), other Ray processes "
                f"{s['ray_other_cpu_pct']:.2f}, fake exchange thread "
                f"{s['fake_thread_cpu_pct']:.2f} (whole bench process "
                f"{s['bench_process_cpu_pct']:.2f}); actor RSS {s['actor_rss_mb']:.0f} MiB; "
                f"stalled {s['stalled']}, errors {s['jobs_with_errors']}; load avg "
                f"{fmt_load(s['loadavg_start'])} -> {fmt_load(s['loadavg_end'])}"
            )
    print(
        f"\nsetup: {meta['cpus']} CPUs, {len(COINS)} coins x {len(INTERVALS)} intervals, "
        f"{meta['args']['days']:g} days of 1m history, binance_requests_per_second "
        f"{REQUESTS_PER_SECOND:g}; load average at start {fmt_load(meta['loadavg_start'])}, "
        f"at end {fmt_load(meta['loadavg_end'])}"
    )
    print(f"OVERALL: {'PASS' if overall(runs) else 'FAIL'}")


def fmt_load(load: tuple[float, float, float] | list[float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def overall(runs: list[Run]) -> bool:
    return all(r.catchup.get("complete") and r.steady.get("pass", True) for r in runs)


# -------------------------------------------------------------------------------- main
def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def resources(
    args: argparse.Namespace, log: Callable[[str], None]
) -> Iterator[tuple[WallClockExchange, list[Callable[[], Database]], int]]:
    """The fake exchange, Ray, an idle actor and database factories; all torn down after."""
    with contextlib.ExitStack() as stack:
        now = int(time.time())
        start_s = (now - int(args.days * DAY)) // DAY * DAY - DAY
        backends = 1 if args.skip_sqlite else 2
        ahead = backends * (args.steady_seconds + args.catchup_timeout + 180) + 3600
        end_s = -(-(now + int(ahead)) // DAY) * DAY
        t = time.perf_counter()
        fake = WallClockExchange(start_s, end_s)
        log(
            f"fake exchange: {(end_s - start_s) // 60:,} 1m bars per coin "
            f"(+ 5m/1h/1d), built in {time.perf_counter() - t:.1f} s"
        )
        fake.start()
        stack.callback(fake.stop)
        root = str(Path(__file__).resolve().parent.parent)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p
        )
        stack.callback(ray.shutdown)  # first: an interrupted ray.init is torn down too
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            namespace=NAMESPACE,
        )
        idle = IdleActor.remote()  # type: ignore[attr-defined]
        stack.callback(lambda: ray.kill(idle, no_restart=True))
        idle_pid = int(ray.get(idle.pid.remote(), timeout=120))
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="squall-ingest-")))
        factories: list[Callable[[], Database]] = [lambda: PostgresDatabase(args.pg_url)]
        if not args.skip_sqlite:
            factories.append(lambda: SqliteDatabase(folder))
        yield fake, factories, idle_pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=30.0, help="days of history to catch up")
    parser.add_argument(
        "--steady-seconds", type=float, default=180.0, help="steady-state window (0: skip)"
    )
    parser.add_argument(
        "--settle-seconds", type=float, default=5.0, help="least wait after catch-up"
    )
    parser.add_argument(
        "--catchup-timeout", type=float, default=900.0, help="fail if not caught up by then"
    )
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--pg-url", default=PG_URL, help="Postgres server (a database is made)")
    parser.add_argument("--json", action="store_true", help="print one JSON document only")
    args = parser.parse_args(argv)
    if args.days <= 0 or args.steady_seconds < 0:
        parser.error("--days must be > 0 and --steady-seconds >= 0")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with & / nohup
    signal.signal(signal.SIGTERM, _sigterm)  # Ray's driver replaces it with sys.exit: also fine
    load_start = os.getloadavg()
    runs: list[Run] = []
    with resources(args, log) as (fake, factories, idle_pid):
        for factory in factories:
            db = factory()
            try:
                runs.append(run_backend(db, fake, idle_pid, args, log))
            finally:
                db.close()
    meta = {
        "python": platform.python_version(),
        "ray": ray.__version__,
        "cpus": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "binance_requests_per_second": REQUESTS_PER_SECOND,
        "coins": COINS,
        "intervals": INTERVALS,
        "args": {k: v for k, v in vars(args).items() if k != "pg_url"},
    }
    ok = overall(runs)
    if args.json:
        doc = {
            "meta": meta,
            "table": table_rows(runs),
            "results": [
                {"backend": r.backend, "catchup": r.catchup, "steady": r.steady} for r in runs
            ],
            "pass": ok,
        }
        print(json.dumps(doc, indent=2, default=str))
    else:
        print()
        print_report(runs, meta)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
