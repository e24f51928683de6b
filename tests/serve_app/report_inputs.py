"""Report inputs made by the real code paths, on real candles (``../shared/data``).

Each builder stores real Binance candles in a SQLite database, runs the service exactly as
the API does (backtest, walk-forward, simulation, risk report and correlation) and returns
what the run registry or the HTTP answer holds: the plain dicts the report renderers take.
Used by ``tests/serve_app/test_reports*.py`` and ``benchmarks/report_screenshots.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from ingestion.fileimport import parse_candle_file
from serve_app.api import create_app
from serve_app.execution.runs import NO_RUN
from serve_app.services import backtest as backtests
from serve_app.services import simulation as simulations
from serve_app.services import walkforward
from serve_app.services.requests.backtest import BacktestRunRequest, WalkForwardRequest
from serve_app.services.requests.simulation import SimulateRequest
from serve_app.settings import Settings
from storage.candle_reads import read_candle_columns
from storage.candles import CandleRepository
from storage.engine import make_engine, session_factory, transaction
from storage.migrate import upgrade
from storage.runs import RunRepository

FILES = {
    ("BTC", "1d"): "binance_spot_BTCUSDT_1d_2017-2026.csv",
    ("ETH", "1d"): "binance_spot_ETHUSDT_1d_2017-2026.csv",
    ("SOL", "1d"): "binance_spot_SOLUSDT_1d_2020-2026.csv",
    ("BTC", "4h"): "binance_spot_BTCUSDT_4h_2017-2026.csv",
    ("SOL", "1h"): "binance_spot_SOLUSDT_1h_2020-2026.csv",
}
# the last bar of every file is still open (SOURCES.md): stop before it
END = "2026-01-05T23:00:00Z"


class Inputs:
    """One SQLite database with the real candles, and the report inputs built on it."""

    def __init__(self, folder: Path, data: Path) -> None:
        self.url = f"sqlite:///{folder / 'reports.db'}"
        upgrade(self.url)
        self.engine = make_engine(self.url)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self.settings = Settings(
            database_url=self.url,
            coins=sorted({c for c, _ in FILES}),
            intervals=sorted({i for _, i in FILES}),
            log_level="WARNING",
            ingest_enabled=False,
        )
        for (coin, interval), name in FILES.items():
            frame = parse_candle_file(data / name, coin=coin, interval=interval).frame
            with transaction(self.sessions) as session:
                CandleRepository(session).upsert(frame)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------------- records
    def record(self, run_id: str) -> dict[str, Any]:
        """The registry row of ``run_id`` as a plain dict (what the renderers take)."""
        with self.sessions() as session:
            rec = RunRepository(session).get(run_id)
        assert rec is not None
        return dataclasses.asdict(rec)

    def prices(self, record: dict[str, Any]) -> dict[str, Any]:
        """The closes of a run's window, read from the candle store."""
        data = record["results"]["used"]["data"]
        with self.sessions() as session:
            c = read_candle_columns(
                session,
                record["coin"],
                record["interval"],
                start=data["first_ts_unix"],
                end=data["last_ts_unix"],
                limit=data["candles"],
            )
        return {"ts": c.ts.tolist(), "close": c.close.tolist()}

    def backtest(self, **overrides: Any) -> dict[str, Any]:
        """A recorded backtest (default: EMA cross on 5 years of hourly SOL, ~44k bars)."""
        body: dict[str, Any] = {
            "coin": "SOL",
            "interval": "1h",
            "start": "2021-01-01T00:00:00Z",
            "end": "2025-12-31T23:00:00Z",
            "strategy": "ema_cross",
            "params": {"fast": 24, "slow": 96},
            "fee_bps": 10,
            "slippage_bps": 2,
        }
        body.update(overrides)
        rec = backtests.run_backtest(
            self.sessions, self.settings, BacktestRunRequest.model_validate(body)
        )
        return self.record(rec.run_id)

    def walkforward(self, **overrides: Any) -> dict[str, Any]:
        """A recorded walk-forward (default: EMA cross grid on daily BTC, 365/90-bar folds)."""
        body: dict[str, Any] = {
            "coin": "BTC",
            "interval": "1d",
            "end": END,
            "strategy": "ema_cross",
            "grid": {"fast": [5, 10, 20], "slow": [50, 100]},
            "train_bars": 365,
            "test_bars": 180,
            "fee_bps": 10,
        }
        body.update(overrides)
        out = walkforward.run_walkforward(
            self.sessions, self.settings, WalkForwardRequest.model_validate(body)
        )
        return self.record(out["run_id"])

    def simulation(self, **overrides: Any) -> dict[str, Any]:
        """The body of ``POST /risk/simulate`` (default: 1,000,000 paths bootstrapped from
        real daily BTC returns, 2x leverage with a maintenance margin)."""
        with self.sessions() as session:
            c = read_candle_columns(
                session, "BTC", "1d", end=1_767_571_200, limit=2001, latest=True
            )
        close = np.asarray(c.close, np.float64)
        body: dict[str, Any] = {
            "returns": (close[1:] / close[:-1] - 1.0).tolist(),
            "periods_per_year": 365,
            "horizon": 365,
            "paths": 1_000_000,
            "seed": 7,
            "shocks": {"leverage": 2, "maintenance_margin": 0.1},
        }
        body.update(overrides)
        req = SimulateRequest.model_validate(body)
        prep = simulations.prepare(self.sessions, self.settings, req)
        run_id = simulations.start(self.sessions, req, prep, status="running")
        return simulations.execute(self.sessions, run_id, req, prep, NO_RUN)

    def risk(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``POST /risk/report`` on three coins with weights and ``GET /risk/correlation``."""
        app = create_app(self.settings, configure_logs=False)
        with TestClient(app) as client:
            r = client.post(
                "/risk/report",
                json={
                    "coins": ["BTC", "ETH", "SOL"],
                    "interval": "1d",
                    "window": 730,
                    "end": END,
                    "levels": [0.95, 0.99],
                    "weights": {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2},
                },
            )
            assert r.status_code == 200, r.text
            c = client.get(
                "/risk/correlation",
                params={"coins": "BTC,ETH,SOL", "interval": "1d", "window": 730, "end": END},
            )
            assert c.status_code == 200, c.text
        return r.json(), c.json()


@dataclass
class Built:
    """Every report input, built once per test session."""

    backtest: dict[str, Any]
    prices: dict[str, Any]
    walkforward: dict[str, Any]
    simulation: dict[str, Any]
    risk: dict[str, Any]
    correlation: dict[str, Any]


def build_all(folder: Path, data: Path) -> Built:
    inputs = Inputs(folder, data)
    try:
        bt = inputs.backtest()
        risk, corr = inputs.risk()
        return Built(
            backtest=bt,
            prices=inputs.prices(bt),
            walkforward=inputs.walkforward(),
            simulation=inputs.simulation(),
            risk=risk,
            correlation=corr,
        )
    finally:
        inputs.close()
