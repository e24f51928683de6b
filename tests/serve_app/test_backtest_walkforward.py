"""POST /backtest/walkforward on both databases (folds in-process; the Ray path is tested in
test_backtest_sweep.py, which owns the module's Ray runtime).

Fold boundaries are checked against indices computed here from train/test/step/purge, and
against the seeded bar times; the stitched OOS equity against the product of the folds' own
OOS returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serve_app.api import create_app
from serve_app.settings import Settings
from tests.serve_app.factories import HOUR, T0, seed

N = 400
TRAIN, TEST, PURGE = 150, 60, 5


def walk(n: int = N) -> list[dict[str, Any]]:
    rng = np.random.default_rng(21)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0002, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    return [
        {"coin": "BTC", "interval": "1h", "ts": T0 + i * HOUR, "open": open_[i],
         "high": max(open_[i], close[i]) * 1.002, "low": min(open_[i], close[i]) * 0.998,
         "close": close[i], "volume_base": 1.0, "volume_quote": None, "trade_count": None,
         "source": "test"}
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    seed(database_url, walk())
    settings = Settings(database_url=database_url, coins=["BTC"], intervals=["1h"])
    with TestClient(create_app(settings, configure_logs=False)) as c:
        yield c


def wf(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "coin": "BTC",
        "interval": "1h",
        "strategy": "ema_cross",
        "grid": {"fast": [3, 6], "slow": [12, 24]},
        "train_bars": TRAIN,
        "test_bars": TEST,
        "purge_bars": PURGE,
        "fee_bps": 5,
        "min_regime_bars": 20,
    }
    out.update(overrides)
    return out


def expected_folds(step: int, anchored: bool) -> list[tuple[int, int, int, int]]:
    out, k = [], 0
    while k * step + TRAIN + PURGE + TEST <= N:
        train_end = k * step + TRAIN
        out.append(
            (0 if anchored else k * step, train_end, train_end + PURGE, train_end + PURGE + TEST)
        )
        k += 1
    return out


@pytest.mark.parametrize(("step", "anchored"), [(None, False), (40, True)])
def test_folds_never_overlap_and_respect_the_purge(
    client: TestClient, step: int | None, anchored: bool
) -> None:
    r = client.post("/backtest/walkforward", json=wf(step_bars=step, anchored=anchored))
    assert r.status_code == 200, r.text
    out = r.json()
    folds = out["folds"]
    want = expected_folds(step or TEST, anchored)
    assert [(f["train"]["start_bar"], f["train"]["end_bar"] + 1, f["test"]["start_bar"],
             f["test"]["end_bar"] + 1) for f in folds] == want  # fmt: skip
    for f in folds:
        train, test = f["train"], f["test"]
        assert train["end_ts_unix"] < test["start_ts_unix"]  # train strictly before test
        gap_bars = (test["start_ts_unix"] - train["end_ts_unix"]) // HOUR - 1
        assert gap_bars == PURGE == f["purge_bars"]
        assert train["start_ts_unix"] == T0 + train["start_bar"] * HOUR
        assert test["end_ts_unix"] == T0 + test["end_bar"] * HOUR <= T0 + (N - 1) * HOUR
        assert test["bars"] == TEST and train["bars"] == train["end_bar"] - train["start_bar"] + 1
        assert f["chosen_params"]["fast"] in (3, 6) and f["chosen_params"]["slow"] in (12, 24)
        assert len(f["is_scores"]) == 4
        # the chosen set is the train argmax of the objective
        scores = [s if s is not None else -np.inf for s in f["is_scores"]]
        assert f["is_metrics"]["sharpe"] == pytest.approx(max(scores))
        for row in f["regimes"]:
            assert row["insufficient"] == (row["bars"] < 20 or row["trades"] < 5)
    if anchored:
        assert {f["train"]["start_bar"] for f in folds} == {0}
    # stitched OOS: the folds' OOS total returns compound to the stitched total (no overlap
    # when step == test; with step < test later folds skip the bars already covered)
    oos = out["oos"]
    if step is None:
        growth = np.prod([1 + f["oos_metrics"]["total_return"] for f in folds])
        assert oos["metrics"]["total_return"] == pytest.approx(growth - 1, rel=1e-10)
        assert oos["bars"] == len(folds) * (TEST - 1)
    decay = out["decay"]
    assert len(decay["oos_is_ratio"]) == len(folds) and isinstance(decay["fading"], bool)
    assert out["execution"]["ray"] is False and out["grid_size"] == 4
    run = client.get(f"/backtest/runs/{out['run_id']}").json()
    assert run["kind"] == "walkforward" and run["status"] == "succeeded"
    assert run["metrics"]["folds"] == len(folds)
    assert len(run["results"]["folds"]) == len(folds)


@pytest.mark.parametrize(
    ("change", "code", "needle"),
    [
        ({"grid": {}}, "empty_grid", "grid is empty"),
        ({"grid": {"fast": [], "slow": [10]}}, "empty_grid", "fast"),
        (
            {"grid": {"fast": list(range(1, 41)), "slow": list(range(50, 76))}},
            "grid_too_large",
            "1000",
        ),
        ({"grid": {"fast": [3], "slowest": [10]}}, "invalid_parameter", "slowest"),
        ({"strategy": "moon"}, "unknown_strategy", "valid strategies"),
        ({"train_bars": 350, "test_bars": 60}, "folds_exceed_data", "400"),
        ({"test_bars": 1}, "invalid_request", "test_bars"),
        ({"fee_bps": -2}, "invalid_request", "fee_bps"),
        ({"objective": "luck"}, "invalid_request", "objective"),
        ({"fixed_params": {"fast": 3}}, "invalid_parameter", "both"),
    ],
)
def test_bad_walkforward_requests_are_422_with_what_to_fix(
    client: TestClient, change: dict[str, Any], code: str, needle: str
) -> None:
    r = client.post("/backtest/walkforward", json=wf(**change))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == code
    assert needle in r.json()["message"]
    assert client.get("/backtest/runs").json()["total"] == 0  # nothing ran, nothing recorded


def test_folds_exceed_data_reports_sizes(client: TestClient) -> None:
    r = client.post("/backtest/walkforward", json=wf(train_bars=380))
    err = r.json()
    assert err["available_bars"] == N and err["required_bars"] == 380 + PURGE + TEST
