"""Reports of recorded runs and of risk requests: load what a renderer needs, render it.

The renderers (:mod:`serve_app.reports`) are pure: they take plain dicts. This service gives
them a run of the registry as a dict plus what the registry does not keep:

* a backtest: the closes of the run's window (``results.used.data``: ``first_ts_unix`` ..
  ``last_ts_unix``), read from the candle store, for buy-and-hold and the price chart;
* a walk-forward or a simulation: nothing more (the record holds everything drawn);
* a risk report: the report is not a stored run (it is a cheap, deterministic read of stored
  candles, recorded nowhere): :func:`risk_report` computes it from the request, with the
  correlation matrix of the same coins on the same window, and renders it directly.

Errors are the domain errors of ``storage.errors``: an unknown run is a ``NotFoundError``; a
run still queued or running, or one that failed or was cancelled, a ``ConflictError``; a run
of a kind the route does not draw (or with nothing to draw) a ``ConfigurationError``; an
unknown chart a ``NotFoundError`` listing the charts.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from sqlalchemy.orm import Session

from serve_app import reports
from serve_app.reports.page import Report
from serve_app.services import risk
from serve_app.services.requests.risk import RiskReportRequest
from serve_app.services.runs import get_run
from serve_app.settings import Settings
from storage.candle_reads import read_candle_columns
from storage.errors import (
    ConfigurationError,
    ConflictError,
    InsufficientDataError,
    NotFoundError,
)
from storage.intervals import INTERVAL_SECONDS
from storage.runs import RunRecord

log = logging.getLogger(__name__)
_ORJSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

#: run kinds that have a report, and what each route draws
RUN_REPORT_KINDS = ("backtest", "walkforward", "simulation")
BACKTEST_KINDS = ("backtest", "walkforward")
SIMULATION_KINDS = ("simulation",)
ChartFormat = Literal["png", "svg"]
FORMATS: tuple[str, ...] = ("png", "svg")
MIN_WIDTH, MAX_WIDTH = 300, 2400
MIN_SCALE, MAX_SCALE = 0.5, 4.0


@dataclass(frozen=True)
class Rendered:
    """A rendered report or chart: the bytes, their media type and a file name to save as."""

    content: bytes
    media_type: str
    filename: str


# ------------------------------------------------------------------------------- loading
def _check_drawable(run: RunRecord, kinds: Sequence[str], where: str) -> None:
    if run.kind not in RUN_REPORT_KINDS:
        raise ConfigurationError(
            f"run {run.id} is a {run.kind} run, which has no report; reports are drawn for "
            f"{', '.join(RUN_REPORT_KINDS)} runs (GET /runs/{run.id} has its results as JSON)",
            code="no_report_for_kind",
            parameter="run_id",
            kind=run.kind,
        )
    if run.kind not in kinds:
        raise ConfigurationError(
            f"run {run.id} is a {run.kind} run; {where} draws {' and '.join(kinds)} runs: "
            f"use GET /runs/{run.id}/report, which draws any kind",
            code="wrong_run_kind",
            parameter="run_id",
            kind=run.kind,
        )
    if run.status in ("queued", "running"):
        progress = run.progress or {}
        done = f" ({progress.get('done')}/{progress.get('total')} {progress.get('unit', '')})"
        raise ConflictError(
            f"run {run.id} is still {run.status}{done if progress else ''}; its report is "
            f"ready once it has succeeded (poll GET /runs/{run.id})",
            code="run_not_finished",
            parameter="run_id",
            status=run.status,
        )
    if run.status != "succeeded":
        raise ConflictError(
            f"run {run.id} {run.status}"
            + (f" ({run.error})" if run.error else "")
            + "; only a succeeded run has a report",
            code="run_not_succeeded",
            parameter="run_id",
            status=run.status,
        )


def window_prices(session: Session, run: RunRecord) -> dict[str, list[Any]] | None:
    """The closes of a backtest's window from the candle store (``{"ts", "close"}``), or None
    when the record does not say its window or the store has no candles there any more."""
    used = (run.results or {}).get("used") if isinstance(run.results, dict) else None
    data = (used or {}).get("data") or {}
    first, last = data.get("first_ts_unix"), data.get("last_ts_unix")
    if run.coin is None or run.interval not in INTERVAL_SECONDS or first is None or last is None:
        return None
    bars = (int(last) - int(first)) // INTERVAL_SECONDS[str(run.interval)] + 1
    columns = read_candle_columns(
        session, run.coin, str(run.interval), start=int(first), end=int(last), limit=max(1, bars)
    )
    if not len(columns.ts):
        return None
    return {"ts": columns.ts.tolist(), "close": columns.close.tolist()}


def run_report(
    session: Session, run_id: str, kinds: Sequence[str] = RUN_REPORT_KINDS, where: str = ""
) -> Report:
    """The :class:`Report` of a succeeded run of one of ``kinds`` (``where`` names the route
    in the error for another kind)."""
    run = get_run(session, run_id)
    _check_drawable(run, kinds, where or f"this route ({', '.join(kinds)})")
    record = dataclasses.asdict(run)
    extra: dict[str, Any] = {}
    if run.kind == "backtest":
        extra["prices"] = window_prices(session, run)
    try:
        return reports.build_report(run.kind, record, **extra)
    except ValueError as exc:  # a record without its equity curve or result
        raise ConfigurationError(
            f"run {run_id} cannot be drawn: {exc}", code="nothing_to_draw", parameter="run_id"
        ) from None


def _name(run_id: str, kind: str, suffix: str) -> str:
    safe = "".join(c for c in run_id if c.isalnum() or c in "-_")[:64]
    return f"squall-{kind}-{safe}{suffix}"


def run_html(
    session: Session, run_id: str, kinds: Sequence[str] = RUN_REPORT_KINDS, where: str = ""
) -> Rendered:
    """The self-contained HTML report of a run."""
    report = run_report(session, run_id, kinds, where)
    return Rendered(
        report.html().encode("utf-8"),
        "text/html; charset=utf-8",
        _name(run_id, report.kind, ".html"),
    )


def chart(
    report: Report,
    name: str,
    fmt: str,
    *,
    width: int = 860,
    scale: float = 2.0,
    label: str = "report",
) -> Rendered:
    """One chart of ``report`` as PNG or SVG (rendered without a browser)."""
    if fmt not in FORMATS:
        raise ConfigurationError(
            f"unknown chart format {fmt!r}; use png or svg",
            code="unknown_format",
            parameter="format",
        )
    if name not in report.charts:
        raise NotFoundError(
            f"no chart {name!r} in this {report.kind} report; its charts: "
            + ", ".join(report.charts),
            code="unknown_chart",
            parameter="name",
            charts=report.charts,
        )
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ConfigurationError(
            f"width must be {MIN_WIDTH} to {MAX_WIDTH} pixels, got {width}",
            code="invalid_parameter",
            parameter="width",
        )
    if fmt == "svg":
        svg = reports.chart_svg(report, name, width=width)
        return Rendered(svg.encode("utf-8"), "image/svg+xml", f"{label}-{name}.svg")
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise ConfigurationError(
            f"scale must be {MIN_SCALE:g} to {MAX_SCALE:g}, got {scale:g}",
            code="invalid_parameter",
            parameter="scale",
        )
    png = reports.chart_png(report, name, width=width, scale=scale)
    return Rendered(png, "image/png", f"{label}-{name}.png")


def run_chart(
    session: Session, run_id: str, name: str, fmt: str, *, width: int = 860, scale: float = 2.0
) -> Rendered:
    """Chart ``name`` of a run's report as PNG or SVG."""
    report = run_report(session, run_id)
    label = _name(run_id, report.kind, "")
    return chart(report, name, fmt, width=width, scale=scale, label=label)


# ---------------------------------------------------------------------------------- risk
def plain(body: dict[str, Any]) -> dict[str, Any]:
    """A service's answer as the HTTP body it becomes (NumPy arrays as lists, NaN as null):
    what the renderers take."""
    out: dict[str, Any] = orjson.loads(orjson.dumps(body, option=_ORJSON))
    return out


def risk_report(session: Session, settings: Settings, body: RiskReportRequest) -> Report:
    """The risk report of a request (as ``POST /risk/report`` computes it), with the
    correlation matrix of the same coins over the same window when there are two or more."""
    computed = plain(risk.report(session, settings, body))
    labels = [str(s["label"]) for s in computed["series"]]
    correlation = None
    if body.coins is not None and len(labels) >= 2:
        query = risk.CorrelationQuery(
            coins=",".join(labels),
            interval=computed["interval"],
            window=body.window,
            start=body.start,
            end=body.end,
        )
        try:
            correlation = plain(risk.correlation(session, settings, query))
        except InsufficientDataError as exc:  # the page says there is no heatmap
            log.info("risk report without correlation: %s", exc)
    try:
        return reports.build_report("risk", computed, correlation=correlation)
    except ValueError as exc:
        raise ConfigurationError(f"the risk report cannot be drawn: {exc}") from None


def risk_html(session: Session, settings: Settings, body: RiskReportRequest) -> Rendered:
    """The self-contained HTML page of a risk report."""
    report = risk_report(session, settings, body)
    return Rendered(report.html().encode("utf-8"), "text/html; charset=utf-8", "squall-risk.html")
