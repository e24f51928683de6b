"""``POST /backtest/portfolio`` on the real BTC / ETH / SOL daily files against the slow NumPy
ledger ``compute/backtest/portfolio_reference.py`` (its own alignment, calendar, ranks and
post-cost equity), to 1e-12; then the registry, rerun, compare, ``/risk/simulate`` and the
portfolio walk-forward on the same runs.

The reference gets its inputs from the files and from code written here (EMA crossings from
the NumPy reference EMA, funding per bar from the seeded settlements), never from the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from compute.backtest import portfolio_reference as ref
from compute.indicators.reference import ema
from ingestion.fileimport import parse_candle_file
from serve_app.api import create_app
from serve_app.settings import Settings
from storage.candles import CandleRepository
from storage.derivatives import FundingRepository
from storage.engine import make_engine, session_factory, transaction
from storage.migrate import upgrade

pytestmark = pytest.mark.realdata
COINS = {"BTC": "BTCUSDT", "ETH": "ETHUSDT", "SOL": "SOLUSDT"}
DAY = 86_400
FEES = {"BTC": 10.0, "ETH": 10.0, "SOL": 20.0}
EVERY = {"equity_points": 100_000}


@pytest.fixture(scope="module")
def files(shared_data: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for coin, pair in COINS.items():
        path = next(shared_data.glob(f"binance_spot_{pair}_1d_*.csv"))
        out[coin] = parse_candle_file(path, coin=coin, interval="1d").frame
    return out


def settlements(frame: pd.DataFrame, rate: float) -> pd.DataFrame:
    """Funding every 8 h over the last 60 days of a coin's file."""
    last = int(frame["ts"].iloc[-1])
    ts = last - 60 * DAY + 8 * 3_600 * np.arange(180)
    return pd.DataFrame({"ts": ts, "funding_rate": rate, "mark_price": 1.0, "source": "t"})


@pytest.fixture(scope="module")
def client(
    files: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('portfolio') / 'squall.db'}"
    upgrade(url)
    engine = make_engine(url)
    with transaction(session_factory(engine)) as session:
        for frame in files.values():
            CandleRepository(session).upsert(frame)
        for coin, rate in (("BTC", 1e-4), ("ETH", -2e-4)):
            FundingRepository(session).upsert(settlements(files[coin], rate).assign(coin=coin))
    engine.dispose()
    settings = Settings(
        database_url=url, coins=list(COINS), intervals=["1d"], ingest_enabled=False,
        log_level="WARNING",
    )  # fmt: skip
    with TestClient(create_app(settings, configure_logs=False)) as c:
        yield c


def candles(files: dict[str, pd.DataFrame]) -> dict[str, dict[str, list[Any]]]:
    return {
        c: {k: f[k].tolist() for k in ("ts", "open", "high", "low", "close")}
        for c, f in files.items()
    }


def post(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/backtest/portfolio", json={"coins": list(COINS), "interval": "1d", **body})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def close_to(a: list[float], b: list[float], tol: float = 1e-12) -> None:
    x, y = np.asarray(a, float), np.asarray(b, float)
    assert x.shape == y.shape
    assert np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300)) <= tol


# ------------------------------------------------------------------------- vs the ledger
def test_a_momentum_portfolio_equals_the_numpy_ledger(
    client: TestClient, files: dict[str, pd.DataFrame]
) -> None:
    body = {"strategy": {"momentum": {"lookback": 30, "top_k": 2}},
            "rebalance": {"kind": "monthly"}, "fee_bps": FEES, "slippage_bps": 2,
            "funding": False, **EVERY}  # fmt: skip
    out = post(client, body)
    c = candles(files)
    want = ref.run_portfolio_reference(
        c, ref.momentum_targets(c, 30, 2), schedule="monthly", fee_bps=FEES, slippage_bps=2.0
    )
    assert out["equity"]["ts_unix"] == want["ts"]  # the union: SOL lists in 2020-08
    assert out["used"]["bars"] == len(want["ts"]) > 3000
    close_to(out["equity"]["equity"], want["equity"])
    for asset in out["assets"]:
        assert asset["contribution"] == pytest.approx(
            sum(want["contributions"][asset["coin"]]), rel=1e-10, abs=1e-12
        )
    # the legs' contributions sum to the portfolio's return bar by bar
    eq = np.asarray(want["equity"])
    assert sum(a["contribution"] for a in out["assets"]) == pytest.approx(
        float(np.sum(eq[1:] / eq[:-1] - 1.0)), rel=1e-10
    )
    assert out["metrics"]["total_return"] == pytest.approx(eq[-1] - 1.0, rel=1e-12)
    assert out["turnover"]["rebalances"] == out["metrics"]["rebalances"] > 90
    assert {s["kind"] for s in out["regime_stats"]} == {"vol", "trend"}
    assert out["exposure"]["gross_max"] <= 1.0 + 1e-12
    assert out["used"]["provenance"] is None and out["used"]["checks"] is None


def _per_bar_funding(files: dict[str, pd.DataFrame], rates: dict[str, float]) -> dict:
    """Funding per coin on the union timeline: a settlement at T is paid by the bar whose
    open < T <= open + 1 day (0 where the coin has no bar)."""
    union = ref.timeline(candles(files))
    out = {}
    for coin, frame in files.items():
        own = dict.fromkeys(frame["ts"].tolist(), 0.0)
        if coin in rates:
            for t in settlements(frame, rates[coin])["ts"].tolist():
                bar = next(b for b in own if b < t <= b + DAY) if t > min(own) else None
                if bar is not None:
                    own[bar] += rates[coin]
        out[coin] = [own.get(t, 0.0) for t in union]
    return out


def test_per_coin_specs_weekly_with_funding_equal_the_numpy_ledger(
    client: TestClient, files: dict[str, pd.DataFrame]
) -> None:
    spec = {"long_entry": "ema:12 > ema:26", "long_exit": "ema:12 <= ema:26"}
    body = {"strategy": {"per_coin": {c: {"spec": spec} for c in COINS}},
            "rebalance": {"kind": "weekly"}, "fee_bps": 10, "resize": False, "max_gross": 1.5,
            **EVERY}  # fmt: skip
    out = post(client, body)
    positions = {}
    for coin, frame in files.items():
        close = frame["close"].to_numpy()
        fast, slow = ema(close, 12), ema(close, 26)
        positions[coin] = np.where(~np.isnan(slow) & (fast > slow), 1.0, 0.0).tolist()
    c = candles(files)
    want = ref.run_portfolio_reference(
        c, ref.strategy_targets(c, positions), schedule="weekly",
        fee_bps=dict.fromkeys(COINS, 10.0), resize=False, max_gross=1.5,
        funding=_per_bar_funding(files, {"BTC": 1e-4, "ETH": -2e-4}),
    )  # fmt: skip
    close_to(out["equity"]["equity"], want["equity"])
    assert out["metrics"]["funding_paid"] != 0.0
    assert set(out["used"]["checks"]) == set(COINS)
    assert all(ch["passed"] for ch in out["used"]["checks"].values())
    assert out["used"]["provenance"]["ETH"]["origin"] == "spec"
    assert out["used"]["rule"]["per_coin"]["SOL"]["warmup_bars"] == 25


# --------------------------------------------------------------- registry, rerun, simulate
def test_portfolio_runs_in_the_registry_rerun_compare_and_simulate(client: TestClient) -> None:
    body = {"strategy": {"momentum": {"lookback": 30, "top_k": 2}},
            "rebalance": {"kind": "monthly"}, "fee_bps": 10, "funding": False}  # fmt: skip
    a = post(client, body)
    b = post(client, {**body, "strategy": {"momentum": {"lookback": 60, "top_k": 1}}})
    stored = client.get(f"/runs/{a['run_id']}").json()
    assert stored["kind"] == "portfolio" and stored["strategy"] == "momentum"
    assert client.get("/runs?kind=portfolio").json()["total"] >= 2
    again = client.post(f"/backtest/runs/{a['run_id']}/rerun")
    assert again.status_code == 200, again.text
    rr = again.json()
    assert rr["identical"] is True and rr["equity_identical"] and rr["same_data"]
    assert rr["run"]["kind"] == "portfolio" and rr["run"]["metrics"] == a["metrics"]
    cmp = client.get(f"/backtest/compare?ids={a['run_id']},{b['run_id']}").json()
    diffs = {d["field"]: d["values"] for d in cmp["param_diffs"]}
    assert diffs == {"strategy.momentum.lookback": [30, 60], "strategy.momentum.top_k": [2, 1]}
    sim = client.post("/risk/simulate", json={"run_id": a["run_id"], "horizon": 30, "paths": 2000})
    assert sim.status_code == 200, sim.text
    source = sim.json()["used"]["source"]
    assert source["run_kind"] == "portfolio" and source["returns"] == a["used"]["bars"] - 1


def test_portfolio_walkforward_chooses_the_momentum_rule_per_fold(
    client: TestClient, files: dict[str, pd.DataFrame]
) -> None:
    body = {"coins": list(COINS), "interval": "1d", "fee_bps": 10, "funding": False,
            "strategy": {"momentum": {"lookback": 30, "top_k": 1}},
            "grid": {"lookback": [20, 60], "top_k": [1, 2]}, "rebalance": {"kind": "weekly"},
            "train_bars": 730, "test_bars": 365}  # fmt: skip
    r = client.post("/backtest/portfolio/walkforward", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["grid_size"] == 4 and out["kind"] == "walkforward"
    assert len(out["folds"]) == len(out["decay"]["oos_is_ratio"]) >= 5
    c = candles(files)
    union = ref.timeline(c)
    for fold in out["folds"]:
        scores = [s for s in fold["is_scores"] if s is not None]
        assert fold["is_metrics"]["sharpe"] == max(scores)
        # the test window alone in the ledger: flat at its start, fresh capital, the chosen
        # rule's targets computed on every bar (its look-back reaches before the window)
        lo, hi = fold["test"]["start_bar"], fold["test"]["end_bar"] + 1
        keep = set(union[lo:hi])
        sliced = {
            coin: {k: [v for v, t in zip(col[k], col["ts"], strict=True) if t in keep]
                   for k in col}
            for coin, col in c.items()
        }  # fmt: skip
        rule = fold["chosen_params"]
        full = ref.momentum_targets(c, rule["lookback"], rule["top_k"])
        want = ref.run_portfolio_reference(
            sliced, {k: v[lo:hi] for k, v in full.items()}, schedule="weekly",
            fee_bps=dict.fromkeys(COINS, 10.0),
        )  # fmt: skip
        assert fold["oos_metrics"]["total_return"] == pytest.approx(
            want["equity"][-1] - 1.0, rel=1e-12, abs=1e-12
        )
    assert out["oos"]["bars"] == sum(f["test"]["bars"] - 1 for f in out["folds"])
    stored = client.get(f"/runs/{out['run_id']}").json()
    assert stored["kind"] == "walkforward" and stored["results"]["grid_size"] == 4
    bad = client.post(
        "/backtest/portfolio/walkforward",
        json={**body, "strategy": {"per_coin": dict.fromkeys(COINS, "ema_cross")}},
    )
    assert bad.status_code == 422 and "momentum" in bad.json()["message"]


def test_bad_portfolio_requests_say_what_to_fix(client: TestClient) -> None:
    base = {"coins": list(COINS), "interval": "1d",
            "strategy": {"momentum": {"lookback": 30, "top_k": 2}}}  # fmt: skip
    cases = [
        ({"coins": ["BTC", "NOPE"]}, 404, "unknown_coin"),
        ({"coins": ["BTC", "btc"]}, 422, "duplicate_coin"),
        ({"strategy": {"momentum": {"lookback": 30, "top_k": 4}}}, 422, "invalid_parameter"),
        ({"strategy": {"per_coin": {"BTC": "ema_cross"}}}, 422, "invalid_strategy"),
        ({"strategy": {"per_coin": {c: {"spec": {"long_entry": "ema:12 >"}} for c in COINS}}},
         422, "invalid_strategy"),
        ({"fee_bps": {"DOGE": 10}}, 422, "invalid_costs"),
        ({"start": "2026-01-01", "end": "2026-01-20"}, 422, "insufficient_data"),
    ]  # fmt: skip
    for change, status, code in cases:
        r = client.post("/backtest/portfolio", json={**base, **change})
        assert (r.status_code, r.json()["error"]) == (status, code), (change, r.text)
