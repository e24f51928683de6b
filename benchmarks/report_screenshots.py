"""Render every report on real runs and write PNG screenshots of it, for a person to look at.

    python -m benchmarks.report_screenshots [--out docs/images] [--html var/reports]

Builds the inputs the tests use (``tests/serve_app/report_inputs.py``: a 5-year hourly SOL
backtest, a daily BTC walk-forward, a 1M-path simulation and a three-coin risk report, on
the real candles of ``../shared/data`` in a temporary SQLite database), renders the four
pages, opens each in headless Chromium (Debian's ``chromium``) and saves one PNG per
section that holds a chart, ``report-<kind>-<section>.png``. Prints each page's size and
the time its charts took to draw. Takes about a minute.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from serve_app import reports
from tests.conftest import shared_data_dir
from tests.serve_app.report_browser import browser, open_report, serve
from tests.serve_app.report_inputs import build_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="PNG folder")
    parser.add_argument("--html", type=Path, default=None, help="also keep the HTML pages here")
    args = parser.parse_args(argv)
    data = shared_data_dir()
    if data is None:
        parser.error("the real-data folder ../shared/data is absent (or set SQUALL_SHARED_DATA)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="squall-reports-") as tmp:
        folder = Path(tmp)
        built = build_all(folder, data)
        pages = {
            "backtest": reports.render_backtest(built.backtest, built.prices),
            "walkforward": reports.render_walkforward(built.walkforward),
            "simulation": reports.render_simulation(built.simulation),
            "risk": reports.render_risk(built.risk, built.correlation),
        }
        site = folder / "site"
        site.mkdir()
        for name, html in pages.items():
            (site / f"{name}.html").write_text(html, encoding="utf-8")
            if args.html is not None:
                args.html.mkdir(parents=True, exist_ok=True)
                (args.html / f"{name}.html").write_text(html, encoding="utf-8")
        with serve(site) as origin, browser() as ctx:
            for name, html in pages.items():
                page = open_report(ctx, f"{origin}/{name}.html")
                root = page.eval("document.documentElement.dataset")
                sections = page.page.locator("section:has([data-chart])")
                written = []
                for i in range(sections.count()):
                    section = sections.nth(i)
                    ident = section.get_attribute("id") or str(i)
                    path = args.out / f"report-{name}-{ident}.png"
                    section.screenshot(path=str(path))
                    written.append(f"{path.name} ({path.stat().st_size // 1024} KB)")
                size = len(html.encode()) / 1e6
                print(
                    f"{name}: {size:.2f} MB, charts drawn {root['renderMs']} ms after the "
                    f"script started ({root['renderTotalMs']} ms after navigation); "
                    + ", ".join(written)
                )
                page.page.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
