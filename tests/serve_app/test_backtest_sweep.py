"""Sweeps: spec validation and caps (no Ray), and a sweep submitted as a real Ray job.

The Ray test starts one local Ray runtime with its dashboard (which hosts the job server) for
the module, submits through ``squall sweep submit`` (Ray's JobSubmissionClient), waits for
the job, and checks the registry: status, progress, every row, the ranking, and buy-and-hold's
total return against close[-1] / open[1] - 1 computed here.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve_app.cli import main
from serve_app.services.sweep import MAX_SWEEP_GRID, expand, parse_spec
from serve_app.settings import Settings
from storage.engine import make_engine, session_factory
from storage.errors import ConfigurationError
from storage.runs import RunFilter, RunRepository
from tests.serve_app.factories import HOUR, T0, seed

N = 300

SPEC = """\
name: test-sweep
coins: [BTC]
intervals: [1h]
strategies:
  ema_cross: {fast: [3, 5], slow: [10, 20]}
  buy_and_hold: {}
costs: {fee_bps: 0, funding: false}
objective: sharpe
top: 3
"""


def walk(n: int = N) -> list[dict[str, Any]]:
    rng = np.random.default_rng(9)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    return [
        {"coin": "BTC", "interval": "1h", "ts": T0 + i * HOUR, "open": open_[i],
         "high": max(open_[i], close[i]) * 1.001, "low": min(open_[i], close[i]) * 0.999,
         "close": close[i], "volume_base": 1.0, "volume_quote": None, "trade_count": None,
         "source": "test"}
        for i in range(n)
    ]  # fmt: skip


BARS = walk()


# ------------------------------------------------------------------------- spec and caps
def test_spec_expands_to_units_with_validated_params() -> None:
    units = expand(parse_spec(SPEC))
    assert [(u.strategy, len(u.combos)) for u in units] == [("ema_cross", 4), ("buy_and_hold", 1)]
    assert units[0].combos[0] == {"fast": 3, "slow": 10, "long_only": 0, "vol_gate": 0}
    assert [u.index for u in units] == [0, 1]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("strategies: {moon: {x: [1]}}", "unknown strategy"),
        ("strategies: {ema_cross: {fast: []}}", "no values"),
        ("strategies: {ema_cross: {fastest: [1]}}", "unknown parameter"),
        ("intervals: [7m]", "unknown intervals"),
        ("colour: red", "colour"),
        ("costs: {fee_bps: -1}", "fee_bps"),
        (
            "strategies: {ema_cross: {fast: [%s], slow: [%s]}}"  # noqa: UP031
            % (",".join(map(str, range(1, 102))), ",".join(map(str, range(200, 301)))),
            f"over the cap of {MAX_SWEEP_GRID}",
        ),
    ],
)
def test_bad_specs_say_what_to_fix(change: str, needle: str) -> None:
    key = change.split(":", 1)[0]
    lines = [line for line in SPEC.splitlines() if not line.startswith(key + ":")]
    lines = [line for line in lines if not (key == "strategies" and line.startswith("  "))]
    with pytest.raises(ConfigurationError, match=needle):
        expand(parse_spec("\n".join([*lines, change])))


def test_submit_refuses_a_series_without_enough_candles(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(database_url, BARS[:15])  # ema_cross slow=20 needs 21
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    settings = Settings(database_url=database_url, ray_jobs_address="http://127.0.0.1:9")
    assert main(["sweep", "submit", str(spec)], settings=settings) == 1
    err = capsys.readouterr().err
    assert "BTC 1h" in err and "needs 21" in err and "holds 15" in err
    engine = make_engine(database_url)
    with session_factory(engine)() as s:
        assert RunRepository(s).count() == 0  # nothing recorded, nothing submitted
    engine.dispose()


# ----------------------------------------------------------------------------- a real job
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Ray runtime with its dashboard (the job server); yields the job address."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ctx = ray.init(
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=_free_port(),
        log_to_driver=False,
    )
    yield f"http://{ctx.dashboard_url}"
    ray.shutdown()


@pytest.mark.ray
def test_sweep_runs_as_a_ray_job_and_lands_in_the_registry(
    ray_jobs: str, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(database_url, BARS)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    settings = Settings(database_url=database_url, ray_jobs_address=ray_jobs, log_level="WARNING")
    assert main(["sweep", "submit", str(spec), "--json"], settings=settings) == 0
    submitted = capsys.readouterr().out
    job_id = submitted.split('"job_id": "')[1].split('"')[0]

    engine = make_engine(database_url)
    sessions = session_factory(engine)
    deadline = time.monotonic() + 120
    while True:
        with sessions() as s:
            run = RunRepository(s).find_by_job(job_id)
        assert run is not None
        if run.status in ("succeeded", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if run.status != "succeeded":
        main(["sweep", "logs", job_id], settings=settings)
        pytest.fail(f"sweep ended {run.status}: {run.error}\n{capsys.readouterr().out[-3000:]}")

    assert run.kind == "sweep" and run.request["name"] == "test-sweep"
    assert run.progress is not None
    assert (run.progress["done"], run.progress["total"]) == (5, 5)
    table = run.results["table"]
    assert len(table) == 5
    assert {(r["strategy"], r["params"].get("fast"), r["params"].get("slow")) for r in table} == {
        ("ema_cross", 3, 10), ("ema_cross", 3, 20), ("ema_cross", 5, 10), ("ema_cross", 5, 20),
        ("buy_and_hold", None, None),
    }  # fmt: skip
    sharpes = [r["sharpe"] for r in table if r["sharpe"] is not None]
    assert sharpes == sorted(sharpes, reverse=True)
    hold = next(r for r in table if r["strategy"] == "buy_and_hold")
    closes = np.array([b["close"] for b in BARS])
    assert hold["total_return"] == pytest.approx(closes[-1] / BARS[1]["open"] - 1.0, rel=1e-12)
    assert run.summary is not None and len(run.summary["best"]) == 3
    assert run.results["execution"]["ray"] is True
    assert run.data_fingerprint
    with sessions() as s:
        assert [r.id for r in RunRepository(s).list(RunFilter(kind="sweep"))] == [run.id]
    engine.dispose()

    assert main(["sweep", "status", job_id], settings=settings) == 0
    assert "5/5 parameter sets" in capsys.readouterr().out
    assert main(["sweep", "results", job_id, "--top", "2"], settings=settings) == 0
    printed = capsys.readouterr().out
    assert (
        "ranked by sharpe" in printed
        and printed.count("ema_cross") + printed.count("buy_and_hold") == 2
    )
    assert main(["sweep", "logs", run.id], settings=settings) == 0
    assert "[2/2]" in capsys.readouterr().out


@pytest.mark.ray
def test_walkforward_folds_on_warm_workers_give_the_same_numbers(
    ray_jobs: str, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from serve_app.api import create_app
    from serve_app.services.walkforward import walkforward_series

    url = f"sqlite:///{tmp_path / 'wf.db'}"
    from storage.migrate import upgrade

    upgrade(url)
    seed(url, BARS)
    request = {
        "coin": "BTC", "interval": "1h", "strategy": "ema_cross",
        "grid": {"fast": [3, 5], "slow": [10, 20]}, "train_bars": 100, "test_bars": 40,
        "purge_bars": 3,
    }  # fmt: skip
    settings = Settings(database_url=url, coins=["BTC"], intervals=["1h"])
    with TestClient(create_app(settings, configure_logs=False)) as client:
        r = client.post("/backtest/walkforward", json=request)
    assert r.status_code == 200, r.text
    out = r.json()
    # a small walk-forward runs in the replica: a fan-out would cost more than the folds
    how = out["execution"]
    assert how["ray"] is False and how["tasks"] == 1 and how["folds"] == len(out["folds"]) == 4

    # the same folds on the warm workers and in-process give bit-identical numbers
    from compute.backtest.strategies import validate_strategy
    from serve_app.services.backtest import engine_config
    from serve_app.services.inputs import Window, load_series
    from serve_app.services.requests.backtest import WalkForwardRequest
    from serve_app.services.sweep import grid_combos

    req = WalkForwardRequest.model_validate(request)
    engine = make_engine(url)
    with session_factory(engine)() as s:
        data = load_series(s, Window("BTC", "1h", None, None), with_funding=True)
    engine.dispose()
    grid = [validate_strategy("ema_cross", g) for g in grid_combos(req.grid)]
    config = engine_config(req, "1h")
    local = walkforward_series(data, "ema_cross", grid, req, config, use_ray=False)
    spread = walkforward_series(data, "ema_cross", grid, req, config, use_ray=True)
    assert spread["execution"]["ray"] is True and spread["execution"]["tasks"] >= 2
    for a in (local, spread):
        assert [f["oos_metrics"] for f in a["folds"]] == [f["oos_metrics"] for f in out["folds"]]
        assert [f["chosen_params"] for f in a["folds"]] == [
            f["chosen_params"] for f in out["folds"]
        ]


def test_long_flat_ema_grid_takes_the_one_kernel_path_with_the_same_numbers() -> None:
    from compute.backtest.engine import run_backtest
    from compute.backtest.strategies import positions
    from serve_app.services.backtest import engine_config
    from serve_app.services.inputs import SeriesData
    from serve_app.services.requests.backtest import CostsAndSizing
    from serve_app.services.sweep import Unit
    from serve_app.services.sweep_job import _fast_path, _grid_rows

    n = 12_000  # the one-kernel path is taken from 10,000 bars on
    rng = np.random.default_rng(4)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    col = {"open": np.r_[100.0, close[:-1]], "close": close}
    col["high"] = np.maximum(col["open"], close) * 1.001
    col["low"] = np.minimum(col["open"], close) * 0.999
    ts = T0 + np.arange(n, dtype=np.int64) * HOUR
    data = SeriesData("BTC", "1h", ts, col["open"], col["high"], col["low"], col["close"],
                      np.ones(n), None, 0, "x", 0)  # fmt: skip
    combos = tuple(
        {"fast": f, "slow": s, "long_only": 1, "vol_gate": 0} for f in (3, 5) for s in (10, 20)
    )
    unit = Unit(0, "BTC", "1h", "ema_cross", combos)
    config = engine_config(CostsAndSizing(fee_bps=7, slippage_bps=3), "1h")
    assert _fast_path(data, unit, config)
    rows = _grid_rows(data, unit, config)
    for row, params in zip(rows, combos, strict=True):
        pos = positions("ema_cross", params, col["open"], col["high"], col["low"], col["close"])
        ref = run_backtest(ts, col["open"], col["high"], col["low"], col["close"], pos, config)
        for key in ("total_return", "sharpe", "max_drawdown", "trades"):
            assert row[key] == pytest.approx(ref.metrics[key], rel=1e-8, abs=1e-12), key
