"""Responses of the run registry: ``/runs``, ``/backtest/runs`` and ``/backtest/compare``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from serve_app.api.schemas.backtest import EquityOut, MetricValue, _Out


class RunSummaryOut(_Out):
    """One registry row without its large parts."""

    run_id: str = Field(description="registry id")
    kind: str = Field(description="backtest, walkforward, sweep, simulation or features")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] = Field(
        description="queued -> running -> succeeded | failed | cancelled"
    )
    created_at: str = Field(description="ISO-8601 UTC")
    created_at_unix: int = Field(description="unix seconds")
    started_at: str | None = Field(None, description="when it started running, ISO-8601 UTC")
    started_at_unix: int | None = Field(None, description="unix seconds")
    finished_at: str | None = Field(description="ISO-8601 UTC")
    finished_at_unix: int | None = Field(description="unix seconds")
    heartbeat_at: str | None = Field(
        None, description="last sign of life of the process running it, ISO-8601 UTC"
    )
    heartbeat_at_unix: int | None = Field(None, description="unix seconds")
    cancel_requested: bool = Field(False, description="a cancel was asked (DELETE /runs/{id})")
    worker: str | None = Field(None, description="where it ran or runs: node id and process")
    coin: str | None = Field(description="base asset (null for multi-series runs)")
    interval: str | None = Field(description="bar interval")
    strategy: str | None = Field(description="strategy name")
    seed: int | None = Field(description="the run's seed")
    code_version: str = Field(description="code version that produced it")
    data_fingerprint: str | None = Field(description="digest of the data used")
    request_hash: str = Field(description="sha256 of the canonical request")
    duration_s: float | None = Field(description="wall seconds")
    progress: dict[str, Any] | None = Field(
        description='done / total in the unit of the work, e.g. {"done": 40, "total": 100, '
        '"unit": "folds"}'
    )
    metrics: dict[str, Any] | None = Field(description="summary metrics")
    job_id: str | None = Field(description="Ray job submission id (sweeps)")
    rerun_of: str | None = Field(description="the run this one re-ran")
    error: str | None = Field(description="why it failed")


class RunsPage(_Out):
    """A page of runs, newest first."""

    total: int = Field(description="runs matching the filters")
    limit: int = Field(description="page size")
    offset: int = Field(description="runs skipped")
    next_offset: int | None = Field(description="offset of the next page; null on the last")
    runs: list[RunSummaryOut] = Field(description="the page")


class RunDetailOut(RunSummaryOut):
    """One registry row with its request and its stored results."""

    request: dict[str, Any] = Field(description="the request exactly as recorded")
    equity: EquityOut | None = Field(description="the equity curve (thinned to equity_points)")
    trades: list[dict[str, Any]] | None = Field(description="trades (first max_trades)")
    trades_total: int | None = Field(description="trades stored")
    results: dict[str, Any] | None = Field(
        description="kind-specific detail: regime stats, folds, sweep table"
    )


class CompareMetricOut(_Out):
    metric: str = Field(description="metric name")
    values: list[MetricValue] = Field(description="one value per run, in the order of ids")


class ParamDiffOut(_Out):
    field: str = Field(description="request field (dotted for nested)", examples=["params.fast"])
    values: list[Any] = Field(description="one value per run (null: absent)")


class CompareEquityOut(_Out):
    """Equity curves on one time axis: the union of every run's bar times."""

    ts: list[str] = Field(description="ISO-8601 UTC")
    ts_unix: list[int] = Field(description="unix seconds")
    series: dict[str, list[float | None]] = Field(
        description="run id -> equity at each time (null where that run has no bar)"
    )
    stride: int = Field(description="every stride-th time is shown")


class CompareResponse(_Out):
    runs: list[RunSummaryOut] = Field(description="the runs, in the order asked")
    metrics: list[CompareMetricOut] = Field(description="metrics side by side")
    param_diffs: list[ParamDiffOut] = Field(description="request fields that differ")
    equity: CompareEquityOut = Field(description="equity curves on one time axis")


class RunQueuedOut(_Out):
    """202: the run is recorded and queued on a warm worker; follow it at ``poll``."""

    run_id: str = Field(description="registry id")
    kind: str = Field(description="the kind of run")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] = Field(
        description="its status when this answer was made"
    )
    progress: dict[str, Any] | None = Field(description="done / total in the work's unit")
    poll: str = Field(description="where to follow it (GET); DELETE /runs/{run_id} cancels")
    worker: str | None = Field(None, description="the worker it was handed to")
