"""Reports you can look at: one self-contained HTML page per run, and its charts as images.

* ``GET /backtest/runs/{id}/report`` (backtest and walk-forward runs),
  ``GET /risk/simulations/{id}/report`` (simulations), ``GET /runs/{id}/report`` (any kind
  with a report): ``text/html``, every asset inlined (no request leaves the page);
* ``GET /runs/{id}/charts/{name}.png`` and ``.svg``: one chart, rendered on the server from the
  same spec and data as the page (the chart names are listed in the 404 of an unknown one);
* ``POST /risk/report/html``: the body of ``POST /risk/report``, answered as the risk report's
  page (with the correlation heatmap of the same coins). Risk reports are not stored runs:
  the page is computed from the request and rendered directly.

Thin: :mod:`serve_app.services.reports` loads and renders; errors are the domain errors
(404 unknown run or chart, 409 a run not finished or not succeeded, 422 a kind without a
report). ``?download=true`` adds ``Content-Disposition: attachment`` with a file name.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from serve_app.api.deps import SessionDep, SettingsDep
from serve_app.api.guards import COSTLY_RESPONSES, Costly
from serve_app.api.runs import RunId
from serve_app.api.schemas.common import ErrorBody
from serve_app.services import reports as service
from serve_app.services.requests.risk import RiskReportRequest

router = APIRouter(tags=["reports"])

_RUN_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no run with that id (or no chart of that name)"},
    409: {
        "model": ErrorBody,
        "description": "run_not_finished (still queued or running: poll GET /runs/{id}) or "
        "run_not_succeeded (it failed or was cancelled)",
    },
    422: {
        "model": ErrorBody,
        "description": "wrong_run_kind / no_report_for_kind (sweeps and feature builds have no "
        "report) / nothing_to_draw, or a parameter out of range",
    },
}
# response_class=Response: the 200 is declared as text/html below and the errors stay JSON
# (HTMLResponse would declare the error bodies as text/html too)
_HTML = {
    "content": {"text/html": {}},
    "description": "the report: one HTML document with every asset inlined",
}
Download = Annotated[
    bool, Query(description="send Content-Disposition: attachment (save as a file)")
]
Width = Annotated[
    int,
    Query(ge=service.MIN_WIDTH, le=service.MAX_WIDTH, description="chart width in pixels"),
]
Scale = Annotated[
    float,
    Query(
        ge=service.MIN_SCALE, le=service.MAX_SCALE, description="pixel ratio (2: sharp on HiDPI)"
    ),
]
ChartName = Annotated[
    str, Path(max_length=64, pattern=r"^[a-z0-9_]+$", description="chart name, e.g. equity")
]


def _send(rendered: service.Rendered, download: bool) -> Response:
    headers = {"Cache-Control": "no-cache"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{rendered.filename}"'
    return Response(rendered.content, media_type=rendered.media_type, headers=headers)


@router.get(
    "/backtest/runs/{run_id}/report",
    response_class=Response,
    summary="HTML report of a backtest or walk-forward run",
    responses={200: _HTML, **_RUN_ERRORS, **COSTLY_RESPONSES},
    dependencies=[Costly],
)
def backtest_report(session: SessionDep, run_id: RunId, download: Download = False) -> Response:
    """Equity vs buy-and-hold, drawdown, trades on price, monthly returns, rolling Sharpe and
    volatility, metrics, regimes and trades (walk-forward: folds, IS vs OOS, decay)."""
    where = "GET /backtest/runs/{id}/report"
    return _send(service.run_html(session, run_id, service.BACKTEST_KINDS, where), download)


@router.get(
    "/risk/simulations/{run_id}/report",
    response_class=Response,
    summary="HTML report of a stress simulation",
    responses={200: _HTML, **_RUN_ERRORS, **COSTLY_RESPONSES},
    dependencies=[Costly],
)
def simulation_report(session: SessionDep, run_id: RunId, download: Download = False) -> Response:
    """The equity fan, terminal-return and max-drawdown distributions with VaR/ES, ruin and
    liquidation probabilities, time under water."""
    where = "GET /risk/simulations/{id}/report"
    return _send(service.run_html(session, run_id, service.SIMULATION_KINDS, where), download)


@router.get(
    "/runs/{run_id}/report",
    response_class=Response,
    summary="HTML report of any run that has one (backtest, walk-forward, simulation)",
    responses={200: _HTML, **_RUN_ERRORS, **COSTLY_RESPONSES},
    dependencies=[Costly],
)
def any_report(session: SessionDep, run_id: RunId, download: Download = False) -> Response:
    return _send(service.run_html(session, run_id), download)


@router.get(
    "/runs/{run_id}/charts/{name}.png",
    response_class=Response,
    summary="One chart of a run's report as PNG",
    responses={
        200: {"content": {"image/png": {}}, "description": "the chart, rendered on the server"},
        **_RUN_ERRORS,
        **COSTLY_RESPONSES,
    },
    dependencies=[Costly],
)
def chart_png(
    session: SessionDep,
    run_id: RunId,
    name: ChartName,
    width: Width = 860,
    scale: Scale = 2.0,
    download: Download = False,
) -> Response:
    """The same spec and data as the page's chart ``name`` (e.g. ``equity``, ``drawdown``,
    ``monthly``, ``fan``), drawn without a browser."""
    return _send(
        service.run_chart(session, run_id, name, "png", width=width, scale=scale), download
    )


@router.get(
    "/runs/{run_id}/charts/{name}.svg",
    response_class=Response,
    summary="One chart of a run's report as SVG",
    responses={
        200: {"content": {"image/svg+xml": {}}, "description": "the chart as an SVG document"},
        **_RUN_ERRORS,
        **COSTLY_RESPONSES,
    },
    dependencies=[Costly],
)
def chart_svg(
    session: SessionDep,
    run_id: RunId,
    name: ChartName,
    width: Width = 860,
    download: Download = False,
) -> Response:
    return _send(service.run_chart(session, run_id, name, "svg", width=width), download)


@router.post(
    "/risk/report/html",
    response_class=Response,
    summary="The risk report of coins or a run, as an HTML page",
    responses={
        200: _HTML,
        404: {"model": ErrorBody, "description": "unknown coin or run id"},
        422: {"model": ErrorBody, "description": "as POST /risk/report"},
        **COSTLY_RESPONSES,
    },
    dependencies=[Costly],
)
def risk_report_html(
    body: RiskReportRequest, session: SessionDep, settings: SettingsDep, download: Download = False
) -> Response:
    """The body of ``POST /risk/report``; the page draws the correlation heatmap of the coins
    (same window), the VaR/ES contributions of the weighted portfolio and each series' VaR
    and ES by method. Computed from the request: risk reports are not stored runs."""
    return _send(service.risk_html(session, settings, body), download)
