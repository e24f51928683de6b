"""serve_app.reports without a browser: the derived series against NumPy / pandas
references, and what each page embeds against the run it was made from.

Inputs are real runs (``report_inputs.py``: a 5-year hourly SOL backtest, a daily BTC
walk-forward, a 1M-path simulation and a three-coin risk report, all through the services on
SQLite); expected numbers come from those inputs, the candle files or pandas, never from
the renderer's own helpers.
"""

from __future__ import annotations

import ast
import copy
import itertools
import json
import math
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from serve_app import reports
from serve_app.reports import series as sr
from serve_app.reports.page import javascript_bundle
from tests.serve_app.report_inputs import Built

ROOT = Path(__file__).resolve().parents[2]
MAX_HTML = 5 * 1024 * 1024


# ---------------------------------------------------------------------------------- helpers
class Cells(HTMLParser):
    """Every element with ``data-key``: its text and ``data-value``, by key (in order)."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, list[tuple[str, str | None]]] = {}
        self._open: list[tuple[str, str | None, list[str]]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if "data-key" in a:
            self._open.append((str(a["data-key"]), a.get("data-value"), []))

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][2].append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag in ("td", "div", "th"):
            key, value, text = self._open.pop()
            self.cells.setdefault(key, []).append(("".join(text), value))


def parse(html: str) -> tuple[dict[str, Any], Cells]:
    m = re.search(r'<script type="application/json" id="squall-report">(.*?)</script>', html, re.S)
    assert m, "the page embeds its data"
    cells = Cells()
    cells.feed(html)
    return json.loads(m.group(1)), cells


def pct(v: float, digits: int = 2) -> str:
    """The format a reader sees: ``-0.1234`` -> ``−12.34%`` (typographic minus)."""
    return f"{v * 100:.{digits}f}%".replace("-", "\u2212")


def assert_offline(html: str) -> None:
    """No external resource: no src/href to another origin, no CSS import or url()."""
    parser = Cells()
    parser.feed(html)
    for tag, attrs in parser.tags:
        if tag == "script":
            assert "src" not in attrs, "scripts are inlined"
        for attr in ("src", "href"):
            value = attrs.get(attr)
            assert value is None or value == "data:,", f"<{tag} {attr}={value!r}>"
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert styles and not any("@import" in s or "url(" in s for s in styles)
    assert len(html.encode()) < MAX_HTML


# ------------------------------------------------------------------------ derived series
def m4_reference(values: np.ndarray, buckets: int) -> np.ndarray:
    """A plain loop: per bucket, its first and last index and the first argmin / argmax."""
    n = len(values)
    keep: set[int] = set()
    for k in range(buckets):
        lo, hi = (k * n) // buckets, ((k + 1) * n) // buckets
        part = values[lo:hi]
        keep |= {lo, hi - 1, lo + int(np.argmin(part)), lo + int(np.argmax(part))}
    return np.array(sorted(keep))


def test_m4_equals_a_loop_reference() -> None:
    rng = np.random.default_rng(4)
    for n, buckets in ((10_007, 37), (5_000, 250), (1_001, 250), (999_983, 500)):
        x = np.cumsum(rng.standard_t(3, n))
        x[n // 3] = x[n // 3 + 1]  # a tie: the first occurrence is kept
        assert np.array_equal(sr.m4_indices(x, buckets), m4_reference(x, buckets))


def test_m4_keeps_short_series_whole_and_ignores_nan() -> None:
    x = np.arange(10.0)
    assert np.array_equal(sr.m4_indices(x, 5), np.arange(10))
    y = np.sin(np.arange(1000) / 7.0)
    y[100:120] = np.nan
    idx = sr.m4_indices(y, 10)
    finite = np.where(np.isnan(y), 0.0, y)
    assert np.nanargmax(y) in idx and np.nanargmin(y) in idx
    assert np.array_equal(m4_reference(finite, 10)[[0, -1]], idx[[0, -1]])


@pytest.mark.realdata
def test_downsampled_curve_keeps_trough_extremes_and_last_point(report_inputs: Built) -> None:
    eq = np.asarray(report_inputs.backtest["equity"]["equity"], float)
    dd = np.asarray(report_inputs.backtest["equity"]["drawdown"], float)
    idx = sr.downsample(eq, dd, points=1000)
    assert len(eq) == 43_810 and len(idx) <= 2 * 1000
    assert idx[-1] == len(eq) - 1 and idx[0] == 0
    assert int(np.argmin(dd)) in idx and int(np.argmax(eq)) in idx and int(np.argmin(eq)) in idx
    # every bucket's extremes are drawn: the drawn envelope equals the full one per bucket
    edges = (np.arange(251) * len(eq)) // 250
    for lo, hi in itertools.pairwise(edges):
        inside = idx[(idx >= lo) & (idx < hi)]
        assert eq[inside].min() == eq[lo:hi].min() and eq[inside].max() == eq[lo:hi].max()
        assert dd[inside].min() == dd[lo:hi].min()


def test_monthly_returns_by_hand() -> None:
    day = 86_400
    jan31, feb1, feb28, mar1 = 1_706_659_200, 1_706_745_600, 1_709_078_400, 1_709_251_200
    ts = np.array([jan31 - day, jan31, feb1, feb28, mar1])  # Jan 30, Jan 31, Feb 1, 28, Mar 1
    eq = np.array([100.0, 110.0, 99.0, 121.0, 60.5])
    m = sr.monthly_returns(ts, eq, base=100.0)
    assert m.year.tolist() == [2024, 2024, 2024] and m.month.tolist() == [1, 2, 3]
    assert np.allclose(m.ret, [0.10, 0.10, -0.5])  # 110/100, 121/110, 60.5/121


@pytest.mark.realdata
def test_monthly_returns_equal_pandas_on_the_backtest(report_inputs: Built) -> None:
    eq_rec = report_inputs.backtest["equity"]
    ts = np.asarray(eq_rec["ts"], np.int64)
    eq = np.asarray(eq_rec["equity"], float)
    s = pd.Series(eq, index=pd.to_datetime(ts, unit="s", utc=True))
    r = s.pct_change().fillna(0.0)
    ref = (1.0 + r).groupby([s.index.year, s.index.month]).prod() - 1.0
    m = sr.monthly_returns(ts, eq, base=float(eq[0]))
    assert list(zip(m.year.tolist(), m.month.tolist(), strict=True)) == list(ref.index)
    assert len(ref) == 60  # 2021-01 .. 2025-12
    np.testing.assert_allclose(m.ret, ref.to_numpy(), rtol=1e-9, atol=1e-12)
    years, yearly = sr.yearly_from_monthly(m)
    ref_y = (1.0 + r).groupby(s.index.year).prod() - 1.0
    np.testing.assert_allclose(yearly, ref_y.to_numpy(), rtol=1e-9)
    assert years.tolist() == list(ref_y.index)


@pytest.mark.realdata
def test_rolling_stats_equal_pandas_rolling(report_inputs: Built) -> None:
    eq = np.asarray(report_inputs.backtest["equity"]["equity"], float)
    r = eq[1:] / eq[:-1] - 1.0
    ppy = 8760.0
    w = sr.rolling_window(ppy, r.size)
    assert w == 2160  # 90 days of hourly bars
    got = sr.rolling_stats(r, w, ppy)
    s = pd.Series(r).rolling(w)
    ref_vol = s.std(ddof=1).to_numpy() * math.sqrt(ppy)
    ref_sharpe = (s.mean() / s.std(ddof=1)).to_numpy() * math.sqrt(ppy)
    assert np.array_equal(np.isnan(got.volatility), np.isnan(ref_vol))
    np.testing.assert_allclose(got.volatility, ref_vol, rtol=1e-8, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got.sharpe, ref_sharpe, rtol=1e-7, atol=1e-9, equal_nan=True)


def test_rolling_window_rule_and_flat_windows() -> None:
    assert sr.rolling_window(365.0, 3000) == 90
    assert sr.rolling_window(2190.0, 100_000) == 540  # 4h bars
    assert sr.rolling_window(365.0, 200) == 50  # a quarter of a short run
    assert sr.rolling_window(365.0, 12) == 10  # at least 10
    r = np.r_[np.random.default_rng(1).normal(0, 0.01, 40), np.zeros(30)]
    got = sr.rolling_stats(r, 10, 365.0)
    assert np.all(got.volatility[-20:] == 0.0) and np.all(np.isnan(got.sharpe[-20:]))
    assert np.isnan(got.volatility[:9]).all() and np.isfinite(got.volatility[9:]).all()


def test_buy_and_hold_and_drawdown_by_hand() -> None:
    ts = np.array([10, 20, 30, 40])
    bh = sr.buy_and_hold(ts, np.array([40, 10, 20]), np.array([8.0, 2.0, 3.0]), 100.0)
    assert bh[[0, 1, 3]].tolist() == [100.0, 150.0, 400.0] and math.isnan(bh[2])  # no bar at 30
    unknown_start = sr.buy_and_hold(ts, np.array([20, 30]), np.ones(2), 1.0)
    assert np.isnan(unknown_start).all()
    dd = sr.drawdown(np.array([0.9, 1.2, 0.6, 1.5]), anchor=1.0)
    np.testing.assert_allclose(dd, [-0.1, 0.0, -0.5, 0.0])


# ------------------------------------------------------------------------------- reports
@pytest.mark.realdata
def test_backtest_page_embeds_the_runs_numbers(report_inputs: Built, shared_data: Path) -> None:
    rec, prices = report_inputs.backtest, report_inputs.prices
    javascript_bundle()  # made once per process (~2 s): not part of a page's cost
    started = time.perf_counter()
    html = reports.render_backtest(rec, prices)
    elapsed = time.perf_counter() - started
    assert_offline(html)
    payload, cells = parse(html)
    s = rec["summary"]
    eq = rec["equity"]
    curve = payload["datasets"]["curve"]
    # the last point drawn is the run's last equity point, at its time
    assert curve["t"][-1] == eq["ts"][-1] * 1000 and curve["equity"][-1] == eq["equity"][-1]
    assert payload["datasets"]["equity_last"]["label"] == [f"{eq['equity'][-1]:,.2f}"]
    # the drawn drawdown reaches the metric, and the metrics table shows it exactly
    assert min(curve["drawdown"]) == pytest.approx(s["max_drawdown"], rel=1e-12)
    text, value = cells.cells["max_drawdown"][-1]
    assert float(str(value)) == s["max_drawdown"] and text == pct(s["max_drawdown"])
    assert payload["datasets"]["dd_trough"]["label"][0].startswith(
        f"max drawdown {pct(s['max_drawdown'])}"
    )
    assert float(str(cells.cells["final_equity"][0][1])) == s["final_equity"]
    # buy and hold from the candle file itself: capital x close / first close
    raw = pd.read_csv(shared_data / "binance_spot_SOLUSDT_1h_2020-2026.csv")
    close = raw.set_index(pd.to_datetime(raw["timestamp"], utc=True))["close"]
    first = close.loc["2021-01-01 00:00:00+00:00"]
    last = close.loc["2025-12-31 23:00:00+00:00"]
    assert curve["benchmark"][-1] == pytest.approx(s["initial_capital"] * last / first, rel=1e-12)
    # one trade marker per trade, at its entry price
    entries = payload["datasets"]["trade_entries"]
    assert len(entries["t"]) == len(rec["trades"])
    assert entries["price"][0] == rec["trades"][0]["entry_price"]
    # per-regime rows with the sample-size flag
    flags = [t for t, _ in cells.cells["sample"]]
    expected = ["ok" if r["sufficient"] else "small sample" for r in rec["results"]["regime_stats"]]
    assert flags == expected and "small sample" in flags
    # budgets: under 5 MB (asserted above) and quick to build
    assert elapsed < 2.0, f"rendering took {elapsed:.2f} s"
    assert set(payload["specs"]) == {
        "equity",
        "drawdown",
        "price",
        "monthly",
        "rolling_sharpe",
        "rolling_vol",
    }


@pytest.mark.realdata
def test_a_thinned_curve_is_annualised_per_stored_point(report_inputs: Built) -> None:
    """Runs over 100k bars are stored every ``stride``-th bar (backtests.stored_equity)."""
    rec = copy.deepcopy(report_inputs.backtest)
    eq = rec["equity"]
    keep = list(range(0, len(eq["ts"]), 10))
    if keep[-1] != len(eq["ts"]) - 1:
        keep.append(len(eq["ts"]) - 1)
    for col in ("ts", "equity", "drawdown", "position", "exposure"):
        eq[col] = [eq[col][i] for i in keep]
    eq["stride"] = 10
    html = reports.render_backtest(rec)
    assert "every 10th bar" in html
    # 90 days of 10-hour steps: 876 periods per year -> round(876 x 90 / 365) = 216
    assert "trailing 216 returns" in html
    payload, _ = parse(html)
    assert payload["datasets"]["curve"]["equity"][-1] == eq["equity"][-1]


@pytest.mark.realdata
def test_backtest_without_prices_says_what_is_missing(report_inputs: Built) -> None:
    html = reports.render_backtest(report_inputs.backtest)
    payload, _ = parse(html)
    assert "benchmark" not in payload["datasets"]["curve"] and "price" not in payload["datasets"]
    assert "without the run&#x27;s prices" in html or "without the run's prices" in html


@pytest.mark.realdata
def test_walkforward_page_matches_the_run(report_inputs: Built) -> None:
    rec = report_inputs.walkforward
    html = reports.render_walkforward(rec)
    assert_offline(html)
    payload, cells = parse(html)
    curve = payload["datasets"]["curve"]
    assert curve["equity"][-1] == rec["equity"]["equity"][-1]
    # drawdown anchored at the stitched curve's start of 1, as the OOS metrics are
    assert min(curve["drawdown"]) == pytest.approx(rec["summary"]["max_drawdown"], rel=1e-12)
    folds = rec["results"]["folds"]
    assert [v for v, _ in cells.cells["fold"]][: len(folds)] == [str(f["index"]) for f in folds]
    got = [float(str(v)) for _, v in cells.cells["oos_sharpe"]]
    assert got == [f["oos_metrics"]["sharpe"] for f in folds]
    assert payload["datasets"]["decay"]["oos"] == rec["results"]["decay"]["oos"]
    assert len(payload["datasets"]["fold_windows"]["start"]) == (len(folds) + 1) // 2
    fading = "yes" if rec["results"]["decay"]["fading"] else "no"
    assert cells.cells["fading"][0][0] == fading


@pytest.mark.realdata
def test_simulation_page_matches_the_result(report_inputs: Built) -> None:
    body = report_inputs.simulation
    res = body["result"]
    assert res["paths"] == 1_000_000
    html = reports.render_simulation(body)
    assert_offline(html)
    assert len(html.encode()) < 1.5 * 1024 * 1024  # independent of the path count
    payload, cells = parse(html)
    fan = payload["datasets"]["fan"]
    assert fan["step"][0] == 0 and fan["p50"][0] == 1.0
    assert fan["p50"][-1] == res["equity_fan"][-1]["p50"]
    assert fan["step"][1:] == [r["step"] for r in res["equity_fan"]]
    marks = payload["datasets"]["risk_marks"]
    hr = res["horizon_return"]
    want = {
        f"VaR 99% {pct(hr['var_99'])}",
        f"ES 99% {pct(hr['es_99'])}",
        f"VaR 95% {pct(hr['var_95'])}",
        f"ES 95% {pct(hr['es_95'])}",
    }
    assert set(marks["label"]) == want
    assert float(str(cells.cells["ruin_probability"][0][1])) == res["ruin_probability"]
    assert float(str(cells.cells["var_99"][-1][1])) == hr["var_99"]
    assert float(str(cells.cells["mdd_p50"][0][1])) == res["max_drawdown"]["p50"]
    # the registry record renders the same page
    record = {
        "id": body["run_id"],
        "kind": "simulation",
        "results": {k: body[k] for k in ("result", "used", "timings")},
    }
    assert parse(reports.render_simulation(record))[0] == payload


@pytest.mark.realdata
def test_risk_page_matches_the_bodies(report_inputs: Built) -> None:
    body, corr = report_inputs.risk, report_inputs.correlation
    html = reports.render_risk(body, corr)
    assert_offline(html)
    payload, cells = parse(html)
    c = payload["datasets"]["correlation"]
    assert len(c["rho"]) == 9 and c["rho"][1] == corr["matrix"][0][1]
    assert c["label"][1] == f"{corr['matrix'][0][1]:.2f}"
    contrib = body["portfolio"]["contributions"]
    got = float(str(cells.cells["var_0.99_BTC"][0][1]))
    assert got == contrib[1]["var"]["BTC"]
    # Euler contributions sum to the portfolio's normal VaR (an identity of the method)
    total = float(str(cells.cells["var_0.99_sum"][0][1]))
    assert total == pytest.approx(body["portfolio"]["levels"][1]["var"]["normal"], rel=1e-9)
    hist = float(str(cells.cells["var_BTC_0.99_historical"][0][1]))
    assert hist == body["series"][0]["levels"][1]["var"]["historical"]
    without = reports.render_risk(body)
    assert "correlation" not in parse(without)[0]["specs"]


@pytest.mark.realdata
def test_text_from_the_record_is_escaped(report_inputs: Built) -> None:
    rec = copy.deepcopy(report_inputs.walkforward)
    rec["strategy"] = "</script><script>alert(1)</script>"
    rec["results"]["decay"]["rule"] = "<b>&"
    html = reports.render_walkforward(rec)
    assert "<script>alert(1)" not in html and "&lt;/script&gt;" in html
    parse(html)  # the embedded JSON still parses


@pytest.mark.realdata
def test_bad_inputs_get_clear_errors(report_inputs: Built) -> None:
    with pytest.raises(ValueError, match="no equity curve"):
        reports.render_backtest({"id": "x", "kind": "backtest", "status": "running"})
    with pytest.raises(ValueError, match="not a backtest"):
        reports.render_backtest(report_inputs.walkforward)
    with pytest.raises(ValueError, match="status 'running'"):
        reports.render_simulation({"run_id": "r", "status": "running", "progress": {}})
    with pytest.raises(ValueError, match="no series"):
        reports.render_risk({"series": []})
    with pytest.raises(ValueError, match="unknown report kind"):
        reports.build_report("sweep", {})


@pytest.mark.realdata
def test_charts_export_as_svg_and_png(report_inputs: Built) -> None:
    report = reports.build_report("backtest", report_inputs.backtest, prices=report_inputs.prices)
    assert report.charts == [
        "equity",
        "drawdown",
        "price",
        "monthly",
        "rolling_sharpe",
        "rolling_vol",
    ]
    svg = reports.chart_svg(report, "equity")
    assert svg.lstrip().startswith("<svg") and "http://" not in svg.replace(
        "http://www.w3.org/", ""
    )
    last = report_inputs.backtest["equity"]["equity"][-1]
    assert f">{last:,.2f}<" in svg  # the last point's label is drawn
    png = reports.chart_png(report, "monthly", scale=1.0)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    sim = reports.build_report("simulation", report_inputs.simulation)
    assert f"VaR 99% {pct(report_inputs.simulation['result']['horizon_return']['var_99'])}" in (
        reports.chart_svg(sim, "terminal")
    )
    with pytest.raises(KeyError, match="charts: "):
        reports.chart_svg(report, "nope")


def test_reports_import_no_web_layer_database_or_ray() -> None:
    forbidden = {"fastapi", "starlette", "sqlalchemy", "ray", "storage", "serve_app.api"}
    for path in sorted((ROOT / "serve_app" / "reports").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                hit = {f for f in forbidden if name == f or name.startswith(f + ".")}
                assert not hit, f"{path.name} imports {name}"
