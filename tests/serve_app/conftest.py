"""Fixtures of the serve_app tests: the report inputs, made once by the real code paths, and
a real platform (``squall up``) for the client and dashboard tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve_app.live_server import Platform, import_files, squall_up
from tests.serve_app.report_inputs import Built, build_all

PLATFORM_FILES = ("binance_spot_BTCUSDT_1d_2017-2026.csv", "binance_spot_ETHUSDT_1d_2017-2026.csv")


@pytest.fixture(scope="session")
def report_inputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A recorded 5-year hourly backtest, a walk-forward, a 1M-path simulation and a risk
    report with its correlation matrix, on real Binance candles (``report_inputs.py``)."""
    return build_all(tmp_path_factory.mktemp("report-inputs"), shared_data)


@pytest.fixture(scope="session")
def platform(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A real ``squall up`` (Ray Serve over HTTP) on free ports, ingestion off, on a SQLite
    database holding real daily BTC and ETH candles imported with ``squall import``; stopped
    with SIGINT at the end of the session, leaving no process and no port behind."""
    pytest.importorskip("ray")
    folder = tmp_path_factory.mktemp("platform")
    url = f"sqlite:///{folder / 'squall.db'}"
    import_files(url, [shared_data / name for name in PLATFORM_FILES])
    with squall_up(folder, url) as running:
        yield running
