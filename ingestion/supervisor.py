"""The ingestion supervisor: one detached, named, async Ray actor running every ingestion loop.

- get-or-create by name (``get_if_exists``), so a reload or a second ``squall up`` never makes
  two; ``max_restarts=-1`` so a killed supervisor comes back, and since the cursor lives in the
  database it resumes where the data ends;
- a cross-process writer lock (Postgres advisory lock / SQLite lock file): a supervisor that
  does not get it stays on standby and retries, so several processes sharing one database
  still have exactly one writer;
- one loop per (coin, interval) for candles and one per coin for snapshots and derivatives,
  each scheduled at its bar close; on SQLite every write goes through one mutex (single writer);
- the loops run their blocking work in threads of the event loop's default executor, sized to
  one thread per loop plus spare ones: a provider sleeping through its retry backoff during an
  outage holds a thread, and asyncio's default (CPUs + 4 threads) would then leave
  ``status()`` queued behind the loops, so ``/ready`` could not name the stalled jobs;
- after (re)start, and when a failing job recovers, the stored series are checked for holes
  and those ranges fetched;
- ``stop()`` lets a run in flight finish, stops the loops and releases the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

from ingestion.backfill import fix_gaps
from ingestion.config import IngestConfig, build_provider
from ingestion.jobs import CandleJob, DerivativesJob, Job
from storage.engine import is_sqlite, make_engine, session_factory
from storage.locks import WriterLock

log = logging.getLogger("squall.ingestion")

#: Executor threads beyond one per loop: status and lag checks never wait for a loop.
SPARE_THREADS = 4

SUPERVISOR_NAME = "squall-ingestion-supervisor"
NAMESPACE = "squall"


class _Metrics:
    """The supervisor's counters, kept twice: as Ray metrics (exported on each node's
    Prometheus endpoint; no-ops outside Ray) and as plain numbers per job that
    :meth:`IngestionSupervisor.metrics` hands to the API's ``/metrics``."""

    def __init__(self) -> None:
        self.totals: dict[str, dict[str, float]] = {}
        try:
            from ray.util import metrics

            self.runs = metrics.Counter(
                "squall_ingest_runs", "ingestion job runs", tag_keys=("job", "status")
            )
            self.candles = metrics.Counter(
                "squall_ingest_rows_written", "rows inserted or changed", tag_keys=("job",)
            )
            self.lag = metrics.Gauge(
                "squall_ingest_lag_seconds", "age of the newest stored bar", tag_keys=("job",)
            )
            self.enabled = True
        except Exception:  # pragma: no cover - ray always present in deployments
            self.enabled = False

    def _totals(self, job: Job) -> dict[str, float]:
        name = job.stats.job
        if name not in self.totals:
            self.totals[name] = {"ok": 0, "failed": 0, "inserted": 0, "stalls": 0, "stalled": 0}
        return self.totals[name]

    def observe_stall(self, job: Job) -> None:
        """Count a job's passage from keeping up to stalled (once per stall)."""
        totals = self._totals(job)
        stalled = 1 if job.stats.stalled else 0
        if stalled and not totals["stalled"]:
            totals["stalls"] += 1
        totals["stalled"] = stalled

    def record(self, job: Job, ok: bool) -> None:
        totals = self._totals(job)
        totals["ok" if ok else "failed"] += 1
        totals["inserted"] += getattr(job, "inserted_last_run", 0)
        self.observe_stall(job)
        if not self.enabled:
            return
        tags = {"job": job.stats.job}
        self.runs.inc(1, tags={**tags, "status": "ok" if ok else "failed"})
        if ok and job.stats.written_last_run:
            self.candles.inc(job.stats.written_last_run, tags=tags)
        if job.stats.age_s is not None:
            self.lag.set(job.stats.age_s, tags=tags)


class IngestionSupervisor:
    """Runs and reports every ingestion loop. Used as a Ray actor (see ``get_or_create``)."""

    def __init__(self, config: IngestConfig, autostart: bool = True) -> None:
        logging.basicConfig(level=logging.INFO)
        self.config = config
        self.engine = make_engine(config.database_url)
        self.sessions = session_factory(self.engine)
        self.provider = build_provider(config)
        self.lock = WriterLock(config.database_url)
        self.role = "stopped"
        self.started_at = time.time()
        # SQLite has one writer: every write transaction of every job takes this lock (fetches
        # from the provider run concurrently). Postgres needs none.
        self.write_guard: AbstractContextManager[Any] = (
            threading.Lock() if is_sqlite(config.database_url) else contextlib.nullcontext()
        )
        self.jobs: list[Job] = self._build_jobs()
        self.gap_checks: list[dict[str, Any]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics = _Metrics()
        self._main: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        if autostart:
            self._main = asyncio.get_running_loop().create_task(self._run())

    def _build_jobs(self) -> list[Job]:
        cfg = self.config
        backfill_s = int(cfg.backfill_days * 86400)
        jobs: list[Job] = [
            CandleJob(
                self.provider,
                self.sessions,
                coin,
                interval,
                backfill_s=backfill_s,
                overlap_bars=cfg.overlap_bars,
                grace_s=cfg.grace_s,
            )
            for coin in cfg.coins
            for interval in cfg.intervals
        ]
        jobs += [
            DerivativesJob(
                self.provider,
                self.sessions,
                coin,
                period_s=cfg.derivatives_period_s,
                backfill_s=backfill_s,
                grace_s=cfg.grace_s,
            )
            for coin in cfg.coins
        ]
        return jobs

    # -------------------------------------------------------------------------- control
    async def start(self) -> dict[str, Any]:
        if self._main is None or self._main.done():
            self._stop.clear()
            self._main = asyncio.get_running_loop().create_task(self._run())
        await asyncio.sleep(0)
        return await self.status()

    async def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Finish writes in flight, stop the loops, release the writer lock."""
        self._stop.set()
        pending = [t for t in (*self._tasks, self._main) if t is not None]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)
        self._tasks.clear()
        self.lock.release()
        self.role = "stopped"
        return await self.status()

    async def ping(self) -> str:
        return "pong"

    async def pid(self) -> int:
        """The actor's process id (benchmarks measure its CPU time)."""
        return os.getpid()

    async def status(self) -> dict[str, Any]:
        now = int(time.time())
        if self.role == "writer":
            await asyncio.to_thread(self._refresh_lag, now)
        jobs = [job.stats.as_dict() for job in self.jobs]
        return {
            "running": self.role == "writer" and not self._stop.is_set(),
            "role": self.role,
            "lock": self.lock.describe(),
            "data_source": self.config.data_source,
            "started_at": int(self.started_at),
            "jobs": jobs,
            "stalled": [j["job"] for j in jobs if j["stalled"]],
            "gap_checks": self.gap_checks[-20:],
        }

    def _refresh_lag(self, now: int) -> None:
        for job in self.jobs:
            try:
                job.refresh_lag(now)
            except Exception as exc:  # the database may be down: report, don't crash
                job.stats.last_error = f"lag check failed: {exc}"[:500]
            self._metrics.observe_stall(job)

    async def metrics(self) -> list[dict[str, Any]]:
        """Every job's counters since this actor started (runs ok and failed, candles newly
        stored, stalls) with its labels and current stall, for the API's ``/metrics``. Reads
        no database: cheap enough for every scrape."""
        out = []
        for job in self.jobs:
            totals = self._metrics._totals(job)
            out.append(
                {
                    "job": job.stats.job,
                    "kind": job.stats.kind,
                    "coin": job.stats.coin,
                    "interval": job.stats.interval or "",
                    "source": self.provider.source,
                    "ok": int(totals["ok"]),
                    "failed": int(totals["failed"]),
                    "inserted": int(totals["inserted"]),
                    "stalls": int(totals["stalls"]),
                    "stalled_by_s": float(job.stats.stalled_by_s),
                    "age_s": job.stats.age_s,
                }
            )
        return out

    # ---------------------------------------------------------------------------- loops
    async def _run(self) -> None:
        if self._executor is None:  # once per actor: a restart via start() keeps it
            self._executor = ThreadPoolExecutor(
                len(self.jobs) + SPARE_THREADS, thread_name_prefix="squall-ingest"
            )
            asyncio.get_running_loop().set_default_executor(self._executor)
        while not self._stop.is_set():
            if await asyncio.to_thread(self.lock.try_acquire):
                break
            self.role = "standby"
            log.info("another writer holds %s; standing by", self.lock.describe())
            await self._sleep(self.config.standby_retry_s)
        if self._stop.is_set():
            return
        self.role = "writer"
        log.info("ingestion writer: %d jobs from %s", len(self.jobs), self.config.data_source)
        self._tasks = [asyncio.get_running_loop().create_task(self._loop(j)) for j in self.jobs]
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))

    async def _loop(self, job: Job) -> None:
        if isinstance(job, CandleJob):
            await asyncio.to_thread(self._check_gaps, job)
        while not self._stop.is_set():
            was_failing = job.stats.consecutive_failures > 0
            ok = True
            started = time.time()
            try:
                await asyncio.to_thread(job.run_once)
            except Exception as exc:
                ok = False
                log.warning(
                    "%s failed (%d in a row): %s",
                    job.stats.job,
                    job.stats.consecutive_failures,
                    exc,
                )
            self._metrics.record(job, ok)
            if ok and was_failing and isinstance(job, CandleJob):
                await asyncio.to_thread(self._check_gaps, job)
            now = time.time()
            if ok:
                # due from when the run *started*: a bar that closed during a long run (a
                # catch-up) is fetched at once instead of one period late
                delay = job.next_due(started, self.config.fetch_delay_s) - now
            else:
                delay = min(
                    job.period_s(),
                    self.config.retry_base_s * 2 ** min(job.stats.consecutive_failures - 1, 10),
                )
            await self._sleep(delay)

    def _check_gaps(self, job: CandleJob) -> None:
        try:
            report = fix_gaps(
                self.provider, self.sessions, job.coin, job.interval, write_guard=self.write_guard
            )
        except Exception as exc:
            log.warning("gap check %s failed: %s", job.stats.job, exc)
            self.gap_checks.append({"job": job.stats.job, "error": str(exc)[:300]})
            return
        entry = {"job": job.stats.job, "at": int(time.time()), **report.as_dict()}
        entry["remaining"] = len(report.remaining)
        self.gap_checks.append(entry)


def get_or_create(
    config: IngestConfig,
    *,
    autostart: bool = True,
    name: str = SUPERVISOR_NAME,
    namespace: str = NAMESPACE,
) -> Any:
    """The one supervisor actor (created detached on first call, reused afterwards)."""
    import ray

    actor_cls = ray.remote(IngestionSupervisor)
    return actor_cls.options(
        name=name,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_concurrency=64,
        num_cpus=0,
    ).remote(config, autostart)


def find(name: str = SUPERVISOR_NAME, namespace: str = NAMESPACE) -> Any | None:
    """The running supervisor actor, or None."""
    import ray

    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None
