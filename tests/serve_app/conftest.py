"""Fixtures of the serve_app tests: the report inputs, made once by the real code paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serve_app.report_inputs import Built, build_all


@pytest.fixture(scope="session")
def report_inputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A recorded 5-year hourly backtest, a walk-forward, a 1M-path simulation and a risk
    report with its correlation matrix, on real Binance candles (``report_inputs.py``)."""
    return build_all(tmp_path_factory.mktemp("report-inputs"), shared_data)
