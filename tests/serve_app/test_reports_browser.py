"""The report pages in headless Chromium (Debian's ``chromium``, driven by Playwright).

Each page is served from a loopback HTTP server; the test waits until every chart is drawn,
checks that the page requested nothing but itself, reads the numbers drawn (SVG text of the
charts, the data the Vega views hold, the tables) and compares them with the run's JSON,
and times a 5-year hourly backtest and a 1M-path simulation against the 2 s budget.
Skipped without Chromium, except under ``CI=true``, where a missing browser fails.
"""

from __future__ import annotations

import os
import re
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serve_app import reports
from tests.serve_app.report_browser import browser, chromium_path, open_report, serve
from tests.serve_app.report_inputs import Built

pytestmark = [pytest.mark.browser, pytest.mark.realdata]
RENDER_BUDGET_MS = 2_000
MAX_HTML = 5 * 1024 * 1024


def _missing() -> str | None:
    if chromium_path() is None:
        return "chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def pages(report_inputs: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _missing()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI runs the browser tests: {reason}")
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("report-pages")
    r = report_inputs
    html = {
        "backtest": reports.render_backtest(r.backtest, r.prices),
        "walkforward": reports.render_walkforward(r.walkforward),
        "simulation": reports.render_simulation(r.simulation),
        "risk": reports.render_risk(r.risk, r.correlation),
    }
    for name, text in html.items():
        (folder / f"{name}.html").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def site(pages: Path) -> Iterator[tuple[str, Any]]:
    with serve(pages) as origin, browser() as ctx:
        yield origin, ctx


def opened(site: tuple[str, Any], name: str) -> Any:
    origin, ctx = site
    page = open_report(ctx, f"{origin}/{name}.html")
    root = page.eval("document.documentElement.dataset.rendered")
    error = page.eval("document.documentElement.dataset.renderError || ''")
    assert root == "true", f"{name}: charts failed to render: {error}"
    assert page.console_errors == [], page.console_errors
    # nothing left the page: the only request is the page itself, from the local origin
    assert page.requests == [f"{origin}/{name}.html"], page.requests
    assert page.failed == []
    charts = page.eval(
        "Array.from(document.querySelectorAll('[data-chart]')).map(e => "
        "[e.dataset.chart, e.dataset.rendered || '', e.querySelectorAll('svg').length])"
    )
    assert charts and all(r == "true" and n >= 1 for _, r, n in charts), charts
    return page


def svg_texts(page: Any, chart: str) -> list[str]:
    return list(
        page.eval(
            "(c) => Array.from(document.querySelectorAll('#chart-' + c + ' svg text'))"
            ".map(t => t.textContent)",
            chart,
        )
    )


def view_data(page: Any, chart: str, dataset: str) -> list[dict[str, Any]]:
    return list(page.eval("([c, d]) => window.squallViews[c].data(d)", [chart, dataset]))


def cell(page: Any, key: str) -> tuple[str, float]:
    got = page.eval(
        "(k) => { const e = document.querySelector('[data-key=\"' + k + '\"]');"
        " return [e.textContent, e.dataset.value]; }",
        key,
    )
    return got[0], float(got[1])


def pct(v: float, digits: int = 2) -> str:
    return f"{v * 100:.{digits}f}%".replace("-", "\u2212")


def render_ms(site: tuple[str, Any], name: str, runs: int = 3) -> float:
    """Median time from navigation start until every chart is drawn, over fresh loads."""
    times = []
    for _ in range(runs):
        page = opened(site, name)
        times.append(float(page.eval("document.documentElement.dataset.renderTotalMs")))
        page.page.close()
    return statistics.median(times)


def test_backtest_page_draws_the_runs_numbers(site: tuple[str, Any], report_inputs: Built) -> None:
    rec = report_inputs.backtest
    page = opened(site, "backtest")
    last = rec["equity"]["equity"][-1]
    assert f"{last:,.2f}" in svg_texts(page, "equity")
    drawn = view_data(page, "equity", "curve")
    assert drawn[-1]["equity"] == last and drawn[-1]["t"] == rec["equity"]["ts"][-1] * 1000
    mdd = rec["summary"]["max_drawdown"]
    assert min(r["drawdown"] for r in view_data(page, "drawdown", "curve")) == pytest.approx(
        mdd, rel=1e-12
    )
    assert any(t.startswith(f"max drawdown {pct(mdd)}") for t in svg_texts(page, "drawdown"))
    text, value = cell(page, "max_drawdown")
    assert text == pct(mdd) and value == mdd
    # the monthly heatmap draws one labelled cell per month of the run (5 years)
    labels = [t for t in svg_texts(page, "monthly") if re.fullmatch("[+\u2212][0-9]+[.][0-9]", t)]
    assert len(labels) == 60
    page.page.close()


def test_walkforward_page_draws_the_runs_numbers(
    site: tuple[str, Any], report_inputs: Built
) -> None:
    rec = report_inputs.walkforward
    page = opened(site, "walkforward")
    last = rec["equity"]["equity"][-1]
    assert f"{last:,.2f}" in svg_texts(page, "equity")
    assert view_data(page, "equity", "curve")[-1]["equity"] == last
    folds = rec["results"]["folds"]
    drawn = view_data(page, "decay", "decay")
    assert [d["oos"] for d in drawn] == [f["oos_metrics"]["sharpe"] for f in folds]
    _, value = cell(page, "max_drawdown")
    assert value == rec["summary"]["max_drawdown"]
    page.page.close()


def test_simulation_page_draws_var_es_and_probabilities(
    site: tuple[str, Any], report_inputs: Built
) -> None:
    res = report_inputs.simulation["result"]
    page = opened(site, "simulation")
    hr = res["horizon_return"]
    texts = svg_texts(page, "terminal")
    for name, key in (
        ("VaR 99%", "var_99"),
        ("ES 99%", "es_99"),
        ("VaR 95%", "var_95"),
        ("ES 95%", "es_95"),
    ):
        assert f"{name} {pct(hr[key])}" in texts
    marks = {
        m["label"].split(" \u2212")[0]: m["value"]
        for m in view_data(page, "terminal", "risk_marks")
    }
    assert marks["VaR 99%"] == hr["var_99"] and marks["ES 95%"] == hr["es_95"]
    assert f"median {res['equity_fan'][-1]['p50']:,.2f}" in svg_texts(page, "fan")
    text, value = cell(page, "ruin_probability")
    assert value == res["ruin_probability"] and text == pct(res["ruin_probability"])
    _, value = cell(page, "liquidation_probability")
    assert value == res["liquidation_probability"]
    page.page.close()


def test_risk_page_draws_correlations_and_contributions(
    site: tuple[str, Any], report_inputs: Built
) -> None:
    corr, body = report_inputs.correlation, report_inputs.risk
    page = opened(site, "risk")
    texts = svg_texts(page, "correlation")
    m = corr["matrix"]
    for i in range(3):
        for j in range(3):
            assert f"{m[i][j]:.2f}" in texts
    drawn = view_data(page, "contributions", "contributions")
    want = body["portfolio"]["contributions"][0]["es"]["ETH"]
    assert [
        d["value"]
        for d in drawn
        if d["coin"] == "ETH" and d["measure"] == "ES" and d["level"] == "0.95"
    ] == [want]
    page.page.close()


def test_long_backtest_and_million_path_simulation_render_within_budget(
    site: tuple[str, Any], pages: Path, report_inputs: Built
) -> None:
    assert report_inputs.backtest["summary"]["bars"] > 43_000  # 5 years of hourly bars
    assert report_inputs.simulation["result"]["paths"] == 1_000_000
    for name in ("backtest", "simulation"):
        size = (pages / f"{name}.html").stat().st_size
        assert size < MAX_HTML, f"{name}: {size} bytes"
        ms = render_ms(site, name)
        assert ms < RENDER_BUDGET_MS, f"{name} took {ms:.0f} ms to render"
