"""Screenshots of the research dashboard (``/ui``) on a real platform, for a person to look at.

    python -m benchmarks.dashboard_screenshots [--out docs/images]

Starts ``squall up`` on free ports with a temporary SQLite database holding real daily BTC and
ETH candles and 4-hour BTC candles with their real exchange gaps (``../shared/data``,
imported with ``squall import``), and the offline synthetic market ingesting two more coins
(so the ingestion page has jobs). Through the Python client it records a few backtests, a
walk-forward and a simulation; then, in headless Chromium, it opens every page, launches a
simulation from the form and saves ``dashboard-<page>.png``. Prints how long each page took
to be ready. Takes two to three minutes; stops the platform with SIGINT at the end.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from squall.client import Client
from tests.conftest import shared_data_dir
from tests.serve_app.live_server import import_files, squall_up
from tests.serve_app.report_browser import browser

FILES = (
    "binance_spot_BTCUSDT_1d_2017-2026.csv",
    "binance_spot_ETHUSDT_1d_2017-2026.csv",
    "binance_spot_BTCUSDT_4h_2017-2026.csv",
)
SYNTHETIC = {
    "SQUALL_INGEST_ENABLED": "true",
    "SQUALL_DATA_SOURCE": "synthetic",
    "SQUALL_COINS": "SYN-SOL,SYN-ADA",
    "SQUALL_INTERVALS": "1h,1d",
    "SQUALL_BACKFILL_DAYS": "60",
    "SQUALL_FEATURES_ENABLED": "false",
    "SQUALL_MAX_CANDLES_PER_REQUEST": "5000",
}
VIEWPORT = {"width": 1280, "height": 900}


def record_runs(api: Client) -> list[str]:
    """Backtests to list and compare, a walk-forward and a simulation (through the client)."""
    ids = [
        api.backtest("BTC", "1d", "ema_cross", {"fast": f, "slow": s}, fee_bps=10).run_id
        for f, s in ((12, 26), (20, 60), (50, 200))
    ]
    api.backtest("ETH", "1d", "rsi_mr", {"n": 14}, fee_bps=10)
    api.walkforward(
        "BTC",
        "1d",
        "ema_cross",
        {"fast": [5, 10, 20], "slow": [50, 100]},
        train_bars=730,
        test_bars=180,
    )
    api.simulate(
        backtest={"coin": "BTC", "interval": "1d", "strategy": "ema_cross"},
        paths=200_000,
        horizon=365,
        seed=7,
    )
    return ids


def shoot(page: Any, path: Path, *, full: bool = True, height: int | None = None) -> str:
    if height is not None:
        page.screenshot(
            path=str(path), clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height}
        )
    else:
        page.screenshot(path=str(path), full_page=full)
    return f"{path.name} ({path.stat().st_size // 1024} KB)"


def wait_ready(page: Any, view: str) -> float:
    t0 = time.perf_counter()
    page.wait_for_selector(
        f'html[data-view="{view}"][data-ready="true"]', state="attached", timeout=120_000
    )
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="PNG folder")
    args = parser.parse_args(argv)
    data = shared_data_dir()
    if data is None:
        parser.error("the real-data folder ../shared/data is absent (or set SQUALL_SHARED_DATA)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="squall-dashboard-") as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'squall.db'}"
        import_files(url, [data / f for f in FILES])
        with squall_up(folder, url, extra_env=SYNTHETIC, ready_s=300) as platform:
            origin = platform.base_url
            with Client(origin, timeout=600) as api:
                ids = record_runs(api)
            with browser() as ctx:
                page = ctx.new_page()
                page.set_viewport_size(VIEWPORT)
                shots = [
                    ("data", "data"),
                    ("ingestion", "ingestion"),
                    ("runs", "runs"),
                    ("compare", f"compare?ids={ids[0]},{ids[1]},{ids[2]}"),
                    ("launch", "launch"),
                ]
                for name, route in shots:
                    page.goto(f"{origin}/ui#/{route}")
                    took = wait_ready(page, name)
                    time.sleep(0.5)  # the charts' last frame
                    print(
                        f"{name}: ready in {took:.2f} s; "
                        + shoot(page, args.out / f"dashboard-{name}.png")
                    )
                page.select_option("#sim-coin", "BTC")
                page.select_option("#sim-interval", "1d")
                page.fill('#simulation-form input[name="paths"]', "3000000")
                page.fill('#simulation-form input[name="horizon"]', "730")
                page.click("#simulation-form button[type=submit]")
                wait_ready(page, "run")
                page.wait_for_function(  # caught while it runs, with some paths done
                    "() => { const p = document.querySelector('#run-progress .progress');"
                    " return p && +p.dataset.done > 0 || !document.querySelector('#cancel-run'); }",
                    timeout=120_000,
                    polling=50,
                )
                print(
                    "progress: " + shoot(page, args.out / "dashboard-run-progress.png", full=False)
                )
                frame = page.wait_for_selector("#run-report", timeout=300_000)
                page.frame_locator("#run-report").locator("html[data-rendered]").wait_for(
                    state="attached", timeout=120_000
                )
                frame.scroll_into_view_if_needed()
                page.evaluate("window.scrollTo(0, 0)")
                time.sleep(0.5)
                print("run: " + shoot(page, args.out / "dashboard-run-report.png", height=1500))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
