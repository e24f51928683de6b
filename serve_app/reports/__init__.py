"""Self-contained HTML reports and chart images of recorded runs.

Pure rendering: each function takes the plain dicts the services already produce (a run
registry record as a dict, or an HTTP response body) and returns a string or bytes. Nothing
here reads a database, starts Ray, or imports the web layer; callers (routes, the CLI) load
the record and pass it in.

* :func:`render_backtest` (record [, prices]), :func:`render_walkforward` (record),
  :func:`render_simulation` (simulate body or record), :func:`render_risk` (risk report
  body [, correlation body]) -> one HTML document with every asset inlined;
* :func:`build_report` -> the :class:`Report` (its ``charts`` list the chart names), and
  :func:`chart_svg` / :func:`chart_png` to export one of its charts.

Charts are Vega-Lite specs drawn by the Vega bundle that ``vl-convert-python`` ships
(inlined in each page, ~0.9 MB), which also renders PNG/SVG server-side. Definitions of the
derived series (downsampling, monthly returns, rolling statistics) are in
:mod:`serve_app.reports.series`; the choices are explained in ``docs/reports.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serve_app.reports.backtest import build_backtest
from serve_app.reports.export import chart_png, chart_svg
from serve_app.reports.page import Report
from serve_app.reports.risk import build_risk
from serve_app.reports.simulation import build_simulation
from serve_app.reports.walkforward import build_walkforward

KINDS = ("backtest", "walkforward", "simulation", "risk")


def render_backtest(record: Mapping[str, Any], prices: Mapping[str, Any] | None = None) -> str:
    """HTML report of a backtest record; ``prices`` (``{"ts", "close"}``) adds buy-and-hold
    and the price line under the trade markers."""
    return build_backtest(record, prices).html()


def render_walkforward(record: Mapping[str, Any]) -> str:
    """HTML report of a walk-forward record."""
    return build_walkforward(record).html()


def render_simulation(body: Mapping[str, Any]) -> str:
    """HTML report of a simulation (the ``/risk/simulate`` body or the registry record)."""
    return build_simulation(body).html()


def render_risk(report: Mapping[str, Any], correlation: Mapping[str, Any] | None = None) -> str:
    """HTML report of a ``/risk/report`` body, with the ``/risk/correlation`` body if given."""
    return build_risk(report, correlation).html()


def build_report(kind: str, data: Mapping[str, Any], **extra: Any) -> Report:
    """The :class:`Report` of ``kind`` (one of ``KINDS``) for ``data``; ``extra`` passes
    ``prices`` (backtest) or ``correlation`` (risk)."""
    if kind == "backtest":
        return build_backtest(data, extra.get("prices"))
    if kind == "walkforward":
        return build_walkforward(data)
    if kind == "simulation":
        return build_simulation(data)
    if kind == "risk":
        return build_risk(data, extra.get("correlation"))
    raise ValueError(f"unknown report kind {kind!r}; one of {', '.join(KINDS)}")


__all__ = [
    "KINDS",
    "Report",
    "build_backtest",
    "build_report",
    "build_risk",
    "build_simulation",
    "build_walkforward",
    "chart_png",
    "chart_svg",
    "render_backtest",
    "render_risk",
    "render_simulation",
    "render_walkforward",
]
