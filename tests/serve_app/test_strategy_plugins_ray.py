"""Python strategy plugins in temporary packages, discovered by the module-path setting and by
an entry point, run through the API on the warm Ray workers of a real local Ray runtime.

The packages are written after Ray started, on a ``sys.path`` entry of this process only: a
worker cannot import them on its own (checked), so a run there works only because the plugin
travels as a reference (module path, path entry, source hash) and is re-imported there.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from compute.backtest.engine import BacktestConfig, run_backtest
from serve_app.api import create_app
from serve_app.execution import workers
from serve_app.services import strategy as strategy_service
from serve_app.settings import Settings
from storage.intervals import periods_per_year
from storage.migrate import upgrade
from tests.serve_app.factories import HOUR, candle, seed

pytestmark = pytest.mark.ray
N = 3_000
SOURCE = textwrap.dedent(
    '''
    """A third-party strategy package (written by the test)."""
    import numpy as np

    from compute.backtest.plugins import strategy
    from compute.indicators.registry import Param


    @strategy(name="{name}", version="1.3", warmup=lambda v: int(v["n"]),
              params=(Param("n", int, 10, 1, 500, "momentum lookback"),))
    def momentum(frame, params):
        """Half long after n bars of gains, half short after n bars of losses."""
        c, n = frame["close"], params["n"]
        past = np.concatenate([np.full(n, np.nan), c[:-n]])
        return np.where(np.isnan(past), 0.0, np.sign(c - past) * 0.5)


    PLUGINS = [momentum]
    '''
)


def _rows() -> list[dict[str, Any]]:
    rng = np.random.default_rng(11)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, N)))
    t0 = 1_600_000_000 // HOUR * HOUR
    out = []
    for i, c in enumerate(close):
        o = close[i - 1] if i else c
        out.append(candle("BTC", "1h", t0 + i * HOUR, i, open=o, close=c,
                          high=max(o, c) * 1.002, low=min(o, c) * 0.998))  # fmt: skip
    return out


ROWS = _rows()
COL = {
    k: np.array([r[k] for r in ROWS], dtype=np.float64) for k in ("open", "high", "low", "close")
}
TS = np.array([r["ts"] for r in ROWS], dtype=np.int64)


def hand_positions(n: int) -> np.ndarray:
    c = COL["close"]
    out = np.zeros(c.size)
    for t in range(n, c.size):
        out[t] = 0.5 * np.sign(c[t] - c[t - n])
    return out


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    workers.reset_pool()
    yield ray
    workers.stop_workers()
    ray.shutdown()


@pytest.fixture(scope="module")
def packages(ray_runtime: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two plugin packages on a path entry of this process only (written after Ray started):
    ``wire_ray_strats`` (module path) and ``wire_ray_ep`` (declared by an entry point)."""
    root = tmp_path_factory.mktemp("ray-plugins")
    for package, name in (("wire_ray_strats", "ray_momentum"), ("wire_ray_ep", "ep_momentum")):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text(SOURCE.replace("{name}", name))
    info = root / "wire_ray_ep-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wire-ray-ep\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[squall.strategies]\nmomentum = wire_ray_ep:PLUGINS\n")
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    strategy_service.clear_catalogue()
    yield root
    sys.path.remove(str(root))
    for mod in [m for m in sys.modules if m.startswith("wire_ray_")]:
        del sys.modules[mod]
    importlib.invalidate_caches()
    strategy_service.clear_catalogue()


@pytest.fixture(scope="module")
def client(packages: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('ray-plugins-db') / 'squall.db'}"
    upgrade(url)
    seed(url, ROWS)
    settings = Settings(
        database_url=url, coins=["BTC"], intervals=["1h"], ingest_enabled=False,
        compute_workers_per_node=2, run_heartbeat_s=0.5, log_level="WARNING",
        strategy_modules=["wire_ray_strats:PLUGINS"],
    )  # fmt: skip
    with TestClient(create_app(settings, configure_logs=False)) as c:
        yield c


def _finished(client: TestClient, run_id: str, limit_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        run = client.get(f"/runs/{run_id}").json()
        if run["status"] not in ("queued", "running"):
            return run  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, run
        time.sleep(0.2)


def test_workers_cannot_import_the_packages_on_their_own(ray_runtime: Any, packages: Path) -> None:
    @ray_runtime.remote
    def importable(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    assert ray_runtime.get(importable.remote("wire_ray_strats")) is False
    assert importlib.util.find_spec("wire_ray_strats") is not None  # here it is


@pytest.mark.parametrize(("name", "package"), [("ray_momentum", "wire_ray_strats"),
                                                ("ep_momentum", "wire_ray_ep")])  # fmt: skip
def test_a_plugin_runs_on_a_warm_worker_through_the_api(
    client: TestClient, packages: Path, name: str, package: str
) -> None:
    listed = {s["name"]: s for s in client.get("/strategies").json()["strategies"]}
    origin = "module" if package == "wire_ray_strats" else "entry_point"
    assert listed[name]["provenance"]["origin"] == origin
    body = {"coin": "BTC", "interval": "1h", "strategy": {"name": name, "params": {"n": 7}},
            "mode": "async", "fee_bps": 10, "funding": False}  # fmt: skip
    queued = client.post("/backtest/run", json=body)
    assert queued.status_code == 202, queued.text
    run = _finished(client, queued.json()["run_id"])
    assert run["status"] == "succeeded", run["error"]
    assert int(run["worker"].rsplit("pid", 1)[1]) != os.getpid()  # it ran on a worker
    used = run["results"]["used"]
    source = (packages / package / "__init__.py").read_bytes()
    assert used["provenance"]["source_hash"] == hashlib.sha256(source).hexdigest()
    assert used["checks"]["passed"] is True
    config = BacktestConfig(fee_bps=10, periods_per_year=periods_per_year("1h"))
    want = run_backtest(TS, COL["open"], COL["high"], COL["low"], COL["close"],
                        hand_positions(7), config)  # fmt: skip
    for key in ("total_return", "sharpe", "max_drawdown", "trades"):
        assert run["metrics"][key] == pytest.approx(want.metrics[key], rel=1e-12), key


def test_walkforward_folds_of_a_plugin_fan_out_to_the_workers(
    client: TestClient, packages: Path
) -> None:
    from serve_app.services.backtest import engine_config
    from serve_app.services.inputs import SeriesData
    from serve_app.services.requests.backtest import CostsAndSizing, FoldSpec
    from serve_app.services.strategy import resolve
    from serve_app.services.walkforward import walkforward_series

    settings = Settings(strategy_modules=["wire_ray_strats:PLUGINS"])
    resolved, _ = resolve(settings, "ray_momentum")
    data = SeriesData("BTC", "1h", TS, COL["open"], COL["high"], COL["low"], COL["close"],
                      np.ones(N), None, 0, "x", 0)  # fmt: skip
    grid = [resolved.validate({"n": n}) for n in (3, 7, 20)]
    spec = FoldSpec(train_bars=800, test_bars=400)
    config = engine_config(CostsAndSizing(fee_bps=10), "1h")
    remote = walkforward_series(data, resolved, grid, spec, config, use_ray=True)
    local = walkforward_series(data, resolved, grid, spec, config, use_ray=False)
    assert remote["execution"]["ray"] is True
    assert os.getpid() not in remote["execution"]["workers"]
    assert [f["chosen_params"] for f in remote["folds"]] == [
        f["chosen_params"] for f in local["folds"]
    ]
    np.testing.assert_array_equal(remote["oos"]["equity"], local["oos"]["equity"])
