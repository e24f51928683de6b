"""The supervisor's per-job counters (served by ``/metrics``) on plain job objects: runs ok and
failed, candles newly stored, and stalls counted once per passage into a stall."""

from __future__ import annotations

from ingestion.jobs import Job
from ingestion.supervisor import _Metrics


def test_counts_runs_inserts_and_each_stall_once() -> None:
    job = Job("candles:BTC:1h", "BTC", "1h", clock=lambda: 1_700_000_000.0)
    job.inserted_last_run = 0  # type: ignore[attr-defined]
    metrics = _Metrics()
    for inserted, ok, stalled_by in [(5, True, 0.0), (0, False, 30.0), (0, False, 90.0),
                                     (7, True, 0.0), (0, False, 12.0)]:  # fmt: skip
        job.inserted_last_run = inserted  # type: ignore[attr-defined]
        job.stats.stalled_by_s = stalled_by
        metrics.record(job, ok)
    totals = metrics.totals["candles:BTC:1h"]
    assert (totals["ok"], totals["failed"], totals["inserted"]) == (2, 3, 12)
    assert totals["stalls"] == 2  # stalled, still stalled, recovered, stalled again
    job.stats.stalled_by_s = 0.0
    metrics.observe_stall(job)  # a status refresh that finds it caught up
    job.stats.stalled_by_s = 5.0
    metrics.observe_stall(job)
    assert metrics.totals["candles:BTC:1h"]["stalls"] == 3
