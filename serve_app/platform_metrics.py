"""The platform's own Prometheus series, the same on every replica: ingestion counters from the
one supervisor actor and run counts and durations from the run registry.

``/metrics`` serves them beside the replica's HTTP and process series (``observability``).
They are read at scrape time from where they live (the supervisor, the database), not counted
in the replica, so any one replica's ``/metrics`` covers the whole cluster and a restarted
replica loses nothing. Series (documented in docs/operations.md):

- ``jobs_ok_total`` / ``jobs_failed_total`` {job, kind, coin, interval, source}: ingestion runs;
- ``candles_inserted_total`` {coin, interval, source}: candles newly stored by ingestion;
- ``squall_ingest_stalls_total`` {job, ...}: times a job fell behind its allowance;
  ``squall_ingest_stalled_by_seconds`` and ``squall_ingest_age_seconds`` {job, ...} gauges;
- ``squall_ingest_supervisor_up``: 1 when the supervisor answered this scrape;
- ``squall_runs`` {kind, status}: runs in the registry;
- ``squall_run_duration_seconds`` {kind}: histogram of the recorded durations of finished runs.

The ingestion counters count from the supervisor's start (a restart resets them, which
Prometheus' ``rate``/``increase`` handle as a counter reset).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from sqlalchemy.orm import Session, sessionmaker

from serve_app.ingest import supervisor_metrics
from serve_app.settings import Settings
from storage.runs import RunRepository

log = logging.getLogger("squall.metrics")

#: Upper bounds of the run-duration histogram, seconds (a backtest: ms; a sweep: minutes).
DURATION_BUCKETS: tuple[float, ...] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
_JOB_LABELS = ("job", "kind", "coin", "interval", "source")


def ingestion_families(jobs: Iterable[dict[str, Any]] | None) -> list[Metric]:
    """The ingestion series from the supervisor's per-job counters (None: it did not answer)."""
    up = GaugeMetricFamily(
        "squall_ingest_supervisor_up", "1 when the ingestion supervisor answered this scrape"
    )
    up.add_metric([], 0.0 if jobs is None else 1.0)
    ok = CounterMetricFamily("jobs_ok", "ingestion job runs that succeeded", labels=_JOB_LABELS)
    failed = CounterMetricFamily(
        "jobs_failed", "ingestion job runs that failed", labels=_JOB_LABELS
    )
    stalls = CounterMetricFamily(
        "squall_ingest_stalls",
        "times an ingestion job fell behind its allowance",
        labels=_JOB_LABELS,
    )
    stalled = GaugeMetricFamily(
        "squall_ingest_stalled_by_seconds",
        "seconds an ingestion job is behind its allowance (0: keeping up)",
        labels=_JOB_LABELS,
    )
    age = GaugeMetricFamily(
        "squall_ingest_age_seconds",
        "seconds since the newest stored bar of a job closed (snapshots: since its last success)",
        labels=_JOB_LABELS,
    )
    inserted = CounterMetricFamily(
        "candles_inserted",
        "candles newly stored by ingestion (updates of stored bars not counted)",
        labels=("coin", "interval", "source"),
    )
    for job in jobs or ():
        labels = [str(job[k]) for k in _JOB_LABELS]
        ok.add_metric(labels, job["ok"])
        failed.add_metric(labels, job["failed"])
        stalls.add_metric(labels, job["stalls"])
        stalled.add_metric(labels, job["stalled_by_s"])
        if job["age_s"] is not None:
            age.add_metric(labels, job["age_s"])
        if job["kind"] == "candles":
            inserted.add_metric([job["coin"], job["interval"], job["source"]], job["inserted"])
    return [up, ok, failed, inserted, stalls, stalled, age]


def registry_families(sessions: sessionmaker[Session]) -> list[Metric]:
    """Run counts by kind and status and the run-duration histogram, from the registry."""
    runs = GaugeMetricFamily(
        "squall_runs", "runs in the registry by kind and status", labels=("kind", "status")
    )
    durations = HistogramMetricFamily(
        "squall_run_duration_seconds",
        "recorded duration of finished runs (backtest, simulation, ...) by kind",
        labels=("kind",),
    )
    with sessions() as session:
        repo = RunRepository(session)
        counts = repo.counts_by_kind_status()
        histogram = repo.duration_histogram(DURATION_BUCKETS)
    for (kind, status), n in sorted(counts.items()):
        runs.add_metric([kind, status], n)
    for kind, (cumulative, n, total) in sorted(histogram.items()):
        buckets = [(_bound(b), float(c)) for b, c in zip(DURATION_BUCKETS, cumulative, strict=True)]
        buckets.append(("+Inf", float(n)))
        durations.add_metric([kind], buckets, total)
    return [runs, durations]


def _bound(value: float) -> str:
    return repr(float(value))


class _Families:
    """A collector over families gathered once (for one exposition)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def platform_payload(settings: Settings, sessions: sessionmaker[Session]) -> bytes:
    """The text exposition of the platform series. A part that cannot be read (no database,
    no supervisor) is left out with a log line; the HTTP series are served regardless."""
    families: list[Metric] = []
    if settings.ingest_enabled:
        families += ingestion_families(supervisor_metrics())
    try:
        families += registry_families(sessions)
    except Exception as exc:
        log.warning("run registry metrics unavailable: %s", exc.__class__.__name__)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)
