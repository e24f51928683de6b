"""The dashboard (``/ui``) in headless Chromium against a real ``squall up``.

Every page renders without a console error and requests nothing outside the squall server;
the numbers it shows (the ``data-value`` beside each formatted number) are the API's JSON;
the run list is the registry's; two runs ticked compare side by side; a backtest and a
simulation launched from the form show their progress and then their report; a running
simulation is cancelled from its page. Skipped without Chromium, except under ``CI=true``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.serve_app.live_server import Platform
from tests.serve_app.report_browser import browser, chromium_path

pytestmark = [pytest.mark.browser, pytest.mark.ray, pytest.mark.realdata]
TIMEOUT_MS = 120_000


def _missing() -> str | None:
    if chromium_path() is None:
        return "chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


class Site:
    """The platform's origin, a browser, and every request the pages made."""

    def __init__(self, origin: str, ctx: Any) -> None:
        self.origin, self.ctx = origin, ctx
        self.http = httpx.Client(base_url=origin, timeout=300)

    def api(self, path: str, **params: Any) -> Any:
        r = self.http.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def open(self, route: str) -> Any:
        page = self.ctx.new_page()
        page.requests, page.errors = [], []
        page.on("request", lambda r: page.requests.append(r.url))
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.goto(f"{self.origin}/ui#/{route}")
        wait_ready(page, route.partition("?")[0].partition("/")[0])
        return page

    def check_clean(self, page: Any) -> None:
        assert page.errors == [], page.errors
        outside = [u for u in page.requests if not u.startswith(self.origin + "/")]
        assert outside == [], f"requests outside the squall server: {outside}"
        assert page.evaluate("document.documentElement.dataset.error || ''") == ""


def wait_ready(page: Any, view: str) -> None:
    page.wait_for_selector(
        f'html[data-view="{view}"][data-ready="true"]', state="attached", timeout=TIMEOUT_MS
    )


def values(page: Any, selector: str) -> dict[str, float]:
    """``data-key`` -> ``data-value`` of the elements under ``selector``."""
    pairs = page.evaluate(
        "(s) => Array.from(document.querySelectorAll(s + ' [data-key][data-value]'))"
        ".map(e => [e.dataset.key, e.dataset.value])",
        selector,
    )
    return {k: float(v) for k, v in pairs}


@pytest.fixture(scope="module")
def site(platform: Platform) -> Iterator[Site]:
    reason = _missing()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI runs the browser tests: {reason}")
        pytest.skip(reason)
    with browser() as ctx:
        s = Site(platform.base_url, ctx)
        for fast in (8, 16):  # two runs of its own to list and compare
            body = {
                "coin": "BTC",
                "interval": "1d",
                "strategy": "ema_cross",
                "params": {"fast": fast, "slow": 50},
            }
            r = s.http.post("/backtest/run", json=body)
            assert r.status_code == 200, r.text
        yield s
        s.http.close()


def test_data_page_shows_the_stored_series_coverage_and_freshness(site: Site) -> None:
    page = site.open("data")
    coins = site.api("/market/coins")
    gaps = {(r["coin"], r["interval"]): r for r in site.api("/market/gaps")["reports"]}
    for c in coins["coins"]:
        for s in c["series"]:
            row = f'#series-table tr[data-series="{c["coin"]} {s["interval"]}"]'
            shown = values(page, row)
            assert shown["count"] == s["count"]
            assert shown["missing"] == gaps[(c["coin"], s["interval"])]["missing"]
    stored = sum(len(c["series"]) for c in coins["coins"])
    assert values(page, ".tiles")["series"] == stored == 2
    assert page.get_attribute("#chart-coverage", "data-rendered") == "true"
    assert page.locator("#series-table").inner_text().count("stale") == stored  # 2026 files
    site.check_clean(page)
    page.close()


def test_ingestion_page_says_the_supervisor_is_off(site: Site) -> None:
    page = site.open("ingestion")
    assert site.api("/health")["ingestion"] is None
    assert "not running" in page.inner_text("main")
    assert "Ray CPUs free" in page.inner_text("main")  # squall up runs the API inside Ray
    site.check_clean(page)
    page.close()


def test_run_list_is_the_registrys_and_filters_by_kind(site: Site) -> None:
    page = site.open("runs")
    listed = site.api("/runs", limit=25)["runs"]
    shown = page.evaluate(
        "Array.from(document.querySelectorAll('#runs-table tbody tr')).map(r => r.dataset.run)"
    )
    assert shown == [r["run_id"] for r in listed]
    for run in listed[:5]:
        for key, value in values(page, f'tr[data-run="{run["run_id"]}"] td.metrics').items():
            assert value == run["metrics"][key], (run["run_id"], key)
    page.close()
    page = site.open("runs?kind=backtest&coin=BTC")
    want = site.api("/runs", kind="backtest", coin="BTC", limit=25)
    kinds = page.evaluate(
        "Array.from(document.querySelectorAll('#runs-table tbody tr')).map(r => r.dataset.kind)"
    )
    assert kinds == ["backtest"] * len(want["runs"])
    assert f"of {want['total']:,}" in page.inner_text("#runs-count")
    site.check_clean(page)
    page.close()


def test_two_ticked_runs_compare_side_by_side(site: Site) -> None:
    page = site.open("runs?kind=backtest")
    ids = page.evaluate(
        "Array.from(document.querySelectorAll('#runs-table tbody tr')).slice(0, 2)"
        ".map(r => r.dataset.run)"
    )
    for run_id in ids:
        page.check(f'tr[data-run="{run_id}"] input[type=checkbox]')
    page.click("#compare-selected")
    wait_ready(page, "compare")
    want = site.api("/backtest/compare", ids=",".join(ids), equity_points=2000)  # as the page
    shown = values(page, "#compare-table")
    for m in want["metrics"]:
        for run_id, v in zip(ids, m["values"], strict=True):
            if isinstance(v, float | int) and not isinstance(v, bool):
                assert shown[f"{m['metric']}:{run_id}"] == v
    assert page.get_attribute("#chart-compare", "data-rendered") == "true"
    drawn = page.evaluate("window.squallViews.compare.data('points').length")
    assert drawn == sum(v is not None for s in want["equity"]["series"].values() for v in s)
    site.check_clean(page)
    page.close()


def follow(page: Any, until: str, seconds: float = 240) -> list[tuple[int, int, str]]:
    """The progress the run page showed (done, total, status) until the status ``until``."""
    seen: list[tuple[int, int, str]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = page.evaluate(
            "() => { const p = document.querySelector('#run-progress .progress');"
            " const s = document.querySelector('[data-key=status]');"
            " return p && s ? [p.dataset.done, p.dataset.total, s.textContent] : null; }"
        )
        if state:
            done, total = (-1 if v is None else int(v) for v in state[:2])
            seen.append((done, total, str(state[2])))
            if state[2] == until:
                return seen
        time.sleep(0.1)
    raise AssertionError(f"the run never became {until}: {seen[-5:]}")


def report_frame(page: Any) -> Any:
    page.wait_for_selector("#run-report", timeout=TIMEOUT_MS)
    frame = page.frame_locator("#run-report")
    frame.locator("html[data-rendered]").wait_for(state="attached", timeout=TIMEOUT_MS)
    return page.frame(url=lambda u: "/report" in u)


def test_a_backtest_launched_from_the_form_shows_progress_then_its_report(site: Site) -> None:
    page = site.open("launch")
    page.select_option("#bt-coin", "BTC")
    page.select_option("#bt-interval", "1d")
    page.select_option("#bt-strategy", "ema_cross")
    page.fill('#bt-params input[name="param:fast"]', "15")
    page.fill('#bt-params input[name="param:slow"]', "45")
    page.click("#backtest-form button[type=submit]")
    wait_ready(page, "run")
    run_id = page.evaluate("decodeURIComponent(location.hash.split('/')[2])")
    seen = follow(page, "succeeded")
    assert seen[-1][:2] == (1, 1)
    frame = report_frame(page)
    assert frame.evaluate("document.documentElement.dataset.rendered") == "true"
    run = site.api(f"/runs/{run_id}", equity_points=100_000)
    sent = run["request"]
    assert sent["mode"] == "async" and sent["params"] == {**sent["params"], "fast": 15, "slow": 45}
    for key, value in values(page, "#run-metrics").items():
        assert value == run["metrics"][key], key
    drawn = frame.evaluate("window.squallViews.equity.data('curve')")
    assert drawn[-1]["equity"] == run["equity"]["equity"][-1]
    site.check_clean(page)
    page.close()


def test_a_simulation_launched_from_the_form_reports_its_paths(site: Site) -> None:
    page = site.open("launch")
    page.select_option("#sim-coin", "BTC")
    page.fill('#simulation-form input[name="paths"]', "3000000")
    page.fill('#simulation-form input[name="horizon"]', "365")
    page.click("#simulation-form button[type=submit]")
    wait_ready(page, "run")
    run_id = page.evaluate("decodeURIComponent(location.hash.split('/')[2])")
    seen = follow(page, "succeeded")
    assert seen[-1][:2] == (3_000_000, 3_000_000)
    assert {"queued", "running"} & {s for *_, s in seen}, seen  # it was followed while active
    done = [d for d, _, _ in seen]
    assert done == sorted(done)
    frame = report_frame(page)
    run = site.api(f"/runs/{run_id}")
    result = run["results"]["result"]
    assert frame.evaluate(
        "document.querySelector('[data-key=ruin_probability]').dataset.value"
    ) == repr(result["ruin_probability"])
    for key, value in values(page, "#run-metrics").items():
        assert value == run["metrics"][key], key
    site.check_clean(page)
    page.close()


def test_a_running_simulation_is_cancelled_from_its_page(site: Site) -> None:
    page = site.open("launch")
    page.fill('#simulation-form input[name="paths"]', "5000000")
    page.fill('#simulation-form input[name="horizon"]', "730")
    page.click("#simulation-form button[type=submit]")
    wait_ready(page, "run")
    run_id = page.evaluate("decodeURIComponent(location.hash.split('/')[2])")
    page.wait_for_selector("#cancel-run", timeout=TIMEOUT_MS)
    follow(page, "running", seconds=120)
    page.click("#cancel-run")
    follow(page, "cancelled", seconds=120)
    assert site.api(f"/runs/{run_id}")["status"] == "cancelled"
    assert page.locator("#cancel-run").count() == 0
    site.check_clean(page)
    page.close()


def test_what_the_api_returns_is_shown_as_text_never_as_markup(
    site: Site, platform: Platform
) -> None:
    from serve_app.services.runs import start_run
    from storage.engine import make_engine, session_factory, transaction
    from storage.runs import RunRepository

    engine = make_engine(platform.database_url)
    sessions = session_factory(engine)
    hostile = "<img src=x onerror=window.pwned=1>"
    run_id, _ = start_run(sessions, "backtest", {"x": 1}, status="running", strategy=hostile)
    with transaction(sessions) as session:
        RunRepository(session).update(
            run_id, status="failed", error="<script>window.pwned=2</script> boom"
        )
    engine.dispose()
    for route in ("runs?status=failed", f"run/{run_id}"):
        page = site.open(route)
        assert page.evaluate("document.querySelectorAll('main img, main script').length") == 0
        assert page.evaluate("window.pwned === undefined")
        text = page.inner_text("main")
        assert hostile in text and "<script>window.pwned=2</script> boom" in text
        site.check_clean(page)
        page.close()
